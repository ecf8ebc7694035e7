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
