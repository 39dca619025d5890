"""UTC time helpers: one definition of how the service reads a time and bounds a date range.

- `to_utc`: anything ``pandas.Timestamp`` parses, as a timezone-aware UTC timestamp. A naive
  value is taken to be UTC; an aware one is converted.
- `to_utc_or_none`: the same, with None passed through.
- `end_bound_utc`: an *inclusive* end bound, where an end given as a bare day stands for the
  whole day (its last nanosecond). Which ends count as "a bare day" differs by caller; see its
  docstring for the three rules and who uses which.
- `utc_now`: the current time as an aware ``datetime.datetime`` in UTC (the job store's clock).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

__all__ = ["end_bound_utc", "to_utc", "to_utc_or_none", "utc_now"]

_BARE_DATE_MAX_LEN = 10  # "2020-01-31"


def to_utc(value: Any) -> pd.Timestamp:
    """``value`` as a UTC ``pandas.Timestamp``: naive values are taken as UTC, aware ones converted.

    ``None`` gives ``NaT`` (as ``pandas.Timestamp(None)`` does); use `to_utc_or_none` to keep None.
    """
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_utc_or_none(value: Any) -> pd.Timestamp | None:
    """`to_utc` of ``value``, or None when ``value`` is None."""
    return None if value is None else to_utc(value)


def end_bound_utc(value: Any, *, bare_date: bool = True, midnight: bool = False) -> pd.Timestamp:
    """``value`` as an inclusive UTC end bound: `to_utc`, moved to the day's last nanosecond when it names a day.

    An end "names a day" when every condition asked for holds:

    - ``bare_date`` (default on): ``value`` is a string of at most 10 characters, such as
      ``"2020-01-31"``;
    - ``midnight`` (default off): the parsed timestamp is at 00:00 UTC.

    The callers' rules:

    - the market-data store (``MarketDataStore.read`` / ``load_panel``): ``bare_date`` only — a
      short string always covers one more day minus a nanosecond, even one that parses to a time
      of day (``"now"``, ``"10:30"``);
    - ``MarketPanel.select``: ``bare_date`` and ``midnight`` — a short string that parses to a
      time of day is taken as that instant;
    - the Tiingo source: ``midnight`` only (``bare_date=False``) — its ends are timestamps, and
      any end at midnight covers that day.

    Raises ValueError when neither condition is asked for (that would move every end).
    """
    if not (bare_date or midnight):
        raise ValueError("end_bound_utc needs bare_date or midnight (or both)")
    ts = to_utc(value)
    if midnight and ts != ts.normalize():
        return ts
    if bare_date and not (isinstance(value, str) and len(value) <= _BARE_DATE_MAX_LEN):
        return ts
    return ts + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")  # 23:59:59.999999999 of that day


def utc_now() -> dt.datetime:
    """The current time, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)
