"""A pytest plugin: no secret reaches a log line, anywhere in the suite.

README promises that tokens, passwords and the admin credential are never
logged. Tests that look for one leak in one place (tests/gateway/test_http.py)
cannot see the others, so this plugin watches every log record of the whole
session — formatted, with its structured fields and any traceback — and the
stderr of every `wando` subprocess the tests run (tests/support.py and the
drills' WandoProcess hand it over, line by line), and fails the run at the
end, listing the offending lines, if one holds:

- a SCIM token (`wando_scim_` and 20 or more token characters), an admin or
  service credential of the generated shape, or the suite's own ADMIN and
  SERVICE credentials;
- a placeholder password the tests send (Okta's `1mz050nq` …);
- an `Authorization` header value or a `Bearer <token>` pair;
- a PEM private key (the core's or a client's TLS key, issue #14).

So that DEBUG and INFO lines are seen too, the project's loggers (core,
gateway, wando) are set to DEBUG for the session. Registered from
tests/conftest.py; tests/drills/test_secrets.py proves it catches what it should.
`scan_text` also reads the activity table (issue #18):
tests/gateway/test_activity.py::test_no_secret_or_password_is_kept.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests import support

# the suite's placeholder passwords (grep tests for "password")
PASSWORDS = ("1mz050nq", "S3cret-Placeholder", "Other-Placeholder", "Third-Placeholder", "hunter22")
PATTERNS = {
    "SCIM token": re.compile(r"wando_scim_[0-9A-Za-z]{20,}"),
    "admin/service/gateway credential": re.compile(r"wando_(?:admin|svc|gw)_[A-Za-z0-9_-]{20,}"),
    "Authorization header": re.compile(
        r"""(?i)authorization["']?\s*[:=,]\s*["']?\s*(?:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"""
    ),
    "Bearer token": re.compile(r"(?i)\bbearer\s+(?!realm\b)[A-Za-z0-9._~+/-]{16,}"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
}
WATCHED_LOGGERS = ("common", "cli", "core", "gateway", "wando")
MAX_SHOWN = 20


@dataclass(frozen=True)
class Finding:
    what: str
    source: str
    line: str

    def __str__(self) -> str:
        return f"{self.what} in {self.source}: {self.line[:300]}"


def literal_secrets() -> dict[str, str]:
    """Exact strings that must never appear, by what they are."""
    found = {support.ADMIN_TOKEN: "the test ADMIN credential"}
    found[support.SERVICE_TOKEN] = "the test SERVICE credential"
    found[support.GATEWAY_TOKEN] = "the test GATEWAY credential"
    for password in PASSWORDS:
        found[password] = "a test password"
    return found


def scan_text(text: str, source: str) -> list[Finding]:
    """The secrets in `text`, one finding per offending line and kind."""
    literals = literal_secrets()
    findings = []
    for line in text.splitlines():
        for secret, what in literals.items():
            if secret in line:
                findings.append(Finding(what, source, line))
        for what, pattern in PATTERNS.items():
            if pattern.search(line):
                findings.append(Finding(what, source, line))
    return findings


class LogScanner(logging.Handler):
    """Scans every record it is handed, and subprocess output it is given."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.findings: list[Finding] = []
        self.lines = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)  # the message, and the traceback if any
            fields = getattr(record, "fields", None)
            if fields:
                text += " " + json.dumps(fields, default=str)
        except Exception:  # a record that cannot be formatted is still looked at
            text = f"{record.name} {record.msg!r} {record.args!r}"
        self.scan(text, f"log record of {record.name}")

    def scan(self, text: str, source: str) -> None:
        self.lines += text.count("\n") + 1
        self.findings.extend(scan_text(text, source))

    @contextmanager
    def expecting(self) -> Iterator[list[Finding]]:
        """For the plugin's own test: what is found in the block is handed to the
        block instead of failing the session."""
        start = len(self.findings)
        caught: list[Finding] = []
        try:
            yield caught
        finally:
            caught.extend(self.findings[start:])
            del self.findings[start:]


_scanner: LogScanner | None = None
_saved_levels: dict[str, int] = {}


def active() -> LogScanner:
    """The session's scanner."""
    assert _scanner is not None, "tests.drills.logscan is not registered"
    return _scanner


def _attach(scanner: LogScanner) -> None:
    root = logging.getLogger()
    if scanner not in root.handlers:
        root.addHandler(scanner)
    for name in WATCHED_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)


def pytest_sessionstart(session: pytest.Session) -> None:
    global _scanner
    _scanner = LogScanner()
    for name in WATCHED_LOGGERS:
        _saved_levels[name] = logging.getLogger(name).level
    _attach(_scanner)
    support.STDERR_WATCHERS.append(_scanner.scan)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Re-attach if something (common.logs.configure) replaced the root's handlers."""
    if _scanner is not None:
        _attach(_scanner)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _scanner is None:
        return
    logging.getLogger().removeHandler(_scanner)
    for name, level in _saved_levels.items():
        logging.getLogger(name).setLevel(level)
    if _scanner.scan in support.STDERR_WATCHERS:
        support.STDERR_WATCHERS.remove(_scanner.scan)
    if _scanner.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _scanner is None:
        return
    if not _scanner.findings:
        terminalreporter.write_line(
            f"log scan: {_scanner.lines} log and subprocess lines, no secret found"
        )
        return
    terminalreporter.section("secrets in logs", red=True, bold=True)
    terminalreporter.write_line(
        f"{len(_scanner.findings)} log or subprocess lines hold a secret"
        " (tests/drills/logscan.py); the run fails:"
    )
    for finding in _scanner.findings[:MAX_SHOWN]:
        terminalreporter.write_line(f"  {finding}")
    if len(_scanner.findings) > MAX_SHOWN:
        terminalreporter.write_line(f"  … and {len(_scanner.findings) - MAX_SHOWN} more")
