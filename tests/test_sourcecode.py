"""Linters, type checks, buf lint and generated-code drift, run as tests."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_buf_lint() -> None:
    result = run(str(BIN / "buf"), "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    result = run(sys.executable, "protos/generate.py", str(tmp_path))
    assert result.returncode == 0, result.stderr
    committed = ROOT / "protos"
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc produced nothing"
    stale = [
        str(p) for p in generated if not filecmp.cmp(tmp_path / p, committed / p, shallow=False)
    ]
    suffixes = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    extra = [
        str(p.relative_to(committed))
        for p in committed.rglob("*")
        if p.name.endswith(suffixes) and p.relative_to(committed) not in generated
    ]
    assert not stale and not extra, f"run `python protos/generate.py`: stale {stale}, extra {extra}"


def test_ruff() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout
    result = run(str(BIN / "ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout


def test_mypy() -> None:
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout
