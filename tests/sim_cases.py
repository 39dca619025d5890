"""Shared generators and comparison helpers for the kernel-vs-reference simulator tests.

Used by tests/test_simulate_reference.py (CPU build) and tests/cudasim/test_kernel_cudasim.py
(the numba.cuda build under the CUDA simulator). A `Case` holds the (T, S) prices, the
column→symbol map, the (T, C) signals and one `reference_sim.Options`; `run_kernel` packs it
into the kernel's array layout (core/simulate/layout.py) and `assert_matches_reference`
checks every column's equity, returns, trades and accumulators against
`reference_sim.simulate_reference`.

pytest runs with ``--import-mode=importlib``, so the test modules put this directory on
``sys.path`` before importing this module (and this module imports `reference_sim` the same way).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_sim import Options, Result, simulate_reference

from gpu_backtest.core.simulate import layout as L
from gpu_backtest.core.simulate.sim_options import SimOptions

RTOL = 1e-9


@dataclass
class Case:
    """One kernel call: prices of S symbols, C columns of signals, one set of options."""

    open_: np.ndarray  # (T, S)
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    sym: np.ndarray  # (C,) int64
    entries: np.ndarray  # (T, C) bool
    exits: np.ndarray
    short_entries: np.ndarray
    short_exits: np.ndarray
    opts: Options
    short_dummy: bool = False  # hand the kernel (1, 1) dummies for the unused short pair

    @property
    def n_bars(self) -> int:
        return self.close.shape[0]

    @property
    def n_cols(self) -> int:
        return self.sym.shape[0]


@dataclass
class KernelOutput:
    acc: np.ndarray  # (C, N_ACC)
    returns: np.ndarray  # (T, C)
    equity: np.ndarray  # (T, C)
    trades: np.ndarray  # (C, max_trades, N_TFIELDS)
    ntrades: np.ndarray  # (C,)
    want_returns: bool = True  # returns holds real (T, C) output
    record: bool = True  # equity / trades / ntrades hold real output


def option_arrays(opts: Options, want_returns: bool, record: bool) -> tuple[np.ndarray, np.ndarray]:
    """`Options` → the kernel's ``fopts`` / ``iopts`` arrays, through `SimOptions`."""
    return SimOptions(**asdict(opts), want_returns=want_returns, record=record).arrays()


def run_kernel(
    simulate: Callable[..., np.ndarray],
    case: Case,
    *,
    want_returns: bool = True,
    record: bool = True,
    max_trades: int | None = None,
) -> KernelOutput:
    """Call a kernel build (signature of ``core.simulate.cpu.simulate``) on ``case``."""
    n_bars, n_cols = case.n_bars, case.n_cols
    fopts, iopts = option_arrays(case.opts, want_returns, record)
    if max_trades is None:
        max_trades = n_bars + 2  # at most one close per bar plus the open trade
    returns = np.full((n_bars, n_cols), np.nan) if want_returns else np.zeros((1, 1))
    if record:
        equity = np.full((n_bars, n_cols), np.nan)
        trades = np.full((n_cols, max_trades, L.N_TFIELDS), np.nan)
        ntrades = np.full(n_cols, -1, dtype=np.int64)
    else:
        equity, trades, ntrades = np.zeros((1, 1)), np.zeros((1, 1, 1)), np.zeros(1, np.int64)
    if case.short_dummy:
        short_entries = short_exits = np.zeros((1, 1), dtype=bool)
    else:
        short_entries, short_exits = case.short_entries, case.short_exits
    acc = simulate(
        case.open_, case.high, case.low, case.close, case.sym,
        case.entries, case.exits, short_entries, short_exits,
        fopts, iopts, returns, equity, trades, ntrades,
    )
    return KernelOutput(np.asarray(acc), returns, equity, trades, ntrades, want_returns, record)


def reference_column(case: Case, c: int) -> Result:
    s = int(case.sym[c])
    return simulate_reference(
        case.open_[:, s], case.high[:, s], case.low[:, s], case.close[:, s],
        case.entries[:, c], case.exits[:, c], case.short_entries[:, c], case.short_exits[:, c],
        case.opts,
    )


# ---------------------------------------------------------------------------------------
# comparison
# ---------------------------------------------------------------------------------------


def _close(actual: float, expected: float, atol: float, what: str) -> None:
    actual = float(actual)
    expected = float(expected)
    if math.isnan(expected) or math.isnan(actual):
        assert math.isnan(expected) and math.isnan(actual), f"{what}: kernel {actual!r} vs reference {expected!r}"
        return
    assert abs(actual - expected) <= RTOL * abs(expected) + atol, (
        f"{what}: kernel {actual!r} vs reference {expected!r} (diff {actual - expected:.3g}, atol {atol:.3g})"
    )


def _exact(actual: float, expected: float, what: str) -> None:
    assert float(actual) == float(expected), f"{what}: kernel {actual!r} vs reference {expected!r}"


def trade_scale(tr, opts: Options) -> float:
    """Magnitude of the money terms in a trade's pnl (its rounding-error scale)."""
    return tr.size * (abs(tr.entry_price) + abs(tr.exit_price)) * (1.0 + opts.fees) + 2.0 * opts.fixed_fee


def assert_column_matches(out: KernelOutput, c: int, ref: Result, opts: Options) -> None:
    """Kernel column ``c`` agrees with the reference result to RTOL plus a rounding-scale atol."""
    eps = 1e-9
    scales = [trade_scale(tr, opts) for tr in ref.trades]
    money_scale = max([opts.init_cash, *[abs(e) for e in ref.equity], *scales])
    atol_money = eps * money_scale
    # the error of r_t is the error of equity_t over equity_{t-1}
    prev = [opts.init_cash, *ref.equity][: len(ref.equity)]
    atol_r = [atol_money / abs(p) if p > 0.0 else 0.0 for p in prev]
    rets = ref.returns
    n = len(rets)
    st_ = ref.stats

    if out.record:
        for t in range(n):
            _close(out.equity[t, c], ref.equity[t], atol_money, f"col {c} equity[{t}]")
    if out.want_returns:
        for t in range(n):
            _close(out.returns[t, c], rets[t], atol_r[t], f"col {c} returns[{t}]")

    if out.record:
        n_rec = int(out.ntrades[c])
        assert n_rec == min(len(ref.trades), out.trades.shape[1]), (
            f"col {c}: kernel recorded {n_rec} trades, reference has {len(ref.trades)}:\n"
            + "\n".join(str(tr) for tr in ref.trades)
            + "\nkernel:\n"
            + "\n".join(str(out.trades[c, i]) for i in range(n_rec))
        )
        for i in range(n_rec):
            tr = ref.trades[i]
            row = out.trades[c, i]
            w = f"col {c} trade {i} ({tr})"
            _exact(row[L.T_ENTRY_IDX], tr.entry_idx, w + " entry_idx")
            _exact(row[L.T_EXIT_IDX], tr.exit_idx, w + " exit_idx")
            _exact(row[L.T_DIRECTION], 1.0 if tr.direction == "long" else -1.0, w + " direction")
            assert L.EXIT_REASONS[int(row[L.T_EXIT_REASON])] == tr.exit_reason, (
                f"{w} exit_reason: kernel {L.EXIT_REASONS[int(row[L.T_EXIT_REASON])]}"
            )
            scale = eps * scales[i]
            _close(row[L.T_SIZE], tr.size, eps * tr.size, w + " size")
            _close(row[L.T_ENTRY_PRICE], tr.entry_price, 0.0, w + " entry_price")
            _close(row[L.T_EXIT_PRICE], tr.exit_price, 0.0, w + " exit_price")
            _close(row[L.T_ENTRY_FEES], tr.entry_fees, scale, w + " entry_fees")
            _close(row[L.T_EXIT_FEES], tr.exit_fees, scale, w + " exit_fees")
            _close(row[L.T_PNL], tr.pnl, scale, w + " pnl")
            cost = tr.size * tr.entry_price + tr.entry_fees
            _close(row[L.T_RETURN], tr.ret, scale / abs(cost), w + " return")

    acc = out.acc[c]
    w = f"col {c} acc"
    sum_atol_r = sum(atol_r)
    sq_atol_r = sum(2.0 * (abs(r) + abs(opts.risk_free) + 1.0) * a for r, a in zip(rets, atol_r, strict=True))
    closed = ref.closed_trades
    pnl_atol = eps * sum(trade_scale(tr, opts) for tr in closed)
    ret_atols = [eps * trade_scale(tr, opts) / abs(tr.size * tr.entry_price + tr.entry_fees) for tr in closed]
    _close(acc[L.A_FINAL_EQUITY], st_.final_equity, atol_money, w + " final_equity")
    _exact(acc[L.A_N_BARS], st_.n_bars, w + " n_bars")
    _close(acc[L.A_RET_MEAN], st_.ret_mean, sum_atol_r / max(n, 1) + 1e-15, w + " ret_mean")
    _close(acc[L.A_RET_M2], st_.ret_m2, sq_atol_r + 1e-15, w + " ret_m2")
    _close(acc[L.A_DOWN_SQ], st_.down_sq, sq_atol_r + 1e-15, w + " down_sq")
    _close(acc[L.A_OMEGA_POS], st_.omega_pos, sum_atol_r + 1e-15, w + " omega_pos")
    _close(acc[L.A_OMEGA_NEG], st_.omega_neg, sum_atol_r + 1e-15, w + " omega_neg")
    _close(acc[L.A_MAX_DD], st_.max_dd, atol_money / opts.init_cash, w + " max_dd")
    _exact(acc[L.A_MAX_DD_BARS], st_.max_dd_bars, w + " max_dd_bars")
    _exact(acc[L.A_EXPOSURE_BARS], st_.exposure_bars, w + " exposure_bars")
    _exact(acc[L.A_N_CLOSED], st_.n_closed, w + " n_closed")
    _exact(acc[L.A_N_WINS], st_.n_wins, w + " n_wins")
    _exact(acc[L.A_N_LOSSES], st_.n_losses, w + " n_losses")
    _close(acc[L.A_GROSS_PROFIT], st_.gross_profit, pnl_atol, w + " gross_profit")
    _close(acc[L.A_GROSS_LOSS], st_.gross_loss, pnl_atol, w + " gross_loss")
    _close(acc[L.A_PNL_MEAN], st_.pnl_mean, pnl_atol, w + " pnl_mean")
    pnl_m2_atol = 2.0 * pnl_atol * (sum(abs(tr.pnl) for tr in closed) + pnl_atol)
    _close(acc[L.A_PNL_M2], st_.pnl_m2, pnl_m2_atol + 1e-12, w + " pnl_m2")
    _close(acc[L.A_BEST_RET], st_.best_ret, max(ret_atols, default=0.0), w + " best_ret")
    _close(acc[L.A_WORST_RET], st_.worst_ret, max(ret_atols, default=0.0), w + " worst_ret")
    _exact(acc[L.A_HOLD_BARS], st_.hold_bars, w + " hold_bars")
    _exact(acc[L.A_N_OPEN], st_.n_open, w + " n_open")
    open_atol = eps * (trade_scale(ref.trades[-1], opts) if st_.n_open else 0.0)
    _close(acc[L.A_OPEN_PNL], st_.open_pnl, open_atol, w + " open_pnl")


def assert_matches_reference(case: Case, out: KernelOutput) -> list[Result]:
    """Every column of ``out`` agrees with the reference; returns the reference results."""
    refs = []
    for c in range(case.n_cols):
        ref = reference_column(case, c)
        assert_column_matches(out, c, ref, case.opts)
        refs.append(ref)
    return refs


# ---------------------------------------------------------------------------------------
# random inputs
# ---------------------------------------------------------------------------------------


def make_prices(rng: np.random.Generator, n_bars: int, n_syms: int, gappy: bool, nan_mode: str):
    """GBM-like positive OHLC per symbol; optionally big gaps and NaN (invalid) bars."""
    shape = (n_bars, n_syms)
    o = np.empty(shape)
    h = np.empty(shape)
    lo = np.empty(shape)
    c = np.empty(shape)
    for s in range(n_syms):
        prev = math.exp(rng.uniform(math.log(0.5), math.log(2000.0)))
        vol = rng.uniform(0.002, 0.06)
        gap_vol = rng.uniform(0.02, 0.2) if gappy else vol * 0.2
        for t in range(n_bars):
            op = prev * math.exp(rng.normal(0.0, gap_vol))
            cl = op * math.exp(rng.normal(0.0, vol))
            # sometimes no wick at all, so high/low equal the open or close exactly
            up = 0.0 if rng.random() < 0.15 else abs(rng.normal(0.0, vol))
            dn = 0.0 if rng.random() < 0.15 else abs(rng.normal(0.0, vol))
            o[t, s] = op
            c[t, s] = cl
            h[t, s] = max(op, cl) * math.exp(up)
            lo[t, s] = min(op, cl) * math.exp(-dn)
            prev = cl
    if nan_mode != "none":
        p = {"few": 0.05, "many": 0.3, "edges": 0.05}[nan_mode]
        bad = rng.random(shape) < p
        if nan_mode == "edges":
            k0 = int(rng.integers(1, 4))
            k1 = int(rng.integers(1, 4))
            bad[:k0, :] = True
            bad[-k1:, :] = True
        arrays = (o, h, lo, c)
        for t, s in zip(*np.nonzero(bad), strict=True):
            if rng.random() < 0.5:
                for a in arrays:
                    a[t, s] = np.nan
            else:  # one NaN field is enough to make the bar invalid
                arrays[int(rng.integers(0, 4))][t, s] = np.nan
    return o, h, lo, c


def make_signals(rng: np.random.Generator, n_bars: int, n_cols: int):
    """Four (T, C) bool signal arrays with a per-column density; never all-false."""
    out = []
    for _ in range(4):
        a = np.zeros((n_bars, n_cols), dtype=bool)
        for col in range(n_cols):
            density = float(rng.choice([0.02, 0.08, 0.2, 0.5, 0.85]))
            a[:, col] = rng.random(n_bars) < density
            if not a[:, col].any():
                a[int(rng.integers(0, n_bars)), col] = True
        out.append(a)
    return out


@st.composite
def options(draw) -> Options:
    """Every option of docs/semantics.md, including the corner values."""
    size_type = draw(st.sampled_from(["percent", "value", "units"]))
    if size_type == "percent":
        size = draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0)))
    elif size_type == "value":
        size = draw(st.one_of(st.floats(5.0, 5_000.0), st.floats(5_000.0, 500_000.0)))
    else:
        size = draw(st.one_of(st.floats(0.05, 50.0), st.integers(1, 2_000).map(float)))

    def stop():
        return st.one_of(st.just(0.0), st.floats(0.002, 0.3))

    sl_stop = draw(stop())
    # equal SL and TSL make the documented tie (sl_level == tsl_level → reason "sl") common
    tsl_stop = sl_stop if draw(st.integers(0, 5)) == 0 else draw(stop())
    return Options(
        init_cash=draw(st.sampled_from([100_000.0, 10_000.0, 1_000.0, 50.0])),
        # no costs below ~1e-6: a cost smaller than an equity ulp makes "equity below its peak"
        # (max_dd_bars) a coin flip between two correct roundings
        fees=draw(st.one_of(st.sampled_from([0.0, 0.001, 0.01]), st.floats(1e-6, 0.05))),
        fixed_fee=draw(st.sampled_from([0.0, 0.0, 0.5, 5.0])),
        slippage=draw(st.one_of(st.sampled_from([0.0, 0.001]), st.floats(1e-6, 0.03))),
        size=size,
        size_type=size_type,
        fractional=draw(st.booleans()),
        fill=draw(st.sampled_from(["close", "next_open"])),
        direction=draw(st.sampled_from(["long", "short", "both"])),
        sl_stop=sl_stop,
        tp_stop=draw(stop()),
        tsl_stop=tsl_stop,
        risk_free=draw(st.sampled_from([0.0, 0.0, 1e-4, -2e-5])),
    )


@st.composite
def cases(draw, max_bars: int = 200, max_cols: int = 6, max_syms: int = 3) -> Case:
    """A random kernel call: several columns over several symbols, random prices/signals/options."""
    opts = draw(options())
    # hypothesis favours small integers; make long series as common as short ones
    n_bars = draw(st.one_of(st.integers(1, 10), st.integers(max(1, max_bars // 3), max_bars)))
    n_syms = draw(st.integers(1, max_syms))
    n_cols = draw(st.integers(1, max_cols))
    gappy = draw(st.booleans())
    nan_mode = draw(st.sampled_from(["none", "none", "few", "many", "edges"]))
    seed = draw(st.integers(0, 2**63 - 1))
    rng = np.random.default_rng(seed)
    o, h, lo, c = make_prices(rng, n_bars, n_syms, gappy, nan_mode)
    sym = rng.integers(0, n_syms, n_cols).astype(np.int64)
    entries, exits, short_entries, short_exits = make_signals(rng, n_bars, n_cols)
    short_dummy = opts.direction == "long" and draw(st.booleans())
    return Case(o, h, lo, c, sym, entries, exits, short_entries, short_exits, opts, short_dummy)


def single_column_case(bars, entries=(), exits=(), short_entries=(), short_exits=(), **opts) -> Case:
    """A one-column case from a list of (open, high, low, close) bars and signal bar indices."""
    arr = np.array(bars, dtype=np.float64).reshape(-1, 4)
    n = arr.shape[0]

    def sig(idx):
        a = np.zeros((n, 1), dtype=bool)
        for i in idx:
            a[i, 0] = True
        return a

    return Case(
        arr[:, [0]].copy(), arr[:, [1]].copy(), arr[:, [2]].copy(), arr[:, [3]].copy(),
        np.zeros(1, dtype=np.int64), sig(entries), sig(exits), sig(short_entries), sig(short_exits),
        replace(Options(), **opts),
    )
