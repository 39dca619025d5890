"""Annualisation: how many bars make a year, inferred from the market the bars come from.

The factor ``P`` (periods per year) scales every annualised metric (Sharpe, Sortino, CAGR,
volatility, alpha …). It is inferred from the bar timestamps (UTC) when the spec does not
give ``metrics.periods_per_year``:

1. fewer than 2 bars → 252 (the daily convention);
2. median spacing ≥ 25 days → 12 (monthly bars); ≥ 5 days → 52 (weekly bars);
3. otherwise (daily or intraday bars) ``P = bars per trading day × trading days per year``:

   - *bars per trading day*: the median number of bars per UTC date that has bars
     (1 for daily bars, 7 for an hourly US equity session, 24 for a 24-hour market);
   - *trading days per year*, from the dates that have bars over a sample of at least
     28 days: ``dates with bars ÷ calendar days from the first to the last (inclusive) × 7``
     trading dates a week; 4.5–5.5 a week is a 5-day market → 252 (empyrical's convention,
     so daily bars of a 5-day market get exactly 252), 6.5 or more is a 7-day market → 365;
     any other rate (a 6-date week, as hourly FX bars from Sunday 22:00 to Friday 21:00 UTC
     give; sparse data) → the rate observed: ``P = bars ÷ (last − first + one spacing) × 365.25 days``;
   - a sample shorter than 28 days cannot show its week: 365 when a bar falls on a Saturday
     (only a 7-day market trades then), else 252.

`annualise` returns the factor with what was used and why (the result's ``info.annualisation``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

NS_PER_DAY = 86_400 * 10**9
DAYS_PER_YEAR = 365.25
FIVE_DAY_YEAR = 252.0  # trading days a year of a 5-day market (empyrical's convention)
SEVEN_DAY_YEAR = 365.0
MIN_SAMPLE_DAYS = 28  # shorter samples cannot show which days of the week the market trades
SATURDAY = 5  # day of the week, Monday = 0


@dataclass(frozen=True)
class Annualisation:
    """The annualisation factor and how it was chosen."""

    periods_per_year: float
    bars_per_day: float | None  # bars per trading day (None for weekly/monthly bars or a spec value)
    days_per_year: float | None  # trading days per year
    rule: str  # spec | too few bars | monthly | weekly | 5-day week | 7-day week | observed | short sample
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _r(x: float) -> float:
    return float(round(x, 4))


def annualise(ns: Any, periods_per_year: float | None = None) -> Annualisation:
    """The annualisation of bars at ``ns`` (int64 UTC nanoseconds, or a DatetimeIndex):
    the spec's ``periods_per_year`` when given, else inferred as the module docstring says."""
    if periods_per_year:
        return Annualisation(float(periods_per_year), None, None, "spec",
                             "metrics.periods_per_year given in the spec")
    if isinstance(ns, pd.DatetimeIndex):
        ns = ns.as_unit("ns").asi8
    ns = np.unique(np.asarray(ns, dtype=np.int64))
    n = len(ns)
    if n < 2:
        return Annualisation(FIVE_DAY_YEAR, 1.0, FIVE_DAY_YEAR, "too few bars",
                             "fewer than 2 bars: the daily convention, 252")
    spacing = float(np.median(np.diff(ns)))
    spacing_days = spacing / NS_PER_DAY
    if spacing_days >= 25:
        return Annualisation(12.0, None, None, "monthly", f"monthly bars (median spacing {spacing_days:.1f} days): 12")
    if spacing_days >= 5:
        return Annualisation(52.0, None, None, "weekly", f"weekly bars (median spacing {spacing_days:.1f} days): 52")
    dates, counts = np.unique(ns // NS_PER_DAY, return_counts=True)
    bars_per_day = float(np.median(counts))
    span_dates = int(dates[-1] - dates[0]) + 1
    plural = "" if bars_per_day == 1 else "s"
    what = f"{bars_per_day:g} bar{plural} per trading day (median over {len(dates)} UTC dates)"
    if span_dates < MIN_SAMPLE_DAYS:
        saturday = bool(np.any((dates + 3) % 7 == SATURDAY))  # 1970-01-01 was a Thursday
        days = SEVEN_DAY_YEAR if saturday else FIVE_DAY_YEAR
        market = "a bar on a Saturday: a 7-day market" if saturday else "no bar on a Saturday: a 5-day market"
        return Annualisation(bars_per_day * days, bars_per_day, days, "short sample",
                             f"{what} × {days:g} days; under {MIN_SAMPLE_DAYS} days of bars, {market}")
    per_week = len(dates) / span_dates * 7
    rate = f"{per_week:.2f} trading dates a week"
    if 4.5 <= per_week <= 5.5:
        return Annualisation(bars_per_day * FIVE_DAY_YEAR, bars_per_day, FIVE_DAY_YEAR, "5-day week",
                             f"{what} × 252 days: {rate}, a 5-day market (empyrical's convention)")
    if per_week >= 6.5:
        return Annualisation(bars_per_day * SEVEN_DAY_YEAR, bars_per_day, SEVEN_DAY_YEAR, "7-day week",
                             f"{what} × 365 days: {rate}, a market open every day")
    span_days = (float(ns[-1] - ns[0]) + spacing) / NS_PER_DAY
    ppy = n / span_days * DAYS_PER_YEAR
    days = len(dates) / span_dates * DAYS_PER_YEAR
    return Annualisation(_r(ppy), _r(ppy / days), _r(days), "observed",
                         f"{n} bars over {span_days:.1f} days, as observed: {rate} is neither a 5- nor a 7-day week")
