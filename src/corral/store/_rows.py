"""Column values to and from Python: JSON text columns and timezone-aware datetimes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from corral.contracts import JsonValue


def dump(value: JsonValue) -> str | None:
    """The compact JSON text stored for `value` (None stays NULL)."""
    return None if value is None else json.dumps(value, separators=(",", ":"), default=str)


def load(text: str | None) -> JsonValue:
    """The value of a JSON text column (NULL is None)."""
    return None if text is None else json.loads(text)


def aware(value: datetime | None) -> datetime | None:
    """`value` as an aware UTC datetime: SQLite returns naive datetimes even for timezone=True
    columns, and everything stored is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
