"""Reading time filters: durations too long for a date are a clear `UsageError`, not a crash."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.errors import UsageError
from corral.store import queries

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    ["999999999999d", "999999999d", "9" * 400 + "w", "3000000w"],
    ids=["days", "timedelta-max", "float-overflow", "weeks"],
)
def test_a_duration_past_year_one_is_a_usage_error(text):
    with pytest.raises(UsageError, match="reaches back before the year 1"):
        queries.parse_since(text, NOW)


def test_the_longest_duration_that_fits_still_works():
    assert queries.parse_since("100000w", NOW) == datetime(110, 5, 20, tzinfo=UTC)
