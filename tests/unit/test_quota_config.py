"""Quota limits in the config file, URL options and dicts: one set of names, windows,
"did you mean", whole numbers for counts; and the calendar window arithmetic."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aios_mesh.config import LimitsConfig, load_config
from aios_mesh.errors import ConfigError
from aios_mesh.ports.quota import LIMIT_FIELDS, WINDOWS, QuotaLimits, window_bounds


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "aios-mesh.toml"
    path.write_text(text)
    return load_config(path)


def test_config_and_port_name_the_same_limits() -> None:
    assert tuple(LimitsConfig.model_fields) == LIMIT_FIELDS


def test_window_keys_in_the_config(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[tenants.acme.quota]
calls_per_minute = 60
tokens_per_day = 1_000_000
cost_per_month = 100.0
cost = 5000                    # lifetime, as before
[tenants.acme.capabilities.summarize]
calls_per_hour = 100
""")
    acme = cfg.tenants["acme"]
    assert acme.quota.to_limits() == QuotaLimits(calls_per_minute=60, tokens_per_day=1_000_000,
                                                 cost_per_month=100.0, cost=5000.0)
    assert acme.capabilities["summarize"].to_limits() == QuotaLimits(calls_per_hour=100)


@pytest.mark.parametrize(("line", "fragment"), [
    ("calls_per_min = 60", "did you mean 'calls_per_minute'"),
    ("cost_per_mnth = 1.0", "did you mean 'cost_per_month'"),
    ("calls_per_minute = 1.5", "valid integer"),
    ("cost_per_day = -1", "greater than or equal to 0"),
    ("cost_per_day = inf", "finite number"),
])
def test_bad_quota_keys_say_how_to_fix(tmp_path: Path, line: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        _load(tmp_path, f"[tenants.acme.quota]\n{line}\n")
    assert "tenants.acme.quota" in info.value.message


@pytest.mark.parametrize(("given_", "fragment"), [
    ({"calls_per_min": 3}, "did you mean 'calls_per_minute'"),
    ({"calls_per_day": "1.5"}, "not a whole number"),
    ({"calls_per_day": True}, "not a number"),
    ({"cost_per_month": "lots"}, "not a number"),
])
def test_mapping_errors_say_how_to_fix(given_: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        QuotaLimits.from_mapping(given_, "acme")
    assert "calls_per_minute" in (info.value.hint or "") or "write" in (info.value.hint or "")


_limit_values = st.fixed_dictionaries({}, optional={
    name: (st.integers(0, 10**12) if name.startswith(("calls", "tokens")) or name == "burst"
           else st.floats(0, 1e9, allow_nan=False, allow_infinity=False))
    for name in LIMIT_FIELDS if name not in ("rate_per_s", "burst")})


@given(values=_limit_values)
def test_config_tables_and_mappings_parse_alike(values: dict[str, Any]) -> None:
    """A config table, a dict and URL-style text give the same limits."""
    from_config = LimitsConfig(**values).to_limits()
    assert from_config == QuotaLimits.from_mapping(values, "x").check()
    as_text = {k: repr(v) if isinstance(v, float) else str(v) for k, v in values.items()}
    assert QuotaLimits.from_mapping(as_text, "x") == from_config


# -- calendar windows -----------------------------------------------------------------------

_moments = st.floats(min_value=0, max_value=7_258_118_400, allow_nan=False)  # 1970 .. 2200


@given(now=_moments, window=st.sampled_from(WINDOWS))
def test_a_window_holds_its_moment_and_is_aligned(now: float, window: Any) -> None:
    start, end = window_bounds(window, now)
    assert start <= now < end
    first = datetime.fromtimestamp(start, UTC)
    assert first.second == 0
    if window in ("hour", "day", "month"):
        assert first.minute == 0
    if window in ("day", "month"):
        assert first.hour == 0
    if window == "month":
        assert first.day == 1
        assert end - start == calendar.monthrange(first.year, first.month)[1] * 86400
    else:
        assert end - start == {"minute": 60, "hour": 3600, "day": 86400}[window]


@given(now=_moments, window=st.sampled_from(WINDOWS))
def test_windows_tile_the_time_line(now: float, window: Any) -> None:
    start, end = window_bounds(window, now)
    assert window_bounds(window, end) == (end, window_bounds(window, end)[1])
    assert window_bounds(window, start) == (start, end)
    assert window_bounds(window, end - 1e-3)[1] == end  # just before the end: same window


@given(now=_moments)
def test_windows_nest(now: float) -> None:
    bounds = [window_bounds(w, now) for w in WINDOWS]
    for (s1, e1), (s2, e2) in itertools.pairwise(bounds):
        assert s2 <= s1 and e1 <= e2


def test_month_lengths_and_leap_years() -> None:
    def month(y: int, m: int) -> timedelta:
        s, e = window_bounds("month", datetime(y, m, 15, tzinfo=UTC).timestamp())
        return timedelta(seconds=e - s)

    assert month(2028, 2) == timedelta(days=29)
    assert month(2100, 2) == timedelta(days=28)
    assert month(2000, 2) == timedelta(days=29)
    assert month(2027, 12) == timedelta(days=31)
    assert window_bounds("month", datetime(2027, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
                         )[1] == datetime(2028, 1, 1, tzinfo=UTC).timestamp()


def test_unknown_window_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown quota window 'week'"):
        window_bounds("week", 0.0)  # type: ignore[arg-type]
