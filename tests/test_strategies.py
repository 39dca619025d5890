"""The built-in strategies: signal shapes, the symbol-major column layout, no look-ahead,
indicator sharing through ``per_combo``, and each documented rule checked on one column
against an independent pandas computation."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.core import indicators as ind
from gpu_backtest.core.strategy import SignalContext, Signals, Strategy
from gpu_backtest.plugins import manager

BUILTINS = [
    "buy_and_hold",
    "sma_crossover",
    "ema_crossover",
    "macd_crossover",
    "rsi_reversion",
    "bollinger_reversion",
    "donchian_breakout",
    "momentum",
]

# small grids; the constraint (if any) removes some combinations
GRIDS: dict[str, dict[str, list]] = {
    "buy_and_hold": {},
    "sma_crossover": {"fast": [3, 5, 8], "slow": [8, 13, 21]},
    "ema_crossover": {"fast": [3, 5, 8], "slow": [8, 13, 21]},
    "macd_crossover": {"fast": [3, 5], "slow": [5, 10], "signal": [3, 4]},
    "rsi_reversion": {"window": [5, 14], "lower": [30.0, 40.0], "upper": [60.0, 70.0]},
    "bollinger_reversion": {"window": [10, 20], "k": [1.0, 2.0]},
    "donchian_breakout": {"window": [10, 20], "exit_window": [5, 10]},
    "momentum": {"lookback": [5, 20], "threshold": [0.0, 0.02]},
}


def unique(*lists) -> int:
    return len(set(itertools.chain.from_iterable(lists)))


def rows(params: dict[str, np.ndarray], *names: str) -> int:
    return len({tuple(params[n][k] for n in names) for k in range(len(params[names[0]]))})


# indicator arrays each strategy should compute for a grid: one per unique value
EXPECTED_CALLS: dict[str, Callable[[dict[str, np.ndarray]], int]] = {
    "buy_and_hold": lambda p: 0,
    "sma_crossover": lambda p: unique(p["fast"], p["slow"]),
    "ema_crossover": lambda p: unique(p["fast"], p["slow"]),
    "macd_crossover": lambda p: (
        unique(p["fast"], p["slow"]) + rows(p, "fast", "slow") + rows(p, "fast", "slow", "signal")
    ),
    "rsi_reversion": lambda p: unique(p["window"]),
    "bollinger_reversion": lambda p: 2 * unique(p["window"]),
    "donchian_breakout": lambda p: 2 * unique(p["window"], p["exit_window"]),
    "momentum": lambda p: unique(p["lookback"]),
}


# --------------------------------------------------------------------------- data and helpers


def gbm_bars(n: int = 260, s: int = 3, seed: int = 0, gap: bool = True) -> dict[str, np.ndarray]:
    """Random GBM OHLCV bars, (n, s) each; one whole missing bar in symbol 1."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.015, size=(n, s)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, 0.003, size=(n, s)))
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    high = top * (1.0 + np.abs(rng.normal(0.0, 0.004, size=(n, s))))
    low = bottom * (1.0 - np.abs(rng.normal(0.0, 0.004, size=(n, s))))
    volume = rng.uniform(1e3, 1e4, size=(n, s))
    bars = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    if gap:
        for a in bars.values():
            a[n // 2, 1] = np.nan
    return bars


def grid_params(strategy: Strategy, grid: dict[str, list]) -> dict[str, np.ndarray]:
    """The cartesian product of ``grid``, filtered by the strategy's constraint."""
    if not grid:
        return {}
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    params = {n: np.array([c[i] for c in combos]) for i, n in enumerate(names)}
    if strategy.constraint is not None:
        keep = np.asarray(strategy.constraint(params), dtype=bool)
        params = {n: v[keep] for n, v in params.items()}
    return params


def run_signals(strategy: Strategy, bars: dict[str, np.ndarray], params: dict[str, np.ndarray]):
    ctx = SignalContext(np, bars, params)
    return ctx, strategy.signals(ctx)


def arrays(sig: Signals) -> dict[str, np.ndarray]:
    out = {"entries": sig.entries, "exits": sig.exits}
    if sig.short_entries is not None:
        out["short_entries"] = sig.short_entries
    if sig.short_exits is not None:
        out["short_exits"] = sig.short_exits
    return out


@pytest.fixture(scope="module")
def registry() -> dict[str, Strategy]:
    return manager.strategies(manager.build_plugin_manager(allowed=set(BUILTINS), entry_points=False))


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    return gbm_bars()


# --------------------------------------------------------------------------- registry and metadata


def test_all_builtins_registered(registry: dict[str, Strategy]) -> None:
    assert list(registry) == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_metadata(registry: dict[str, Strategy], name: str) -> None:
    strat = registry[name]
    assert strat.name == name and strat.description
    json.dumps(strat.schema())  # JSON-able
    defaults = {p.name: np.array([p.check(p.default)]) for p in strat.params}
    for p in strat.params:
        assert p.type in (int, float) and p.min is not None and p.max is not None, p.name
    if strat.constraint is not None:
        assert bool(np.asarray(strat.constraint(defaults))[0]), "defaults violate the constraint"
        assert strat.constraint_text
    assert set(GRIDS[name]) == {p.name for p in strat.params}
    for pname, values in GRIDS[name].items():
        for v in values:
            strat.param(pname).check(v)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("name", BUILTINS)
def test_shapes_dtypes_and_sharing(registry: dict[str, Strategy], bars, name: str) -> None:
    strat = registry[name]
    params = grid_params(strat, GRIDS[name])
    ctx, sig = run_signals(strat, bars, params)
    n_bars, n_symbols = bars["close"].shape
    assert ctx.n_columns == n_symbols * ctx.n_combos
    out = arrays(sig)
    if strat.shorts:
        assert set(out) == {"entries", "exits", "short_entries", "short_exits"}
    for key, arr in out.items():
        assert isinstance(arr, np.ndarray), key
        assert arr.shape == (n_bars, ctx.n_columns), key
        assert arr.dtype == np.bool_, key
    # each unique indicator value computed once
    assert ctx.indicator_calls == EXPECTED_CALLS[name](params)
    # the data make the test meaningful: signals do fire
    assert sig.entries.any() and (name == "buy_and_hold" or sig.exits.any())
    if strat.shorts:
        assert sig.short_entries.any()


@pytest.mark.parametrize("name", BUILTINS)
def test_column_layout_is_symbol_major(registry: dict[str, Strategy], bars, name: str) -> None:
    """Column s*K+k equals the signals of symbol s alone with combination k alone."""
    strat = registry[name]
    params = grid_params(strat, GRIDS[name])
    ctx, sig = run_signals(strat, bars, params)
    full = arrays(sig)
    k_combos = ctx.n_combos
    for s in range(ctx.n_symbols):
        one_bars = {key: a[:, s : s + 1] for key, a in bars.items()}
        for k in range(k_combos):
            one_params = {key: v[k : k + 1] for key, v in params.items()}
            _, one = run_signals(strat, one_bars, one_params)
            for key, arr in arrays(one).items():
                assert arr.shape == (ctx.n_bars, 1)
                np.testing.assert_array_equal(full[key][:, s * k_combos + k], arr[:, 0], err_msg=f"{key} s={s} k={k}")


@pytest.mark.parametrize("cut", [30, 129, 200])
@pytest.mark.parametrize("name", BUILTINS)
def test_no_look_ahead(registry: dict[str, Strategy], bars, name: str, cut: int) -> None:
    """Replacing every bar after ``cut`` leaves the signals up to ``cut`` unchanged."""
    strat = registry[name]
    params = grid_params(strat, GRIDS[name])
    _, sig = run_signals(strat, bars, params)
    other = gbm_bars(seed=cut + 1)
    changed = {}
    for key, a in bars.items():
        b = a.copy()
        b[cut + 1 :] = other[key][cut + 1 :] * 1.3
        b[cut + 3, 0] = np.nan
        changed[key] = b
    _, sig2 = run_signals(strat, changed, params)
    for key, arr in arrays(sig).items():
        np.testing.assert_array_equal(arrays(sig2)[key][: cut + 1], arr[: cut + 1], err_msg=key)
        # and the change does reach the later bars, for the strategies that react to prices
    if name != "buy_and_hold":
        assert any(not np.array_equal(arrays(sig2)[key][cut + 1 :], arr[cut + 1 :]) for key, arr in arrays(sig).items())


@pytest.mark.parametrize("name", BUILTINS)
def test_single_combo_grid_and_repeated_values(registry: dict[str, Strategy], bars, name: str) -> None:
    """A grid whose combinations are all equal computes each indicator once and repeats it."""
    strat = registry[name]
    defaults = {p.name: np.array([p.default] * 4) for p in strat.params}
    ctx, sig = run_signals(strat, bars, defaults)
    one_ctx, one = run_signals(strat, bars, {k: v[:1] for k, v in defaults.items()})
    assert ctx.indicator_calls == one_ctx.indicator_calls
    for key, arr in arrays(sig).items():
        want = np.repeat(arrays(one)[key], ctx.n_combos, axis=1) if defaults else arrays(one)[key]
        np.testing.assert_array_equal(arr, want, err_msg=key)


# --------------------------------------------------------------------------- the rules, one column


def cross_up(a: pd.Series, b: pd.Series | float) -> np.ndarray:
    b = b if isinstance(b, pd.Series) else pd.Series(b, index=a.index)
    return ((a > b) & (a.shift(1) < b.shift(1))).to_numpy()


def cross_down(a: pd.Series, b: pd.Series | float) -> np.ndarray:
    b = b if isinstance(b, pd.Series) else pd.Series(b, index=a.index)
    return cross_up(b, a)


def expected_rule(name: str, bars: dict[str, np.ndarray], p: dict) -> dict[str, np.ndarray]:
    """The documented rule of each strategy for one symbol (1-D bars) and one combination."""
    close = pd.Series(bars["close"])
    high = pd.Series(bars["high"])
    low = pd.Series(bars["low"])
    if name == "buy_and_hold":
        n = len(close)
        return {"entries": np.ones(n, bool), "exits": np.zeros(n, bool)}
    if name in ("sma_crossover", "ema_crossover", "macd_crossover"):
        if name == "sma_crossover":
            a = close.rolling(p["fast"]).mean()
            b = close.rolling(p["slow"]).mean()
        elif name == "ema_crossover":
            a = pd.Series(ind.ema(np, close.to_numpy(), p["fast"]))
            b = pd.Series(ind.ema(np, close.to_numpy(), p["slow"]))
        else:
            line, sig, _ = ind.macd(np, close.to_numpy(), p["fast"], p["slow"], p["signal"])
            a, b = pd.Series(line), pd.Series(sig)
        up, down = cross_up(a, b), cross_down(a, b)
        return {"entries": up, "exits": down, "short_entries": down, "short_exits": up}
    if name == "rsi_reversion":
        r = pd.Series(ind.rsi(np, close.to_numpy(), p["window"]))
        return {
            "entries": cross_up(r, p["lower"]),
            "exits": cross_up(r, p["upper"]),
            "short_entries": cross_down(r, p["upper"]),
            "short_exits": cross_down(r, p["lower"]),
        }
    if name == "bollinger_reversion":
        mid = close.rolling(p["window"]).mean()
        sd = close.rolling(p["window"]).std(ddof=0)
        return {
            "entries": cross_down(close, mid - p["k"] * sd),
            "exits": cross_up(close, mid),
            "short_entries": cross_up(close, mid + p["k"] * sd),
            "short_exits": cross_down(close, mid),
        }
    if name == "donchian_breakout":

        def hh(n):
            return high.rolling(n).max().shift(1)

        def ll(n):
            return low.rolling(n).min().shift(1)

        w, e = p["window"], p["exit_window"]
        return {
            "entries": (close > hh(w)).to_numpy(),
            "exits": (close < ll(e)).to_numpy(),
            "short_entries": (close < ll(w)).to_numpy(),
            "short_exits": (close > hh(e)).to_numpy(),
        }
    if name == "momentum":
        ret = close / close.shift(p["lookback"]) - 1
        th = p["threshold"]
        return {
            "entries": (ret > th).to_numpy(),
            "exits": (ret < th).to_numpy(),
            "short_entries": (ret < -th).to_numpy(),
            "short_exits": (ret > -th).to_numpy(),
        }
    raise AssertionError(name)


@pytest.mark.parametrize("name", BUILTINS)
def test_rule_matches_its_definition(registry: dict[str, Strategy], bars, name: str) -> None:
    strat = registry[name]
    params = grid_params(strat, GRIDS[name])
    ctx, sig = run_signals(strat, bars, params)
    full = arrays(sig)
    for s in range(ctx.n_symbols):
        one = {key: a[:, s] for key, a in bars.items()}
        for k in range(ctx.n_combos):
            p = {key: v[k].item() for key, v in params.items()}
            for key, want in expected_rule(name, one, p).items():
                got = full[key][:, s * ctx.n_combos + k]
                np.testing.assert_array_equal(got, want, err_msg=f"{key} symbol {s} params {p}")
