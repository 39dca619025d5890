"""gpu_backtest — the AlphaStrategyLab GPU Backtesting Server.

The small public API::

    from gpu_backtest import run_backtest
    result = run_backtest({"strategy": "sma_crossover", "params": {"fast": 10, "slow": 50}}, frame)
    result.table        # one row per (symbol × parameter combination), ranked
    result.details      # equity curve and trades of the top rows
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "BacktestSpec",
    "DataError",
    "GpuBacktestError",
    "Param",
    "Signals",
    "SpecError",
    "Strategy",
    "__version__",
    "run_backtest",
]

if TYPE_CHECKING:  # pragma: no cover
    from .api import run_backtest
    from .core.errors import DataError, GpuBacktestError, SpecError
    from .core.spec import BacktestSpec
    from .core.strategy import Param, Signals, Strategy

_LAZY = {
    "run_backtest": ".api",
    "BacktestSpec": ".core.spec",
    "Strategy": ".core.strategy",
    "Param": ".core.strategy",
    "Signals": ".core.strategy",
    "GpuBacktestError": ".core.errors",
    "SpecError": ".core.errors",
    "DataError": ".core.errors",
}


def __getattr__(name: str) -> Any:
    """Import the public names lazily, so ``import gpu_backtest`` stays cheap (no numba compile)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
