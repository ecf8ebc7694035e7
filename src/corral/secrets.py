"""API keys: from the environment, or from a secrets file kept out of the repository.

The file is `NAME=value` lines (blank lines and `#` comments ignored, optional quotes), the same
shape as a `.env` file. The environment wins over the file. Values are never logged: errors name
the variable and the file, not the value.

Every value handed out is remembered (`loaded_secrets`), so what Corral writes (tables, spans,
logs, exports) and what it sends to a model can have it removed. The app registers every key it
is configured with when it opens (`register_configured`), not when a provider is first built:
a tool may use a key before the first model call does.

URLs carry credentials too (a password in `redis://:pw@host`, a token in a webhook's path or an
`?api_key=` query): `url_host`, `hide_url_password` and `mask_url` are what may be shown of one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from corral.errors import ConfigError

__all__ = [
    "URL_MASK",
    "hide_url_password",
    "loaded_secrets",
    "mask_url",
    "read_secret",
    "register_configured",
    "register_secret",
    "require_secret",
    "secret_pattern",
    "secrets_generation",
    "url_host",
]

URL_MASK = "***"
"""What stands for a credential inside a URL (URL-safe, as SQLAlchemy's `hide_password`)."""

_MIN_CHARS = 6
"""Shorter values are not remembered: redacting them would redact ordinary words."""

_loaded: frozenset[str] = frozenset()
"""Every secret value handed out, so traces and logs can redact it wherever it turns up."""
_generation = 0
"""Bumped whenever `_loaded` grows: patterns built from it are rebuilt on the next use."""
_pattern: tuple[int, re.Pattern[str] | None] = (0, None)


def loaded_secrets() -> frozenset[str]:
    """The secret values read so far in this process (for redaction; never print them)."""
    return _loaded


def secrets_generation() -> int:
    """A number that changes whenever a secret is loaded (to rebuild patterns built from them)."""
    return _generation


def register_secret(value: str) -> str:
    """Remember `value` as a secret to redact everywhere (an app's own token, a header value);
    returns it. Values shorter than 6 characters are not remembered."""
    global _loaded, _generation
    if len(value) >= _MIN_CHARS and value not in _loaded:
        _loaded = _loaded | {value}
        _generation += 1
    return value


def secret_pattern() -> re.Pattern[str] | None:
    """One pattern matching any loaded secret value (longest first), built once per set of
    secrets; None while none is loaded. Scanning text for every secret is then one search,
    not one per secret."""
    global _pattern
    generation, pattern = _pattern
    if generation != _generation:
        values = sorted(_loaded, key=len, reverse=True)
        pattern = re.compile("|".join(map(re.escape, values))) if values else None
        _pattern = (_generation, pattern)
    return pattern


def _file_entries(path: Path) -> list[tuple[str, str]]:
    """The (name, value) lines of a secrets file.

    Raises:
        ConfigError: the file cannot be read, or a line is malformed (never echoes a value).
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read secrets file {path}: {exc.strerror}", key="secrets_file"
        ) from exc
    entries = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, raw = text.removeprefix("export ").partition("=")
        if not sep:
            raise ConfigError(f"{path} line {number} is not NAME=value", key="secrets_file")
        entries.append((key.strip(), raw.strip().strip("'\"")))
    return entries


def read_secret(name: str, secrets_file: str | None = None) -> str | None:
    """The value of `name` from the environment, else from `secrets_file`, else None.

    Raises:
        ConfigError: `secrets_file` is set but cannot be read, or a line is malformed.
    """
    value = os.environ.get(name)
    if value:
        return register_secret(value)
    if not secrets_file:
        return None
    for key, found in _file_entries(Path(secrets_file)):
        if key == name:
            return register_secret(found) if found else None
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


def register_configured(names: Iterable[str], secrets_file: str | None) -> int:
    """Remember every configured key: each variable in `names` that is set (environment, then
    file) and every value of `secrets_file` (a file of secrets holds nothing else). A key that
    is not set is no error here: the provider that needs it says so when it is built. Blocks
    (reads the file): call it in a thread. Returns how many secrets are now loaded.

    Raises:
        ConfigError: `secrets_file` is set but cannot be read, or a line is malformed.
    """
    for name in names:
        read_secret(name, secrets_file)
    if secrets_file:
        for _, value in _file_entries(Path(secrets_file)):
            register_secret(value)
    return len(_loaded)


# -- URLs ----------------------------------------------------------------------------------------


def url_host(url: str) -> str:
    """What a log line may show of a URL whose path or query may hold a secret (a Slack webhook):
    `scheme://host[:port]`, no credentials, path or query."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "(unparseable URL)"
    if not parts.scheme or not host:
        return "(unparseable URL)"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")


_LOOSE_PASSWORD = re.compile(r"(:)[^\s/@:]+(@)")
"""`:password@` in a string too malformed to parse as a URL (`postgresql//app:pw@db`)."""


def hide_url_password(url: str) -> str:
    """`url` with the password of its userinfo replaced by `***` (`redis://:***@host:6379/0`),
    also when it is too malformed to parse; anything else unchanged."""
    try:
        parts = urlsplit(url)
        password = parts.password if parts.scheme and parts.netloc else None
    except ValueError:
        password = None
    if password is None:
        return _LOOSE_PASSWORD.sub(rf"\1{URL_MASK}\2", url) if "@" in url else url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{name}:{URL_MASK}@{host}"))


def mask_url(url: str) -> str:
    """`url` as configuration may show it: its userinfo (a user may be a token too) and every
    query value replaced by `***`; a string that is not a `scheme://` URL is returned as is."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or not parts.netloc:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{URL_MASK}@{netloc.rpartition('@')[2]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(name, URL_MASK) for name, _ in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query, fragment=""))
