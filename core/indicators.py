"""Array-generic technical indicators: each takes ``xp`` (numpy or CuPy) and (T, S) arrays.

Every function works on float64 arrays with time on axis 0 (usually ``(T, S)``: bars ×
symbols; a 1-D series works too) and returns arrays of the same shape. Only the part of the
numpy API that CuPy shares is used, so the same code runs on either backend; nothing loops
over symbols, and nothing loops over bars in Python: rolling windows are summed block by
block, and the recursive indicators use a parallel prefix scan (`_linear_scan`).

Conventions shared by all indicators:

- **No look-ahead**: the value at bar ``t`` depends on bars ``0..t`` only (bit for bit:
  changing later bars does not change it, not even by rounding).
- **Missing bars**: a NaN (or ±inf, treated the same) marks a missing bar. Output that
  cannot be computed is NaN.
- **Rolling indicators** (`sma`, `rolling_std`, `rolling_max`, `rolling_min`,
  `bollinger`): the first ``window − 1`` bars are NaN (warm-up), and so is every bar whose
  window contains a missing bar. A window longer than the data (or shorter than 1) gives
  all NaN.
- **Recursive indicators** (`ema`, `rsi`, `atr`, and `macd` built on `ema`): the recursion
  is seeded with the simple average of its first ``n`` inputs and *restarts* after a
  missing input: the output is NaN on the missing bar and stays NaN until ``n`` consecutive
  valid inputs have been seen again, where it is re-seeded with their simple average. So a
  NaN gap behaves like the start of a new series.
"""

from __future__ import annotations

from typing import Any

Array = Any  # numpy.ndarray or cupy.ndarray


# --------------------------------------------------------------------------- helpers


def _clean(xp: Any, x: Array) -> Array:
    """``x`` as float64 with every non-finite value replaced by NaN (a new array)."""
    x = xp.asarray(x, dtype=xp.float64)
    return xp.where(xp.isfinite(x), x, xp.nan)


def _to_blocks(xp: Any, a: Array, w: int) -> Array:
    """(T, ...) → (nb, w, ...), zero-padded at the end to a whole number of blocks."""
    n = a.shape[0]
    nb = -(-n // w)
    pad = nb * w - n
    if pad:
        a = xp.concatenate([a, xp.zeros((pad, *a.shape[1:]), dtype=a.dtype)], axis=0)
    return a.reshape(nb, w, *a.shape[1:])


def _from_blocks(a: Array, n: int) -> Array:
    """Inverse of `_to_blocks`: (nb, w, ...) → (n, ...)."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])[:n]


def _window_parts(xp: Any, yb: Array) -> tuple[Array, Array]:
    """Split each window sum into its part in the current block and in the previous one.

    With the series cut into blocks of the window length ``w``, the window ending at
    position ``p`` of block ``j`` is positions ``0..p`` of block ``j`` plus positions
    ``p+1..w−1`` of block ``j−1``. Returns ``(prev, cur)`` holding those two partial sums.
    Each is a sum of at most ``w`` values computed sequentially from values at or before the
    window's end, so there is neither drift over long series nor look-ahead.
    """
    cur = xp.cumsum(yb, axis=1)
    suffix = xp.cumsum(yb[:, ::-1], axis=1)[:, ::-1]  # positions p..w-1 of the same block
    prev = xp.zeros_like(yb)
    prev[1:, :-1] = suffix[:-1, 1:]
    return prev, cur


def _window_sum(xp: Any, yb: Array) -> Array:
    """``prev + cur`` of `_window_parts` without materialising both."""
    out = xp.cumsum(yb, axis=1)
    suffix = xp.cumsum(yb[:, ::-1], axis=1)[:, ::-1]
    out[1:, :-1] += suffix[:-1, 1:]
    return out


def _invalid_windows(xp: Any, missing: Array, window: int) -> Array:
    """True where the window ending at t is incomplete (warm-up) or holds a missing bar."""
    n = missing.shape[0]
    mb = _to_blocks(xp, missing.astype(xp.float32), window)
    count = _from_blocks(_window_sum(xp, mb), n)  # exact: integers below 2**24
    bad = count > 0
    bad[: window - 1] = True
    return bad


def _rolling_sq_dev(xp: Any, x: Array, window: int) -> Array:
    """Rolling sum of squared deviations from the window mean (NaN where the window is invalid).

    Numerically careful: values are taken relative to a per-block reference (the block's
    first value, which lies inside every window ending in that block, so it is never a
    future value), so neither a large price level nor a long series costs precision.
    """
    n = x.shape[0]
    missing = xp.isnan(x)
    xb = _to_blocks(xp, xp.where(missing, 0.0, x), window)  # (nb, w, ...)
    ref_b = xb[:, :1]  # reference of the current block
    ref_a = xp.concatenate([ref_b[:1], ref_b[:-1]], axis=0)  # reference of the previous block
    pos = xp.arange(window, dtype=xp.float64).reshape((1, window) + (1,) * (xb.ndim - 2))
    n_cur = pos + 1.0  # window elements in the current block
    n_prev = window - 1.0 - pos  # ... and in the previous one
    # deviations from the own block's reference: prev1[j] sums those of block j-1 (relative
    # to ref_a[j]), cur1[j] those of block j (relative to ref_b[j])
    d = xb - ref_b
    prev1, cur1 = _window_parts(xp, d)
    prev2, cur2 = _window_parts(xp, d * d)
    mean = ref_b + (cur1 + prev1 + n_prev * (ref_a - ref_b)) / window
    db = ref_b - mean
    da = ref_a - mean
    ss = cur2 + 2.0 * db * cur1 + n_cur * db * db + prev2 + 2.0 * da * prev1 + n_prev * da * da
    ss = _from_blocks(xp.maximum(ss, 0.0), n)
    return xp.where(_invalid_windows(xp, missing, window), xp.nan, ss)


def _prefix_max(xp: Any, a: Array) -> Array:
    """Running maximum along axis 0 (exact, so both routes give the same numbers).

    numpy's ``maximum.accumulate``; elsewhere (CuPy implements ``accumulate`` only for a few
    ufuncs) ``ceil(log2 T)`` doubling steps.
    """
    if getattr(xp, "__name__", "") == "numpy":
        return xp.maximum.accumulate(a, axis=0)
    a = a.copy()
    d = 1
    while d < a.shape[0]:
        a[d:] = xp.maximum(a[d:], a[:-d])
        d *= 2
    return a


def _run_length(xp: Any, valid: Array) -> Array:
    """Number of consecutive valid bars ending at each bar (0 on an invalid bar)."""
    n = valid.shape[0]
    idx = xp.arange(n, dtype=xp.int64).reshape((n,) + (1,) * (valid.ndim - 1))
    idx = xp.broadcast_to(idx, valid.shape)
    last_invalid = _prefix_max(xp, xp.where(valid, -1, idx))
    return xp.where(valid, idx - last_invalid, 0)


_SCAN_BLOCK = 16


def _scan_in_place(b: Array, c: Array, axis: int) -> None:
    """Hillis–Steele scan of ``y[t] = b[t]·y[t−1] + c[t]`` along ``axis``, in place.

    Afterwards ``c[t]`` is ``y[t]`` (with ``y[−1] = 0``) and ``b[t]`` the product of
    ``b[0..t]``. Each step's right-hand sides are evaluated before the assignment.
    """
    n = c.shape[axis]
    head = (slice(None),) * axis
    d = 1
    while d < n:
        hi = (*head, slice(d, None))
        lo = (*head, slice(None, n - d))
        c[hi] = b[hi] * c[lo] + c[hi]
        b[hi] = b[hi] * b[lo]
        d *= 2


def _linear_scan(xp: Any, b: Array, c: Array) -> Array:
    """Solve ``y[t] = b[t] · y[t−1] + c[t]`` (``y[−1] = 0``) along axis 0, without a Python loop over t.

    A two-level parallel prefix scan of the affine maps: a Hillis–Steele scan inside blocks
    of 16 bars, a (recursive) scan of the block-end values, then one fix-up pass; about
    ``T·(log2(16) + 3)`` operations. ``y[t]`` combines only inputs at or before ``t``, in an
    order that does not depend on later values, so there is no look-ahead even in rounding;
    the scan is the same sequence of elementwise IEEE operations on numpy and CuPy. ``b`` must be in
    [0, 1] (products only shrink, so the scan is stable) and ``c`` finite.
    """
    n = c.shape[0]
    if n <= 2 * _SCAN_BLOCK:
        b = b.copy()
        c = c.copy()
        _scan_in_place(b, c, 0)
        return c
    bb = _to_blocks(xp, b, _SCAN_BLOCK).copy()  # (may be a view of the input: copy)
    cb = _to_blocks(xp, c, _SCAN_BLOCK).copy()
    _scan_in_place(bb, cb, 1)
    carry = _linear_scan(xp, bb[:, -1], cb[:, -1])  # y at the end of each block
    cb[1:] = bb[1:] * carry[:-1, None] + cb[1:]
    return _from_blocks(cb, n)


def _seeded_ewm(xp: Any, x: Array, alpha: float, n: int) -> Array:
    """``y[t] = α·x[t] + (1 − α)·y[t−1]``, seeded with the mean of the first ``n`` values.

    ``x`` must already be clean (NaN marks a missing value). Per the module rule the
    recursion restarts after a missing value: the output is NaN until ``n`` consecutive
    valid values, whose simple average is the new seed.
    """
    valid = ~xp.isnan(x)
    run = _run_length(xp, valid)
    seed = sma(xp, x, n)  # finite exactly where run >= n
    restart = run == n
    going = run > n
    b = xp.where(going, 1.0 - alpha, 0.0)
    c = xp.where(going, alpha * xp.where(valid, x, 0.0), xp.where(restart, seed, 0.0))
    y = _linear_scan(xp, b, c)
    return xp.where(run >= n, y, xp.nan)


def shift(xp: Any, x: Array, periods: int = 1) -> Array:
    """``x`` delayed by ``periods >= 0`` bars: ``out[t] = x[t − periods]``, the first ``periods`` bars NaN.

    The tool for "the previous bars only" (e.g. a channel of the bars before ``t``).
    """
    periods = int(periods)
    if periods < 0:
        raise ValueError(f"shift: periods must be >= 0 (a negative shift looks ahead), got {periods}")
    x = _clean(xp, x)
    out = xp.full(x.shape, xp.nan, dtype=xp.float64)
    if periods == 0:
        out[...] = x
    elif periods < x.shape[0]:
        out[periods:] = x[:-periods]
    return out


def roc(xp: Any, x: Array, periods: int) -> Array:
    """Rate of change over ``periods`` bars: ``x[t] / x[t − periods] − 1`` (NaN if either is missing)."""
    return _clean(xp, x) / shift(xp, x, periods) - 1.0


# --------------------------------------------------------------------------- rolling


def sma(xp: Any, x: Array, window: int) -> Array:
    """Simple moving average over ``window`` bars (NaN until the window is full or holds a NaN).

    Window sums are taken block by block (each a sum of at most ``window`` values), so there
    is no cumulative-sum drift over long series.
    """
    window = int(window)
    x = _clean(xp, x)
    n = x.shape[0]
    if window < 1 or window > n:
        return xp.full(x.shape, xp.nan, dtype=xp.float64)
    missing = xp.isnan(x)
    total = _from_blocks(_window_sum(xp, _to_blocks(xp, xp.where(missing, 0.0, x), window)), n)
    return xp.where(_invalid_windows(xp, missing, window), xp.nan, total / window)


def rolling_std(xp: Any, x: Array, window: int, ddof: int = 0) -> Array:
    """Rolling standard deviation over ``window`` bars with ``ddof`` delta degrees of freedom.

    ``ddof=0`` (the default) is the population standard deviation used by Bollinger bands;
    ``ddof=1`` matches pandas' ``rolling(window).std()``. NaN during warm-up, for windows
    holding a missing bar, and when ``window − ddof <= 0``. Computed from deviations about
    local references (no ``E[x²] − E[x]²`` cancellation).
    """
    window = int(window)
    x = _clean(xp, x)
    if window < 1 or window > x.shape[0] or window - ddof <= 0:
        return xp.full(x.shape, xp.nan, dtype=xp.float64)
    ss = _rolling_sq_dev(xp, x, window)
    return xp.sqrt(ss / (window - ddof))


def _rolling_extreme(xp: Any, x: Array, window: int, op: Any) -> Array:
    x = _clean(xp, x)
    n = x.shape[0]
    out = xp.full(x.shape, xp.nan, dtype=xp.float64)
    if window < 1 or window > n:
        return out
    # sparse table: after the loop m[t] = op(x[t-span+1 .. t]) for t >= span-1
    m = x.copy()
    span = 1
    while span * 2 <= window:
        m[span:] = op(m[span:], m[:-span])
        span *= 2
    # window [t-w+1, t] = [t-w+1, t-w+span] ∪ [t-span+1, t]; op propagates NaN
    out[window - 1 :] = op(m[window - 1 :], m[span - 1 : n - window + span])
    return out


def rolling_max(xp: Any, x: Array, window: int) -> Array:
    """Highest value of the last ``window`` bars, bar ``t`` included (NaN if any is missing)."""
    return _rolling_extreme(xp, x, int(window), xp.maximum)


def rolling_min(xp: Any, x: Array, window: int) -> Array:
    """Lowest value of the last ``window`` bars, bar ``t`` included (NaN if any is missing)."""
    return _rolling_extreme(xp, x, int(window), xp.minimum)


def bollinger(xp: Any, x: Array, window: int, k: float) -> tuple[Array, Array, Array]:
    """Bollinger bands ``(mid, upper, lower)``: ``mid = sma(window)``, ``mid ± k·σ``.

    ``σ`` is the population (``ddof=0``) rolling standard deviation over the same window.
    """
    mid = sma(xp, x, window)
    sd = rolling_std(xp, x, window, ddof=0)
    return mid, mid + k * sd, mid - k * sd


# --------------------------------------------------------------------------- recursive


def ema(xp: Any, x: Array, span: int) -> Array:
    """Exponential moving average with ``α = 2 / (span + 1)``, seeded with an SMA.

    ``ema[t] = α·x[t] + (1 − α)·ema[t−1]``; the first value (bar ``span − 1`` of a
    NaN-free series) is the simple average of the first ``span`` values, as in TA-Lib. The
    bars before it are NaN. After a missing bar the recursion restarts (module docstring).
    Equivalent in pandas: put ``x[:span].mean()`` at bar ``span − 1``, NaN before, then
    ``.ewm(span=span, adjust=False).mean()``.
    """
    span = int(span)
    x = _clean(xp, x)
    if span < 1 or span > x.shape[0]:
        return xp.full(x.shape, xp.nan, dtype=xp.float64)
    return _seeded_ewm(xp, x, 2.0 / (span + 1.0), span)


def wilder(xp: Any, x: Array, window: int) -> Array:
    """Wilder's smoothing: an EMA with ``α = 1 / window`` seeded with the SMA of ``window`` values."""
    window = int(window)
    x = _clean(xp, x)
    if window < 1 or window > x.shape[0]:
        return xp.full(x.shape, xp.nan, dtype=xp.float64)
    return _seeded_ewm(xp, x, 1.0 / window, window)


def rsi(xp: Any, close: Array, window: int) -> Array:
    """Relative Strength Index (Wilder), in [0, 100].

    ``Δ[t] = close[t] − close[t−1]``; gains ``max(Δ, 0)`` and losses ``max(−Δ, 0)`` are each
    smoothed with `wilder` (seed: the mean of the first ``window`` changes), and
    ``RSI = 100 · G / (G + L)`` (= ``100 − 100 / (1 + G/L)``): 100 when there were no losses,
    50 when the price did not move at all. The first value is at bar ``window`` (it needs
    ``window`` changes). A missing close makes the changes into and out of it missing, so
    the smoothing restarts after it.
    """
    close = _clean(xp, close)
    delta = close - shift(xp, close, 1)
    gain = xp.where(delta > 0, delta, 0.0)
    loss = xp.where(delta < 0, -delta, 0.0)
    missing = xp.isnan(delta)
    g = wilder(xp, xp.where(missing, xp.nan, gain), window)
    ls = wilder(xp, xp.where(missing, xp.nan, loss), window)
    total = g + ls
    flat = total == 0
    return xp.where(flat, 50.0, 100.0 * g / xp.where(flat, 1.0, total))


def true_range(xp: Any, high: Array, low: Array, close: Array) -> Array:
    """``max(high − low, |high − close[t−1]|, |low − close[t−1]|)``; NaN on bar 0 (no previous close)."""
    high = _clean(xp, high)
    low = _clean(xp, low)
    prev = shift(xp, _clean(xp, close), 1)
    tr = xp.maximum(high - low, xp.maximum(xp.abs(high - prev), xp.abs(low - prev)))
    return tr  # NaN propagates from any missing input


def atr(xp: Any, high: Array, low: Array, close: Array, window: int) -> Array:
    """Average True Range: `wilder` smoothing of `true_range` over ``window`` bars.

    The true range needs the previous close, so bar 0 has none and the first ATR is at bar
    ``window`` (the mean of the true ranges of bars ``1..window``, as in TA-Lib). A bar with
    a missing high, low or previous close has a missing true range, which restarts the
    smoothing.
    """
    return wilder(xp, true_range(xp, high, low, close), window)


def macd(xp: Any, close: Array, fast: int, slow: int, signal: int) -> tuple[Array, Array, Array]:
    """MACD ``(macd, signal_line, hist)``.

    ``macd = ema(close, fast) − ema(close, slow)``, ``signal_line = ema(macd, signal)`` (so
    seeded with the mean of the first ``signal`` MACD values: the first signal value is at
    bar ``max(fast, slow) + signal − 2`` of a NaN-free series), ``hist = macd − signal_line``.
    """
    line = ema(xp, close, fast) - ema(xp, close, slow)
    sig = ema(xp, line, signal)
    return line, sig, line - sig


__all__ = [
    "atr",
    "bollinger",
    "ema",
    "macd",
    "roc",
    "rolling_max",
    "rolling_min",
    "rolling_std",
    "rsi",
    "shift",
    "sma",
    "true_range",
    "wilder",
]
