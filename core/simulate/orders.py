"""The cost model of one fill (docs/semantics.md, "Fills and costs"), as small shared functions.

Each is a numba ``njit(inline="always")`` function of scalars, inlined into its caller at the
numba IR level: the CPU build (``njit``) and the GPU build (``numba.cuda``, where the CUDA
target accepts CPU-jitted functions) of the portfolio kernel (`portfolio.py`) share this one
definition, and the PTX of the device function needs no separate device-function call.
`P` is the execution price before slippage, `F` the fill price after it.
"""

from __future__ import annotations

from numba import njit


@njit(inline="always", cache=False)
def buy_fill_price(p: float, slippage: float) -> float:
    """`F` of a buy: ``P × (1 + slippage)``."""
    return p * (1.0 + slippage)


@njit(inline="always", cache=False)
def sell_fill_price(p: float, slippage: float) -> float:
    """`F` of a sell: ``P × (1 − slippage)``."""
    return p * (1.0 - slippage)


@njit(inline="always", cache=False)
def buy_cash(units: float, f: float, fees: float, fixed_fee: float) -> float:
    """Cash a buy of ``units`` at ``f`` pays: ``units × F × (1 + fees) + fixed_fee`` (also an entry's cost)."""
    return units * f * (1.0 + fees) + fixed_fee


@njit(inline="always", cache=False)
def sell_cash(units: float, f: float, fees: float, fixed_fee: float) -> float:
    """Cash a sell of ``units`` at ``f`` brings: ``units × F × (1 − fees) − fixed_fee``."""
    return units * f * (1.0 - fees) - fixed_fee


@njit(inline="always", cache=False)
def affordable_units(cash: float, f: float, fees: float, fixed_fee: float) -> float:
    """The most units ``cash`` buys at ``f``, fees included: ``(cash − fixed_fee) / (F × (1 + fees))``."""
    return (cash - fixed_fee) / (f * (1.0 + fees))


@njit(inline="always", cache=False)
def fill_costs(units: float, p: float, f: float, fees: float, fixed_fee: float, slippage: float) -> float:
    """Fees plus slippage of one fill: ``units × F × fees + fixed_fee + units × P × slippage``."""
    return units * f * fees + fixed_fee + units * p * slippage
