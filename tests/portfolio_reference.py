"""A slow, obviously-correct portfolio simulator written from docs/semantics.md ("Portfolio mode").

Plain Python over lists and dicts, one column at a time, no numba: the property tests in
tests/test_portfolio_reference.py check the compiled kernel (core/simulate/portfolio.py)
against it. Kept independent of the kernel's code on purpose (it shares only the rules).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class PortfolioOptions:
    init_cash: float = 100_000.0
    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0
    min_trade: float = 0.0
    fill: str = "close"          # "close" | "next_open"
    fractional: bool = True


@dataclass
class PortfolioResult:
    equity: list[float] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)
    costs: float = 0.0
    turnover: float = 0.0

    @property
    def final_equity(self) -> float:
        return self.equity[-1]


def simulate_portfolio_reference(
    open_: list[list[float]],
    close: list[list[float]],
    weights: list[list[float]],
    rebalance: list[bool],
    opt: PortfolioOptions,
) -> PortfolioResult:
    """One portfolio column: ``open_``/``close``/``weights`` are T lists of S floats."""
    n_sym = len(close[0])
    symbols = list(range(n_sym))
    cash = opt.init_cash
    position = {s: 0.0 for s in symbols}
    last_px = {s: math.nan for s in symbols}
    target = {s: math.nan for s in symbols}
    res = PortfolioResult()

    def marked(cash: float) -> float:
        v = cash
        for s in symbols:
            if position[s] != 0.0:
                v += position[s] * last_px[s]
        return v

    def rebalance_at(t: int, prices: list[float]) -> None:
        nonlocal cash
        value = marked(cash)
        if value <= 0.0:
            return
        deltas = {}
        for s in symbols:
            if math.isnan(prices[s]) or math.isnan(target[s]):
                continue
            units = max(target[s], 0.0) * value / prices[s]
            if not opt.fractional:
                units = math.floor(units)
            deltas[s] = units - position[s]
        sells = [s for s in symbols if s in deltas and deltas[s] < 0.0]
        buys = [s for s in symbols if s in deltas and deltas[s] > 0.0]
        for s in sells:
            p = prices[s]
            u = -deltas[s]
            if u * p < opt.min_trade:
                continue
            f = p * (1.0 - opt.slippage)
            cash += u * f * (1.0 - opt.fees) - opt.fixed_fee
            position[s] -= u
            record(t, s, -u, p, f)
        for s in buys:
            p = prices[s]
            u = deltas[s]
            f = p * (1.0 + opt.slippage)
            if u * f * (1.0 + opt.fees) + opt.fixed_fee > cash:
                u = (cash - opt.fixed_fee) / (f * (1.0 + opt.fees))
                if not opt.fractional:
                    u = math.floor(u)
            if u <= 0.0 or u * p < opt.min_trade:
                continue
            cash -= u * f * (1.0 + opt.fees) + opt.fixed_fee
            position[s] += u
            record(t, s, u, p, f)

    def record(t: int, s: int, signed_units: float, p: float, f: float) -> None:
        u = abs(signed_units)
        res.orders.append({"bar": t, "symbol": s, "units": signed_units, "price": p, "fill": f})
        res.costs += u * f * opt.fees + opt.fixed_fee + u * p * opt.slippage
        res.turnover += u * p

    pending = False
    for t in range(len(close)):
        for s in symbols:
            if not math.isnan(open_[t][s]):
                last_px[s] = open_[t][s]
        if pending:
            pending = False
            rebalance_at(t, open_[t])
        for s in symbols:
            if not math.isnan(close[t][s]):
                last_px[s] = close[t][s]
        if rebalance[t]:
            for s in symbols:
                if not math.isnan(weights[t][s]):
                    target[s] = weights[t][s]
            if opt.fill == "close":
                rebalance_at(t, close[t])
            else:
                pending = True
        res.equity.append(marked(cash))
    return res
