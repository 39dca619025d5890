"""The functions an expression may call: their signatures (what the parser checks).

Argument kinds: ``"s"`` a float series (a bar field or anything computed from one), ``"w"`` a
window (an int literal or a declared int parameter, 1 … `limits.MAX_WINDOW` bars), ``"n"`` a
number (a literal or a parameter: no series), ``"f"`` any float value, ``"b"`` any boolean
value. ``time`` functions look back over bars: they are computed per symbol over the whole
series, once per distinct value of the parameters they depend on (shared across the grid).
Their implementations are in `compiler`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .ir import BOOL, FLOAT


@dataclass(frozen=True)
class Signature:
    """What a function takes and gives."""

    args: str  # one kind letter per argument (see the module docstring)
    optional: int = 0  # how many trailing arguments may be left out (then DEFAULTS applies)
    result: str = FLOAT
    time: bool = False  # looks back over bars: computed per symbol, shared across the grid
    portfolio_only: bool = False
    doc: str = ""


FUNCTIONS: dict[str, Signature] = {
    "sma": Signature("sw", time=True, doc="sma(x, n): simple moving average of the last n bars"),
    "ema": Signature("sw", time=True, doc="ema(x, n): exponential moving average, α = 2/(n+1), seeded with sma"),
    "rsi": Signature("sw", time=True, doc="rsi(x, n): Wilder's RSI (0-100)"),
    "atr": Signature("w", time=True, doc="atr(n): average true range of the bars' high, low and close"),
    "stdev": Signature("sw", time=True, doc="stdev(x, n): population standard deviation of the last n bars"),
    "bb_mid": Signature("sw", time=True, doc="bb_mid(x, n): Bollinger middle band (= sma(x, n))"),
    "bb_upper": Signature("swn", time=True, doc="bb_upper(x, n, k): sma(x, n) + k·stdev(x, n)"),
    "bb_lower": Signature("swn", time=True, doc="bb_lower(x, n, k): sma(x, n) − k·stdev(x, n)"),
    "macd_line": Signature("sww", time=True, doc="macd_line(x, fast, slow): ema(x, fast) − ema(x, slow)"),
    "macd_signal": Signature("swww", time=True, doc="macd_signal(x, fast, slow, signal): ema of the MACD line"),
    "macd_hist": Signature("swww", time=True, doc="macd_hist(x, fast, slow, signal): line − signal"),
    "highest": Signature("sw", time=True, doc="highest(x, n): highest of the last n bars, bar t included"),
    "lowest": Signature("sw", time=True, doc="lowest(x, n): lowest of the last n bars, bar t included"),
    "shift": Signature("sw", time=True, doc="shift(x, n): the value n bars earlier"),
    "diff": Signature("sw", optional=1, time=True, doc="diff(x, n=1): x − shift(x, n)"),
    "pct_change": Signature("sw", optional=1, time=True, doc="pct_change(x, n=1): x / shift(x, n) − 1"),
    "cross_above": Signature("ff", result=BOOL, doc="cross_above(a, b): a > b now and a < b on the bar before"),
    "cross_below": Signature("ff", result=BOOL, doc="cross_below(a, b): a < b now and a > b on the bar before"),
    "abs": Signature("f", doc="abs(x)"),
    "log": Signature("f", doc="log(x): natural logarithm (NaN for x < 0, −inf at 0)"),
    "sqrt": Signature("f", doc="sqrt(x) (NaN for x < 0)"),
    "min": Signature("ff", doc="min(a, b): elementwise; NaN if either is NaN"),
    "max": Signature("ff", doc="max(a, b): elementwise; NaN if either is NaN"),
    "where": Signature("bff", doc="where(c, a, b): a where c is true, else b"),
    "rank": Signature("s", portfolio_only=True, doc="rank(x): rank across symbols per bar, 1 = lowest (ties: average)"),
    "zscore": Signature("s", portfolio_only=True, doc="zscore(x): (x − mean) / σ across symbols per bar"),
}

#: the value of an optional window argument left out
DEFAULT_WINDOW = 1
