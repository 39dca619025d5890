"""Expression forms of the built-in strategies (shared by the parity tests, CPU and CUDA simulator)."""

from __future__ import annotations

from typing import Any


def _p(kind: str, default: float, lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    return {"type": kind, "default": default, "min": lo, "max": hi}


def crossover(fn: str) -> dict[str, Any]:
    up = f"cross_above({fn}(close, fast), {fn}(close, slow))"
    down = f"cross_below({fn}(close, fast), {fn}(close, slow))"
    return {"name": f"expr_{fn}", "signals": {"entry": up, "exit": down, "short_entry": down, "short_exit": up},
            "params": {"fast": _p("int", 10, 1), "slow": _p("int", 50, 2)}, "constraint": "fast < slow"}


MACD_UP = "cross_above(macd_line(close, fast, slow), macd_signal(close, fast, slow, signal))"
MACD_DOWN = "cross_below(macd_line(close, fast, slow), macd_signal(close, fast, slow, signal))"

#: built-in name → (its expression form, a grid that exercises it)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "sma_crossover": (crossover("sma"), {"fast": [3, 5, 10], "slow": [8, 12, 30]}),
    "ema_crossover": (crossover("ema"), {"fast": [3, 6], "slow": [9, 20]}),
    "macd_crossover": ({
        "signals": {"entry": MACD_UP, "exit": MACD_DOWN, "short_entry": MACD_DOWN, "short_exit": MACD_UP},
        "params": {"fast": _p("int", 12, 1), "slow": _p("int", 26, 2), "signal": _p("int", 9, 1)},
        "constraint": "fast < slow"}, {"fast": [4, 8], "slow": [12, 20], "signal": [3, 5]}),
    "rsi_reversion": ({
        "signals": {"entry": "cross_above(rsi(close, window), lower)",
                    "exit": "cross_above(rsi(close, window), upper)",
                    "short_entry": "cross_below(rsi(close, window), upper)",
                    "short_exit": "cross_below(rsi(close, window), lower)"},
        "params": {"window": _p("int", 14, 2), "lower": _p("float", 30.0, 0, 100),
                   "upper": _p("float", 70.0, 0, 100)}},
        {"window": [5, 9], "lower": [30.0, 40.0], "upper": [60.0, 70.0]}),
    "bollinger_reversion": ({
        "signals": {"entry": "cross_below(close, bb_lower(close, window, k))",
                    "exit": "cross_above(close, bb_mid(close, window))",
                    "short_entry": "cross_above(close, bb_upper(close, window, k))",
                    "short_exit": "cross_below(close, bb_mid(close, window))"},
        "params": {"window": _p("int", 20, 2), "k": _p("float", 2.0, 0.1, 10.0)}},
        {"window": [10, 20], "k": [1.0, 1.5, 2.5]}),
    "donchian_breakout": ({
        "signals": {"entry": "close > shift(highest(high, window), 1)",
                    "exit": "close < shift(lowest(low, exit_window), 1)",
                    "short_entry": "close < shift(lowest(low, window), 1)",
                    "short_exit": "close > shift(highest(high, exit_window), 1)"},
        "params": {"window": _p("int", 20, 1), "exit_window": _p("int", 10, 1)}},
        {"window": [10, 20], "exit_window": [5, 10]}),
    "momentum": ({
        "signals": {"entry": "pct_change(close, lookback) > threshold",
                    "exit": "pct_change(close, lookback) < threshold",
                    "short_entry": "pct_change(close, lookback) < -threshold",
                    "short_exit": "pct_change(close, lookback) > -threshold"},
        "params": {"lookback": _p("int", 20, 1), "threshold": _p("float", 0.0, 0.0, 10.0)}},
        {"lookback": [5, 20], "threshold": [0.0, 0.02]}),
}
