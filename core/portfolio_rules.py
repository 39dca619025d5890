"""Portfolio target weights from per-bar scores: rebalance schedules, selection, weighting, caps.

docs/semantics.md ("Portfolio mode" → "Target weights") defines every rule implemented here.
Everything is written against the array namespace ``xp`` (numpy on the CPU, CuPy on a GPU)
with operations both share: no pandas, no Python loop over bars or symbols. Shapes: prices
and volatilities are ``(T, S)`` (bars × symbols); scores and weights are ``(T, S, K)`` with
one column per parameter combination. The weights feed `core.simulate.portfolio`, one
column per combination, with the schedule of `rebalance_flags`.

Selections pick names to hold long (`bottom_n` holds the lowest scores long), except
`long_short`, which holds the top ``n`` long and the bottom ``n`` short (negative weights).

The built-in portfolio strategies' scores are here too (`xs_momentum`, `low_volatility`,
`short_term_reversal`, `equal_weight`, `inverse_volatility`); each takes a ``(T, S)`` close
and one lookback per combination and computes each distinct lookback once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .indicators import rolling_std, shift

Array = Any  # numpy.ndarray or cupy.ndarray

NS_PER_DAY = 86_400 * 1_000_000_000
CALENDAR_RULES = ("1d", "1w", "1m", "1q")
SELECTIONS = ("top_n", "bottom_n", "quantile", "all", "long_short")
WEIGHTINGS = ("equal", "score", "inverse_volatility")
QUANTILE_TOL = 1e-9  # ceil(q × n − tol): 0.55 × 100 selects 55, not 56


# --------------------------------------------------------------------------- schedule


def _civil_month(xp: Any, days: Array) -> tuple[Array, Array]:
    """(year, month 1..12) of days since 1970-01-01 (proleptic Gregorian; H. Hinnant's algorithm)."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = xp.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    return year, month


def rebalance_flags(timestamps_ns: Array | None, rule: str | int, n_bars: int, xp: Any = np) -> Array:
    """Boolean ``(T,)`` schedule: True on the bars where the portfolio rebalances.

    ``rule`` "1d" / "1w" / "1m" / "1q": the first bar of each new UTC day / week (weeks start
    Monday) / month / quarter, bar 0 always included; ``timestamps_ns`` (int64 nanoseconds
    since the epoch, UTC, one per bar, ascending) is required. An integer ``N >= 1``: every
    ``N``-th bar counting bar 0 (bars 0, N, 2N, ...); ``timestamps_ns`` is not used.
    """
    n_bars = int(n_bars)
    if n_bars < 0:
        raise ValueError(f"n_bars must be >= 0, got {n_bars}")
    if isinstance(rule, (int, np.integer)) and not isinstance(rule, bool):
        if rule < 1:
            raise ValueError(f"rebalance every N bars needs N >= 1, got {rule}")
        return xp.arange(n_bars, dtype=xp.int64) % int(rule) == 0
    if rule not in CALENDAR_RULES:
        raise ValueError(f"rebalance rule must be one of {list(CALENDAR_RULES)} or an integer >= 1, got {rule!r}")
    if timestamps_ns is None:
        raise ValueError(f"rebalance rule {rule!r} needs the bars' timestamps")
    ts = xp.asarray(timestamps_ns, dtype=xp.int64)
    if ts.shape != (n_bars,):
        raise ValueError(f"timestamps: expected shape ({n_bars},), got {tuple(ts.shape)}")
    days = ts // NS_PER_DAY  # floor division: correct before 1970 too
    if rule == "1d":
        period = days
    elif rule == "1w":
        period = (days + 3) // 7  # 1970-01-01 was a Thursday: weeks start on Mondays
    else:
        year, month = _civil_month(xp, days)
        period = year * 12 + (month - 1) if rule == "1m" else year * 4 + (month - 1) // 3
    flags = xp.ones(n_bars, dtype=bool)
    if n_bars > 1:
        flags[1:] = period[1:] != period[:-1]
    return flags


# --------------------------------------------------------------------------- selection


def _per_combo(xp: Any, value: int | float | Sequence[Any], n_combos: int, dtype: Any) -> Array:
    """A scalar or one value per combination, as a ``(1, 1, K)`` array broadcasting over (T, S)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_combos, float(arr))
    if arr.shape != (n_combos,):
        raise ValueError(f"expected a scalar or {n_combos} values (one per combination), got shape {arr.shape}")
    return xp.asarray(arr.astype(dtype)).reshape(1, 1, n_combos)


def _ranks(xp: Any, scores: Array, descending: bool) -> tuple[Array, Array]:
    """(rank 0.. among eligible names along axis 1, eligible mask); ties: lower symbol first."""
    eligible = xp.isfinite(scores)
    key = xp.where(eligible, -scores if descending else scores, xp.inf)
    order = xp.argsort(key, axis=1, kind="stable")  # stable: ties keep symbol order
    ranks = xp.argsort(order, axis=1)  # inverse permutation (unique values: no stability needed)
    return ranks, eligible


def select(
    xp: Any,
    scores: Array,
    rule: str,
    n: int | Sequence[int] | None = None,
    quantile: float | Sequence[float] | None = None,
) -> Array:
    """Boolean ``(T, S, K)``: which names each combination holds on each bar.

    ``top_n`` / ``bottom_n``: the ``n`` eligible names with the highest / lowest score;
    ``quantile``: the top ``ceil(quantile × n_eligible)`` names (``0 < quantile <= 1``);
    ``all``: every eligible name. A non-finite score is not eligible. Ties go to the lower
    symbol index. ``n`` and ``quantile`` are a scalar or one value per combination.
    (``long_short`` has two sides: see `select_long_short`.)
    """
    scores = xp.asarray(scores, dtype=xp.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (T, S, K), got shape {tuple(scores.shape)}")
    n_combos = scores.shape[2]
    if rule == "all":
        return xp.isfinite(scores)
    if rule in ("top_n", "bottom_n"):
        if n is None:
            raise ValueError(f"selection {rule!r} needs n")
        nn = _per_combo(xp, n, n_combos, np.int64)
        if bool((nn < 1).any()):
            raise ValueError(f"selection {rule!r} needs n >= 1, got {n}")
        ranks, eligible = _ranks(xp, scores, descending=rule == "top_n")
        return eligible & (ranks < nn)
    if rule == "quantile":
        if quantile is None:
            raise ValueError("selection 'quantile' needs quantile")
        q = _per_combo(xp, quantile, n_combos, np.float64)
        if not bool(((q > 0.0) & (q <= 1.0)).all()):
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        ranks, eligible = _ranks(xp, scores, descending=True)
        n_eligible = eligible.sum(axis=1, keepdims=True)
        k = xp.ceil(q * n_eligible - QUANTILE_TOL)
        return eligible & (ranks < k)
    raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {rule!r}")


def select_long_short(xp: Any, scores: Array, n: int | Sequence[int]) -> tuple[Array, Array]:
    """``(long, short)`` boolean ``(T, S, K)``: the ``n`` highest eligible scores long, the ``n``
    lowest short. With fewer than ``2 n`` eligible names the sides split them: the upper half
    (rounded down) long, the lower half short, the middle name (odd count) in neither."""
    scores = xp.asarray(scores, dtype=xp.float64)
    if scores.ndim != 3:
        raise ValueError(f"scores must be (T, S, K), got shape {tuple(scores.shape)}")
    nn = _per_combo(xp, n, scores.shape[2], np.int64)
    if bool((nn < 1).any()):
        raise ValueError(f"selection 'long_short' needs n >= 1, got {n}")
    ranks, eligible = _ranks(xp, scores, descending=True)
    n_eligible = eligible.sum(axis=1, keepdims=True)
    per_side = xp.minimum(nn, n_eligible // 2)
    long = eligible & (ranks < per_side)
    short = eligible & (ranks >= n_eligible - per_side)
    return long, short


# --------------------------------------------------------------------------- weighting


def _normalise(xp: Any, raw: Array) -> Array:
    """Divide each (bar, combination) by its sum over symbols; a zero sum gives all zeros."""
    total = raw.sum(axis=1, keepdims=True)
    return xp.where(total > 0.0, raw / xp.where(total > 0.0, total, 1.0), 0.0)


def weigh(
    xp: Any,
    selected: Array,
    scores: Array | None = None,
    weighting: str = "equal",
    volatility: Array | None = None,
) -> Array:
    """``(T, S, K)`` weights summing to 1 per bar and combination (0 when nothing qualifies).

    ``equal``: 1 / number selected; ``score``: proportional to the selected names' positive
    scores (others 0); ``inverse_volatility``: proportional to ``1 / volatility`` of the
    selected names with a finite positive volatility (``(T, S)`` or ``(T, S, K)``).
    """
    selected = xp.asarray(selected, dtype=bool)
    if weighting == "equal":
        raw = selected.astype(xp.float64)
    elif weighting == "score":
        if scores is None:
            raise ValueError("weighting 'score' needs the scores")
        s = xp.asarray(scores, dtype=xp.float64)
        ok = selected & xp.isfinite(s) & (s > 0.0)
        raw = xp.where(ok, s, 0.0)
    elif weighting == "inverse_volatility":
        if volatility is None:
            raise ValueError("weighting 'inverse_volatility' needs a volatility array")
        v = xp.asarray(volatility, dtype=xp.float64)
        if v.ndim == 2:
            v = v[:, :, None]
        if v.shape[:2] != selected.shape[:2] or v.shape[2] not in (1, selected.shape[2]):
            raise ValueError(f"volatility: expected (T, S) or (T, S, K), got shape {tuple(v.shape)}")
        ok = selected & xp.isfinite(v) & (v > 0.0)
        raw = xp.where(ok, 1.0 / xp.where(ok, v, 1.0), 0.0)
    else:
        raise ValueError(f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}")
    return _normalise(xp, raw)


def cap_weights(xp: Any, weights: Array, max_weight: float) -> Array:
    """Cap each weight at ``max_weight``, handing the excess pro rata to the uncapped names.

    Each round: names above the cap are set to it (and stay capped); their total excess is
    added to the uncapped names with a positive weight, in proportion to their weights. The
    rounds repeat until no weight exceeds the cap, at most S times (each round with an excess
    caps at least one more name). Excess that no uncapped name can take stays in cash.
    """
    if not (math.isfinite(max_weight) and max_weight > 0.0):
        raise ValueError(f"max_weight must be > 0, got {max_weight}")
    w = xp.asarray(weights, dtype=xp.float64).copy()
    capped = xp.zeros(w.shape, dtype=bool)
    for _ in range(w.shape[1]):
        over = w > max_weight
        if not bool(over.any()):
            break
        excess = xp.where(over, w - max_weight, 0.0).sum(axis=1, keepdims=True)
        capped |= over
        w = xp.where(over, max_weight, w)
        takers = xp.where(capped, 0.0, w)
        room = takers.sum(axis=1, keepdims=True)
        share = xp.where(room > 0.0, excess / xp.where(room > 0.0, room, 1.0), 0.0)
        w = w + takers * share
    return w


def target_weights(
    xp: Any,
    scores: Array,
    selection: str = "top_n",
    n: int | Sequence[int] | None = None,
    quantile: float | Sequence[float] | None = None,
    weighting: str = "equal",
    volatility: Array | None = None,
    max_weight: float | None = None,
    gross_leverage: float = 1.0,
    cash_buffer: float = 0.0,
    net_exposure: float = 0.0,
) -> Array:
    """Scores ``(T, S, K)`` → target weights ``(T, S, K)`` (never NaN; 0 for names not held).

    Long books, in order: `select`, `weigh` (sum 1), × ``gross_leverage``, `cap_weights` at
    ``max_weight`` (if given), × ``(1 − cash_buffer)``. ``long_short``: `select_long_short`;
    each side weighed to sum 1 (the short side's ``score`` weighting uses ``−score``), the
    long side × ``L (1 + net_exposure) / 2``, the short side × ``−L (1 − net_exposure) / 2``
    (``L = gross_leverage``, ``net_exposure`` in [−1, 1] a fraction of ``L``), each side capped
    at ``max_weight`` in absolute value, then × ``(1 − cash_buffer)``; ``net_exposure`` is
    used by ``long_short`` only.
    """
    if not (math.isfinite(gross_leverage) and gross_leverage > 0.0):
        raise ValueError(f"gross_leverage must be > 0, got {gross_leverage}")
    if not (math.isfinite(cash_buffer) and 0.0 <= cash_buffer < 1.0):
        raise ValueError(f"cash_buffer must be in [0, 1), got {cash_buffer}")
    scores = xp.asarray(scores, dtype=xp.float64)
    if selection == "long_short":
        if not (math.isfinite(net_exposure) and abs(net_exposure) <= 1.0):
            raise ValueError(f"net_exposure must be in [-1, 1], got {net_exposure}")
        if n is None:
            raise ValueError("selection 'long_short' needs n")
        long, short = select_long_short(xp, scores, n)
        w_long = weigh(xp, long, scores, weighting, volatility) * (gross_leverage * (1.0 + net_exposure) / 2.0)
        w_short = weigh(xp, short, -scores, weighting, volatility) * (gross_leverage * (1.0 - net_exposure) / 2.0)
        if max_weight is not None:
            w_long = cap_weights(xp, w_long, max_weight)
            w_short = cap_weights(xp, w_short, max_weight)
        return (w_long - w_short) * (1.0 - cash_buffer)
    chosen = select(xp, scores, selection, n=n, quantile=quantile)
    w = weigh(xp, chosen, scores, weighting, volatility) * gross_leverage
    if max_weight is not None:
        w = cap_weights(xp, w, max_weight)
    return w * (1.0 - cash_buffer)


# --------------------------------------------------------------------------- scores


def _lookbacks(values: int | Sequence[int], name: str, minimum: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1 or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer or a list of integers, got {values!r}")
    if (arr < minimum).any():
        raise ValueError(f"{name} must be >= {minimum}, got {values!r}")
    return arr.astype(np.int64)


def _gather(xp: Any, close: Array, keys: list[tuple[int, ...]], fn: Any) -> Array:
    """``(T, S, K)``: column k is ``fn(*keys[k])``, each distinct key computed once."""
    n_bars, n_sym = close.shape
    out = xp.empty((n_bars, n_sym, len(keys)), dtype=xp.float64)
    for key in sorted(set(keys)):
        cols = [k for k, other in enumerate(keys) if other == key]
        out[:, :, cols] = fn(*key)[:, :, None]
    return out


def _close(xp: Any, close: Array) -> Array:
    close = xp.asarray(close, dtype=xp.float64)
    if close.ndim != 2:
        raise ValueError(f"close must be (T, S), got shape {tuple(close.shape)}")
    return xp.where(xp.isfinite(close), close, xp.nan)


def xs_momentum(xp: Any, close: Array, lookback: int | Sequence[int], skip: int | Sequence[int] = 0) -> Array:
    """Cross-sectional momentum ``close[t − skip] / close[t − skip − lookback] − 1``, ``(T, S, K)``.

    ``lookback`` (>= 1) and ``skip`` (>= 0) are scalars or one per combination (broadcast).
    """
    close = _close(xp, close)
    lb = _lookbacks(lookback, "lookback", 1)
    sk = _lookbacks(skip, "skip", 0)
    lb, sk = np.broadcast_arrays(lb, sk)
    keys = [(int(a), int(b)) for a, b in zip(lb, sk, strict=True)]
    return _gather(xp, close, keys, lambda a, b: shift(xp, close, b) / shift(xp, close, a + b) - 1.0)


def volatility(xp: Any, close: Array, lookback: int | Sequence[int]) -> Array:
    """Sample (ddof 1) standard deviation of the last ``lookback`` log returns, ``(T, S, K)``.

    Needs ``lookback + 1`` consecutive valid closes (``lookback >= 2``); NaN otherwise.
    """
    close = _close(xp, close)
    lb = _lookbacks(lookback, "lookback", 2)
    logret = xp.log(close) - xp.log(shift(xp, close, 1))
    return _gather(xp, close, [(int(a),) for a in lb], lambda a: rolling_std(xp, logret, a, ddof=1))


def low_volatility(xp: Any, close: Array, lookback: int | Sequence[int]) -> Array:
    """Low-volatility score: ``−volatility(close, lookback)`` (the calmest names score highest)."""
    return -volatility(xp, close, lookback)


def short_term_reversal(xp: Any, close: Array, lookback: int | Sequence[int]) -> Array:
    """Short-term reversal score: ``−(close[t] / close[t − lookback] − 1)`` (recent losers score highest)."""
    close = _close(xp, close)
    lb = _lookbacks(lookback, "lookback", 1)
    return _gather(xp, close, [(int(a),) for a in lb], lambda a: -(close / shift(xp, close, a) - 1.0))


def equal_weight(xp: Any, close: Array, n_combos: int = 1) -> Array:
    """Every name with a valid close scores 1 (NaN otherwise), ``(T, S, K)``."""
    close = _close(xp, close)
    one = xp.where(xp.isnan(close), xp.nan, 1.0)
    return xp.repeat(one[:, :, None], int(n_combos), axis=2)


def inverse_volatility(xp: Any, close: Array, lookback: int | Sequence[int]) -> tuple[Array, Array]:
    """Inverse-volatility strategy: ``(scores, volatility)``, both ``(T, S, K)``.

    Every name with a finite positive volatility scores 1 (eligible), others NaN; weigh with
    ``weighting="inverse_volatility"`` and the returned volatility.
    """
    vol = volatility(xp, close, lookback)
    scores = xp.where(xp.isfinite(vol) & (vol > 0.0), 1.0, xp.nan)
    return scores, vol
