"""API keys from the environment or a secrets file; errors name the variable, never the value."""

from __future__ import annotations

import pytest

from corral.errors import ConfigError
from corral.secrets import read_secret


def test_the_environment_wins_then_the_file(tmp_path, monkeypatch):
    secrets = tmp_path / "secrets.env"
    secrets.write_text(
        "# keys for the staging providers\nexport OPENAI_KEY='sk-from-file'\nOTHER=x\n\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("OPENAI_KEY", raising=False)
    assert read_secret("OPENAI_KEY", str(secrets)) == "sk-from-file"
    monkeypatch.setenv("OPENAI_KEY", "sk-from-env")
    assert read_secret("OPENAI_KEY", str(secrets)) == "sk-from-env"
    assert read_secret("MISSING", str(secrets)) is None
    assert read_secret("MISSING") is None


def test_a_bad_secrets_file_is_a_config_error_that_does_not_echo_values(tmp_path, monkeypatch):
    monkeypatch.delenv("KEY", raising=False)
    broken = tmp_path / "broken.env"
    broken.write_text("GOOD=sk-secret-value\nthis line has no equals sign\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 2 is not NAME=value") as err:
        read_secret("KEY", str(broken))
    assert "sk-secret-value" not in str(err.value)
    with pytest.raises(ConfigError, match="cannot read secrets file"):
        read_secret("KEY", str(tmp_path / "nope.env"))


def test_register_configured_loads_set_keys_and_every_value_of_the_file(tmp_path, monkeypatch):
    from corral.secrets import loaded_secrets, register_configured

    secrets = tmp_path / "secrets.env"
    secrets.write_text("UNUSED_TOKEN=file-only-value-3391\nSHORT=abc\n", encoding="utf-8")
    monkeypatch.setenv("SET_KEY_VAR", "env-value-8812")
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    register_configured(["SET_KEY_VAR", "UNSET_KEY_VAR"], str(secrets))
    assert {"env-value-8812", "file-only-value-3391"} <= loaded_secrets()
    assert "abc" not in loaded_secrets()  # too short: it would redact ordinary words


def test_one_pattern_matches_every_loaded_secret_longest_first():
    from corral.secrets import register_secret, secret_pattern, secrets_generation

    register_secret("overlap-7700")
    before = secrets_generation()
    register_secret("overlap-7700-longer")
    assert secrets_generation() == before + 1
    pattern = secret_pattern()
    assert pattern is not None and pattern is secret_pattern()  # built once per set
    assert pattern.sub("#", "a overlap-7700-longer b overlap-7700") == "a # b #"


@pytest.mark.parametrize(
    ("url", "host", "hidden", "masked"),
    [
        pytest.param(
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            "https://hooks.slack.com",
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            id="webhook",
        ),
        pytest.param(
            "redis://:pw-123@cache:6379/0",
            "redis://cache:6379",
            "redis://:***@cache:6379/0",
            "redis://***@cache:6379/0",
            id="redis-password",
        ),
        pytest.param(
            "https://user:pw@api.example.com/v1?api_key=abc&region=eu#frag",
            "https://api.example.com",
            "https://user:***@api.example.com/v1?api_key=abc&region=eu#frag",
            "https://***@api.example.com/v1?api_key=***&region=***",
            id="userinfo-and-query",
        ),
        pytest.param("not a url", "(unparseable URL)", "not a url", "not a url", id="not-a-url"),
    ],
)
def test_what_may_be_shown_of_a_url(url, host, hidden, masked):
    from corral.secrets import hide_url_password, mask_url, url_host

    assert url_host(url) == host
    assert hide_url_password(url) == hidden
    assert mask_url(url) == masked


async def test_opening_an_app_registers_a_key_no_model_has_used_yet(monkeypatch):
    from corral import App, AppConfig
    from corral.config import ProviderConfig
    from corral.secrets import loaded_secrets

    monkeypatch.setenv("ACME_OPEN_KEY", "opened-acme-key-5150")
    monkeypatch.setenv("OPENAI_API_KEY", "opened-openai-key-5151")
    app = App(
        AppConfig(
            database="sqlite:///:memory:",
            durable=False,
            providers={"acme": ProviderConfig(api_key_env="ACME_OPEN_KEY")},
            fallbacks={"small": ("openai:gpt-4o-mini",)},
        )
    )
    assert "opened-acme-key-5150" not in loaded_secrets()
    async with app:
        assert {"opened-acme-key-5150", "opened-openai-key-5151"} <= loaded_secrets()
