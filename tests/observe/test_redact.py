"""Redaction of what Corral writes: key shapes, loaded secrets, JSON kept JSON, log records."""

from __future__ import annotations

import json
import logging

import pytest

from corral.config import parse_config
from corral.errors import ConfigError
from corral.observe.redact import REDACTED, RedactingFilter, Redactor, install_log_redaction
from corral.secrets import register_secret
from corral.telemetry import TracePolicy

_JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
    "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
)
_PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq9\nq0Zt3kQ==\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", id="stripe-secret"),
        pytest.param("rk_live_" + "51H8s2pKq9ZrXwYvB3nM", id="stripe-restricted"),
        pytest.param("AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", id="google"),
        pytest.param("hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ01234567", id="hugging-face"),
        pytest.param("github_pat_" + "11ABCDEFG0123456789_abcdefghijKLMN", id="github-pat"),
        pytest.param(_JWT, id="jwt"),
        pytest.param(_PEM, id="pem-private-key"),
        pytest.param("Basic dXNlcjpwYXNzd29yZA==", id="basic-auth"),
        pytest.param("Bearer abcdefghijklmnop.qrstuvwxyz", id="bearer"),
    ],
)
def test_every_known_key_shape_is_redacted_in_text_and_in_json(secret):
    redactor = Redactor()
    assert redactor.text(f"call failed: {secret} (retrying)") == (
        f"call failed: {REDACTED} (retrying)"
    )
    stored = redactor.dump({"error": f"got {secret}", "list": [secret]})
    assert stored is not None
    assert json.loads(stored) == {"error": f"got {REDACTED}", "list": [REDACTED]}


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        pytest.param(
            "redis://:hunter2secret@cache:6379/0",
            f"redis://:{REDACTED}@cache:6379/0",
            id="url-password-no-user",
        ),
        pytest.param(
            "connect postgresql://app:s3cr3t@db/prod failed",
            f"connect postgresql://app:{REDACTED}@db/prod failed",
            id="url-password-keeps-user-and-host",
        ),
        pytest.param(
            "api_key=" + "0123456789abcdef" * 2,
            f"api_key={REDACTED}",
            id="hex-after-api-key",
        ),
        pytest.param(
            '{"client_secret": "' + "a1b2c3d4" * 5 + '"}',
            '{"client_secret": "' + REDACTED + '"}',
            id="hex-after-secret-in-json",
        ),
    ],
)
def test_credentials_inside_a_larger_string_go_and_their_context_stays(text, expect):
    assert Redactor().text(text) == expect


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Basic Information about basic requirements", id="basic-words"),
        pytest.param("sha256 " + "0123456789abcdef" * 4, id="hex-without-a-key-name"),
        pytest.param('{"run_id": "' + "0123456789abcdef" * 2 + '"}', id="run-id"),
        pytest.param("https://example.com:8443/a@b and http://host/x", id="url-without-password"),
        pytest.param("the bearer of bad news", id="bearer-word"),
    ],
)
def test_look_alikes_are_kept(text):
    assert Redactor().text(text) == text


def test_json_stays_json_when_a_secret_spans_strings_or_needs_escaping():
    redactor = Redactor()
    # A PEM header and its END in two strings: redacting across them would break the JSON.
    split = json.dumps(["-----BEGIN PRIVATE KEY-----\nMIIB", "x\n-----END PRIVATE KEY-----"])
    assert json.loads(redactor.json_text(split)) == [REDACTED, "x\n-----END PRIVATE KEY-----"]
    quoted = 'pa"ss\\word-7781'
    register_secret(quoted)
    stored = redactor.dump({"note": f"key {quoted}!"})
    assert stored is not None and json.loads(stored) == {"note": f"key {REDACTED}!"}
    nested = json.dumps({"args": [json.dumps({"payload": quoted})]})
    assert "7781" not in redactor.json_text(nested)


def test_a_secret_loaded_after_the_pattern_was_built_is_redacted_too():
    redactor = Redactor()
    assert redactor.text("late-loaded-4417") == "late-loaded-4417"
    register_secret("late-loaded-4417")
    assert redactor.text("x late-loaded-4417 y") == f"x {REDACTED} y"


def test_an_apps_own_patterns_come_from_trace_redact():
    config = parse_config({"trace": {"redact": [r"ACME-\d{6}", r"\b\d{16}\b"]}})
    redactor = Redactor(config.trace)
    assert redactor.text("order ACME-123456 card 4111111111111111") == (
        f"order {REDACTED} card {REDACTED}"
    )


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        pytest.param(["ok", "(unclosed"], "not a regular expression", id="invalid"),
        pytest.param([r"\d*"], "matches the empty string", id="empty-match"),
    ],
)
def test_a_bad_redact_pattern_is_a_config_error_naming_it(patterns, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_config({"trace": {"redact": patterns}})
    assert error.value.key == f"trace.redact.{len(patterns) - 1}"
    with pytest.raises(ConfigError, match=message):
        TracePolicy(redact=tuple(patterns))


def test_log_records_are_redacted_whatever_logger_makes_them(caplog):
    secret = register_secret("logged-secret-6620")
    install_log_redaction(Redactor())
    caplog.set_level(logging.INFO)
    other = logging.getLogger("some.library")
    other.info("connecting with %s to %s", secret, "redis://:pw123456@cache:6379")
    other.info("nothing to hide in %s", "this one")
    try:
        raise RuntimeError(f"auth failed for {secret}")
    except RuntimeError:
        other.exception("request failed")
    assert secret not in caplog.text and "pw123456" not in caplog.text
    assert f"connecting with {REDACTED} to redis://:{REDACTED}@cache:6379" in caplog.text
    assert "RuntimeError: auth failed for [REDACTED]" in caplog.text
    kept = caplog.records[1]
    assert kept.msg == "nothing to hide in %s" and kept.args == ("this one",)


def test_the_filter_redacts_records_on_a_handler_of_your_own():
    secret = register_secret("filtered-secret-9031")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key=%s", (secret,), None)
    assert RedactingFilter().filter(record)
    assert record.getMessage() == f"key={REDACTED}"


def test_a_pattern_that_would_eat_the_json_around_it_is_applied_value_by_value():
    redactor = Redactor(TracePolicy(redact=(r"tok-\S*",)))
    text = json.dumps({"a": ["tok-1", 2], "tok-key": "kept"})
    assert json.loads(redactor.json_text(text)) == {"a": [REDACTED, 2], REDACTED: "kept"}


def test_a_url_password_already_masked_stays_as_it_is():
    assert Redactor().text("at redis://:***@cache:6379/0") == "at redis://:***@cache:6379/0"
