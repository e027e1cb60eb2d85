"""The gateway's settings (README, "Configuration"): defaults and loud failures."""

from __future__ import annotations

import pytest

from common import config


def test_defaults() -> None:
    settings = config.load(env={})
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.rate_limit_per_second == 50.0 and settings.rate_limit_burst == 200
    assert settings.core_timeout_seconds == 10.0
    assert (settings.max_line_bytes, settings.max_header_bytes, settings.max_headers) == (
        8192,
        8192,
        100,
    )
    assert settings.scim_base_url == "http://127.0.0.1:8080/api/auth/scim/v2"
    assert settings.bulk_max_operations == 100
    assert settings.bulk_max_payload_bytes == 1024 * 1024
    assert settings.cursor_timeout_seconds == 3600 and settings.cursor_secret is None


def test_the_cursor_secret_is_redacted_in_the_start_up_log() -> None:
    settings = config.load(env={"WANDO_CURSOR_SECRET": "wando_cursor_s3cret"})
    assert settings.cursor_secret == "wando_cursor_s3cret"
    assert "wando_cursor_s3cret" not in str(settings.redacted())


def test_values() -> None:
    settings = config.load(
        env={
            "WANDO_MAX_BODY_BYTES": "2048",
            "WANDO_RATE_LIMIT_PER_SECOND": "0.5",
            "WANDO_RATE_LIMIT_BURST": "3",
            "WANDO_CORE_TIMEOUT_SECONDS": "2.5",
            "WANDO_PUBLIC_BASE_URL": "https://scim.example.com/",
            "WANDO_SCIM_PATH_PREFIX": "/scim/v2",
        }
    )
    assert (settings.max_body_bytes, settings.rate_limit_burst) == (2048, 3)
    assert (settings.rate_limit_per_second, settings.core_timeout_seconds) == (0.5, 2.5)
    assert settings.scim_base_url == "https://scim.example.com/scim/v2"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WANDO_MAX_BODY_BYTES", "lots"),
        ("WANDO_MAX_BODY_BYTES", "10"),
        ("WANDO_RATE_LIMIT_PER_SECOND", "-1"),
        ("WANDO_RATE_LIMIT_PER_SECOND", "nan"),
        ("WANDO_RATE_LIMIT_BURST", "0"),
        ("WANDO_CORE_TIMEOUT_SECONDS", "0"),
        ("WANDO_CORE_TIMEOUT_SECONDS", "soon"),
        ("WANDO_CURSOR_TIMEOUT_SECONDS", "0"),
        ("WANDO_BULK_MAX_OPERATIONS", "0"),
        ("WANDO_BULK_MAX_PAYLOAD_BYTES", str(5 * 1024 * 1024)),
        ("WANDO_MAX_LINE_BYTES", "100"),
        ("WANDO_MAX_HEADER_BYTES", "1e6"),
        ("WANDO_MAX_HEADERS", "5"),
    ],
)
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load(env={name: value})
