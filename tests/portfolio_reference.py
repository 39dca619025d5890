"""A slow, obviously-correct portfolio simulator written from docs/semantics.md ("Portfolio mode").

Plain Python over lists and dicts, one column at a time, no numba: the property tests in
tests/test_portfolio_reference.py check the compiled kernel (core/simulate/portfolio.py)
against it. Kept independent of the kernel's code on purpose (it shares only the rules and
the options dataclass `PortfolioOptions`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpu_backtest.core.simulate.portfolio_options import PortfolioOptions

__all__ = ["PortfolioOptions", "PortfolioResult", "simulate_portfolio_reference"]


@dataclass
class PortfolioResult:
    equity: list[float] = field(default_factory=list)
    orders: list[dict] = field(default_factory=list)   # bar, symbol, units (signed), price (F), costs, reason, value
    trades: list[dict] = field(default_factory=list)   # symbol, entry_bar, exit_bar, pnl, ret, bars, open
    holdings: list[int] = field(default_factory=list)  # non-zero positions after each bar's mark
    gross: list[float] = field(default_factory=list)   # Σ|position × last_px| after each mark
    net: list[float] = field(default_factory=list)     # Σ position × last_px after each mark
    costs: float = 0.0
    turnover: float = 0.0
    turnover_rel: float = 0.0

    @property
    def final_equity(self) -> float:
        return self.equity[-1]

    @property
    def closed(self) -> list[dict]:
        return [tr for tr in self.trades if not tr["open"]]

    @property
    def open_trades(self) -> list[dict]:
        return [tr for tr in self.trades if tr["open"]]


def _round_toward_zero(x: float) -> float:
    return float(math.floor(x)) if x >= 0.0 else -float(math.floor(-x))


def simulate_portfolio_reference(
    open_: list[list[float]],
    close: list[list[float]],
    weights: list[list[float]],
    rebalance: list[int],
    ended: list[int],
    opt: PortfolioOptions,
) -> PortfolioResult:
    """One portfolio column: ``open_``/``close`` are T lists of S floats; ``weights`` R lists of S
    floats (row r = the r-th rebalance's weights); ``rebalance`` T ints (weights row or -1);
    ``ended`` S ints (delisting bar or -1)."""
    n_sym = len(close[0])
    symbols = list(range(n_sym))
    cash = opt.init_cash
    position = {s: 0.0 for s in symbols}
    last_px = {s: math.nan for s in symbols}
    target = {s: math.nan for s in symbols}
    avg_px = {s: math.nan for s in symbols}
    trade: dict[int, dict | None] = {s: None for s in symbols}  # the open position trade per symbol
    res = PortfolioResult()
    prev_equity = opt.init_cash

    def dead(s: int, t: int) -> bool:
        return ended[s] >= 0 and t > ended[s]

    def marked() -> float:
        v = cash
        for s in symbols:
            if position[s] != 0.0:
                v += position[s] * last_px[s]
        return v

    def fill(t: int, s: int, signed_units: float, p: float, reason: str, value: float) -> None:
        """Execute one order of ``signed_units`` at price ``p``: cash, position, trade, record."""
        nonlocal cash
        u = abs(signed_units)
        if signed_units > 0:
            f = p * (1.0 + opt.slippage)
            flow = -(u * f * (1.0 + opt.fees) + opt.fixed_fee)
        else:
            f = p * (1.0 - opt.slippage)
            flow = u * f * (1.0 - opt.fees) - opt.fixed_fee
        cash += flow
        old = position[s]
        new = old + u if signed_units > 0 else old - u
        position[s] = new
        entry_cost = u * f * (1.0 + opt.fees) + opt.fixed_fee
        if old == 0.0:
            trade[s] = {"symbol": s, "entry_bar": t, "flow": flow, "entry_cost": entry_cost}
            avg_px[s] = p
        elif abs(new) > abs(old) and (new > 0) == (old > 0):  # an add
            trade[s]["flow"] += flow
            trade[s]["entry_cost"] += entry_cost
            avg_px[s] = (abs(old) * avg_px[s] + u * p) / abs(new)
        else:
            flips = new != 0.0 and (new > 0) != (old > 0)
            closing_units = abs(old) if flips else u
            trade[s]["flow"] += flow * (closing_units / u)
            if new == 0.0 or flips:
                tr = trade[s]
                pnl = tr["flow"]
                res.trades.append({"symbol": s, "entry_bar": tr["entry_bar"], "exit_bar": t, "pnl": pnl,
                                   "ret": pnl / tr["entry_cost"], "bars": t - tr["entry_bar"], "open": False})
                trade[s] = None
                avg_px[s] = math.nan
            if flips:
                opening = u - closing_units
                trade[s] = {"symbol": s, "entry_bar": t, "flow": flow * (opening / u),
                            "entry_cost": opening * f * (1.0 + opt.fees) + opt.fixed_fee * (opening / u)}
                avg_px[s] = p
        cost = u * f * opt.fees + opt.fixed_fee + u * p * opt.slippage
        res.orders.append({"bar": t, "symbol": s, "units": signed_units, "price": f, "costs": cost,
                           "reason": reason, "px": p})
        res.costs += cost
        res.turnover += u * p
        if value > 0.0:
            res.turnover_rel += u * p / value

    def rebalance_at(t: int, prices: list[float]) -> None:
        nonlocal cash
        value = marked()
        if value <= 0.0:
            return
        deltas = {}
        keys = {}
        for s in symbols:
            if math.isnan(prices[s]) or math.isnan(target[s]) or dead(s, t):
                continue
            w = target[s] if opt.shorts else max(target[s], 0.0)
            units = w * value / prices[s]
            if not opt.fractional:
                units = _round_toward_zero(units)
            deltas[s] = units - position[s]
            keys[s] = w * value - position[s] * prices[s]  # vectorbt's approximate order value
        # call order: ascending key (sells, most negative first, then buys from the smallest), ties by symbol
        for s in sorted((s for s in deltas if deltas[s] != 0.0), key=lambda s: (keys[s], s)):
            p = prices[s]
            if deltas[s] < 0.0:
                u = -deltas[s]
                if u * p < opt.min_trade:
                    continue
                fill(t, s, -u, p, "rebalance", value)
                continue
            u = deltas[s]
            f = p * (1.0 + opt.slippage)
            if u * f * (1.0 + opt.fees) + opt.fixed_fee > cash:
                u = (cash - opt.fixed_fee) / (f * (1.0 + opt.fees))
                if not opt.fractional:
                    u = math.floor(u)
            if u <= 0.0 or u * p < opt.min_trade:
                continue
            fill(t, s, u, p, "rebalance", value)

    def forced_exits(t: int, exits: dict[int, str]) -> None:
        """Close the positions in ``exits`` (symbol → reason): sells first, then buys."""
        for s in symbols:
            if s in exits and position[s] > 0.0:
                fill(t, s, -position[s], last_px[s], exits[s], prev_equity)
        for s in symbols:
            if s in exits and position[s] < 0.0:
                fill(t, s, -position[s], last_px[s], exits[s], prev_equity)

    pending = False
    for t in range(len(close)):
        # 1. open
        for s in symbols:
            if not math.isnan(open_[t][s]):
                last_px[s] = open_[t][s]
        if pending:
            pending = False
            rebalance_at(t, open_[t])
        # 2. close, then stops
        for s in symbols:
            if not math.isnan(close[t][s]):
                last_px[s] = close[t][s]
        stops = {}
        for s in symbols:
            q, p = position[s], close[t][s]
            if q == 0.0 or math.isnan(p):
                continue
            if q > 0:
                if opt.sl_stop > 0 and p <= avg_px[s] * (1 - opt.sl_stop):
                    stops[s] = "stop_loss"
                elif opt.tp_stop > 0 and p >= avg_px[s] * (1 + opt.tp_stop):
                    stops[s] = "take_profit"
            else:
                if opt.sl_stop > 0 and p >= avg_px[s] * (1 + opt.sl_stop):
                    stops[s] = "stop_loss"
                elif opt.tp_stop > 0 and p <= avg_px[s] * (1 - opt.tp_stop):
                    stops[s] = "take_profit"
        for s in stops:
            target[s] = 0.0
        forced_exits(t, stops)
        # 3. rebalance
        if rebalance[t] >= 0:
            row = weights[rebalance[t]]
            for s in symbols:
                if not math.isnan(row[s]) and not dead(s, t):
                    target[s] = row[s]
            if opt.fill == "close":
                rebalance_at(t, close[t])
            else:
                pending = True
        # 4. delistings
        delisted = {}
        for s in symbols:
            if ended[s] == t:
                target[s] = 0.0
                if position[s] != 0.0:
                    delisted[s] = "delisted"
        forced_exits(t, delisted)
        # 5. mark
        equity = marked()
        res.equity.append(equity)
        values = [position[s] * last_px[s] for s in symbols if position[s] != 0.0]
        res.holdings.append(len(values))
        res.gross.append(sum(abs(v) for v in values))
        res.net.append(sum(values))
        prev_equity = equity
    for s in symbols:
        if position[s] != 0.0:
            tr = trade[s]
            pnl = tr["flow"] + position[s] * last_px[s]
            res.trades.append({"symbol": s, "entry_bar": tr["entry_bar"], "exit_bar": len(close) - 1, "pnl": pnl,
                               "ret": pnl / tr["entry_cost"], "bars": len(close) - 1 - tr["entry_bar"],
                               "open": True})
    return res
