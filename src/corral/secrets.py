"""API keys: from the environment, or from a secrets file kept out of the repository.

The file is `NAME=value` lines (blank lines and `#` comments ignored, optional quotes), the same
shape as a `.env` file. The environment wins over the file. Values are never logged: errors name
the variable and the file, not the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from corral.errors import ConfigError

__all__ = ["loaded_secrets", "read_secret", "require_secret"]

_loaded: frozenset[str] = frozenset()
"""Every secret value handed out, so traces and logs can redact it wherever it turns up."""


def loaded_secrets() -> frozenset[str]:
    """The secret values read so far in this process (for redaction; never print them)."""
    return _loaded


def _remember(value: str) -> str:
    global _loaded
    if len(value) >= 6 and value not in _loaded:  # shorter values would redact ordinary words
        _loaded = _loaded | {value}
    return value


def read_secret(name: str, secrets_file: str | None = None) -> str | None:
    """The value of `name` from the environment, else from `secrets_file`, else None.

    Raises:
        ConfigError: `secrets_file` is set but cannot be read, or a line is malformed.
    """
    value = os.environ.get(name)
    if value:
        return _remember(value)
    if not secrets_file:
        return None
    path = Path(secrets_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read secrets file {path}: {exc.strerror}", key="secrets_file"
        ) from exc
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, raw = text.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"{path} line {number} is not NAME=value", key="secrets_file")
        if key.strip() == name:
            found = raw.strip().strip("'\"")
            return _remember(found) if found else None
    return None


def require_secret(name: str, secrets_file: str | None, *, provider: str) -> str:
    """The API key `provider` needs, from `name` in the environment or the secrets file.

    Raises:
        ConfigError: it is in neither (names the variable and the file, never a value).
    """
    value = read_secret(name, secrets_file)
    if not value:
        raise ConfigError(
            f"provider {provider!r} needs an API key in the environment variable {name} or in "
            f"the secrets file ({secrets_file or 'none configured'})",
            key=f"providers.{provider}.api_key_env",
        )
    return value
