"""A slow, deliberately plain reference simulator written from docs/semantics.md.

This module is the second implementation of the simulation rules: the compiled kernel
(`core/simulate/kernel.py`) must agree with it on every input (see
tests/test_simulate_reference.py). It shares no code with the kernel and favours the most
literal reading of the specification over speed: a plain loop over bars, one small helper
per rule, dataclasses for positions and trades, and statistics computed from the finished
equity curve and trade list in the obvious (two-pass) way.

Where docs/semantics.md is ambiguous this module follows the kernel's reading; each such
place is marked "interpretation" below.

Entry point: :func:`simulate_reference`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LONG = "long"
SHORT = "short"

# actions a bar's signals (or a pending order) can ask for
OPEN_LONG = "open_long"
OPEN_SHORT = "open_short"
CLOSE = "close"


@dataclass
class Options:
    """The run options of docs/semantics.md, with the documented defaults."""

    init_cash: float = 100_000.0
    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0
    size: float = 1.0
    size_type: str = "percent"  # percent | value | units
    fractional: bool = True
    fill: str = "close"  # close | next_open
    direction: str = "long"  # long | short | both
    sl_stop: float = 0.0
    tp_stop: float = 0.0
    tsl_stop: float = 0.0
    risk_free: float = 0.0


@dataclass
class Position:
    """The open position: its direction, units and what is known about its entry."""

    direction: str
    units: float
    entry_idx: int
    base: float  # entry execution price before slippage (the stops' reference)
    entry_price: float  # fill price F after slippage
    entry_fees: float


@dataclass
class Trade:
    """One trade, from its entry fill to the fill that closed it (or the end: reason ``open``)."""

    entry_idx: int
    exit_idx: int
    direction: str
    size: float
    entry_price: float
    exit_price: float
    entry_fees: float
    exit_fees: float
    pnl: float
    ret: float
    exit_reason: str

    @property
    def bars(self) -> int:
        return self.exit_idx - self.entry_idx


@dataclass
class Stats:
    """The kernel's per-column accumulator quantities, computed directly from the results."""

    final_equity: float
    n_bars: int
    ret_mean: float
    ret_m2: float  # sum of squared deviations from the mean
    ret_var: float  # sample variance (NaN with fewer than two bars)
    down_sq: float
    omega_pos: float
    omega_neg: float
    max_dd: float
    max_dd_bars: int
    exposure_bars: int
    n_closed: int
    n_wins: int
    n_losses: int
    gross_profit: float
    gross_loss: float
    pnl_mean: float
    pnl_m2: float
    pnl_var: float
    best_ret: float
    worst_ret: float
    hold_bars: int
    n_open: int
    open_pnl: float


@dataclass
class Result:
    """Everything the reference simulator produces for one column."""

    equity: list[float]
    returns: list[float]
    positions: list[float]  # signed units held at the close of each bar
    trades: list[Trade] = field(default_factory=list)
    stats: Stats | None = None

    @property
    def closed_trades(self) -> list[Trade]:
        return [tr for tr in self.trades if tr.exit_reason != "open"]


# ---------------------------------------------------------------------------------------
# small rules
# ---------------------------------------------------------------------------------------


def is_valid_bar(o: float, h: float, lo: float, c: float) -> bool:
    """A bar is valid when none of its four prices is NaN."""
    return not (math.isnan(o) or math.isnan(h) or math.isnan(lo) or math.isnan(c))


def buy_fill(price: float, opts: Options) -> float:
    """Buys (open long, close short) fill above the price by the slippage."""
    return price * (1.0 + opts.slippage)


def sell_fill(price: float, opts: Options) -> float:
    """Sells (close long, open short) fill below the price by the slippage."""
    return price * (1.0 - opts.slippage)


def counted_signals(opts: Options, entry: bool, exit_: bool, short_entry: bool, short_exit: bool):
    """Which of a bar's four signals count, as (long entry, long exit, short entry, short exit).

    Interpretation (kernel's reading): the "both entries set" rule applies to the entries
    that survive the "entry and exit of a pair both set" rule.
    """
    if opts.direction == LONG:
        short_entry = False
        short_exit = False
    if opts.direction == SHORT:
        entry = False
        exit_ = False
    long_entry = entry and not exit_
    long_exit = exit_ and not entry
    s_entry = short_entry and not short_exit
    s_exit = short_exit and not short_entry
    if long_entry and s_entry:
        long_entry = False
        s_entry = False
    return long_entry, long_exit, s_entry, s_exit


def decide_action(position: Position | None, long_entry, long_exit, short_entry, short_exit):
    """The action the counted signals ask for against the position held now (or None)."""
    if position is None:
        if long_entry:
            return OPEN_LONG
        if short_entry:
            return OPEN_SHORT
        return None
    if position.direction == LONG:
        if short_entry:
            return OPEN_SHORT  # reverse
        if long_exit:
            return CLOSE
        return None
    if long_entry:
        return OPEN_LONG  # reverse
    if short_exit:
        return CLOSE
    return None


def running_extreme(position: Position, t: int, open_, high, low, close) -> float:
    """Long: max of base and the highs of the valid bars after the entry bar, before t.

    Short: the min of base and those bars' lows. Invalid bars are skipped altogether
    (nothing happens on them), even when the one price needed here is not NaN. The entry bar
    is the bar the entry filled on (with ``next_open``: the bar after the signal), so its
    own high/low never counts.
    """
    extreme = position.base
    for k in range(position.entry_idx + 1, t):
        if not is_valid_bar(open_[k], high[k], low[k], close[k]):
            continue
        if position.direction == LONG:
            extreme = max(extreme, high[k])
        else:
            extreme = min(extreme, low[k])
    return extreme


def stop_exit(position: Position, t: int, bars, opts: Options):
    """(price before slippage, reason) of the stop that fires on bar t, or None."""
    sl_on = opts.sl_stop > 0.0
    tsl_on = opts.tsl_stop > 0.0
    tp_on = opts.tp_stop > 0.0
    open_, high, low, close = bars
    o, h, lo = open_[t], high[t], low[t]
    extreme = running_extreme(position, t, open_, high, low, close)
    if position.direction == LONG:
        sl_level = position.base * (1.0 - opts.sl_stop)
        tsl_level = extreme * (1.0 - opts.tsl_stop)
        tp_level = position.base * (1.0 + opts.tp_stop)
        if sl_on or tsl_on:
            if sl_on and tsl_on:
                loss_level = max(sl_level, tsl_level)
                reason = "sl" if sl_level >= tsl_level else "tsl"
            elif sl_on:
                loss_level = sl_level
                reason = "sl"
            else:
                loss_level = tsl_level
                reason = "tsl"
            if lo <= loss_level:
                return min(o, loss_level), reason
        if tp_on and h >= tp_level:
            return max(o, tp_level), "tp"
        return None
    # short: the mirror image
    sl_level = position.base * (1.0 + opts.sl_stop)
    tsl_level = extreme * (1.0 + opts.tsl_stop)
    tp_level = position.base * (1.0 - opts.tp_stop)
    if sl_on or tsl_on:
        if sl_on and tsl_on:
            loss_level = min(sl_level, tsl_level)
            reason = "sl" if sl_level <= tsl_level else "tsl"
        elif sl_on:
            loss_level = sl_level
            reason = "sl"
        else:
            loss_level = tsl_level
            reason = "tsl"
        if h >= loss_level:
            return max(o, loss_level), reason
    if tp_on and lo <= tp_level:
        return min(o, tp_level), "tp"
    return None


# ---------------------------------------------------------------------------------------
# the account
# ---------------------------------------------------------------------------------------


class Account:
    """Cash, the open position and the trades closed so far."""

    def __init__(self, opts: Options):
        self.opts = opts
        self.cash = opts.init_cash
        self.position: Position | None = None
        self.trades: list[Trade] = []

    def signed_units(self) -> float:
        if self.position is None:
            return 0.0
        if self.position.direction == LONG:
            return self.position.units
        return -self.position.units

    def close(self, t: int, price: float, reason: str) -> None:
        """Close the open position at execution price ``price`` (before slippage)."""
        opts = self.opts
        p = self.position
        units = p.units
        if p.direction == LONG:
            fill = sell_fill(price, opts)
            self.cash += units * fill * (1.0 - opts.fees) - opts.fixed_fee
            pnl = (units * fill * (1.0 - opts.fees) - opts.fixed_fee) - (
                units * p.entry_price * (1.0 + opts.fees) + opts.fixed_fee
            )
        else:
            fill = buy_fill(price, opts)
            self.cash -= units * fill * (1.0 + opts.fees) + opts.fixed_fee
            pnl = (units * p.entry_price * (1.0 - opts.fees) - opts.fixed_fee) - (
                units * fill * (1.0 + opts.fees) + opts.fixed_fee
            )
        exit_fees = units * fill * opts.fees + opts.fixed_fee
        ret = pnl / (units * p.entry_price + p.entry_fees)
        self.trades.append(
            Trade(p.entry_idx, t, p.direction, units, p.entry_price, fill, p.entry_fees, exit_fees, pnl, ret, reason)
        )
        self.position = None

    def open(self, t: int, price: float, direction: str) -> None:
        """Open a position at execution price ``price`` (before slippage), if affordable."""
        opts = self.opts
        equity = self.cash  # flat here: any position was closed first
        if not equity > 0.0:
            return
        fill = buy_fill(price, opts) if direction == LONG else sell_fill(price, opts)
        if opts.size_type == "percent":
            budget = opts.size * equity
        elif opts.size_type == "value":
            budget = min(opts.size, equity)
        elif opts.size_type == "units":
            budget = equity
        else:
            raise ValueError(opts.size_type)
        units = (budget - opts.fixed_fee) / (fill * (1.0 + opts.fees))
        if opts.size_type == "units":
            units = min(opts.size, units)
        if not opts.fractional:
            # interpretation: whole units are taken after the ``units`` cap (2.7 → 2)
            units = float(math.floor(units))
        if not units > 0.0:
            return
        entry_fees = units * fill * opts.fees + opts.fixed_fee
        if direction == LONG:
            self.cash -= units * fill * (1.0 + opts.fees) + opts.fixed_fee
        else:
            self.cash += units * fill * (1.0 - opts.fees) - opts.fixed_fee
        self.position = Position(direction, units, t, price, fill, entry_fees)

    def execute(self, t: int, action: str, price: float) -> None:
        """Carry out a signal action (or pending order) at execution price ``price``."""
        held = None if self.position is None else self.position.direction
        if action == CLOSE:
            self.close(t, price, "signal")
        elif action == OPEN_LONG:
            if held == SHORT:
                self.close(t, price, "reverse")
            self.open(t, price, LONG)
        elif action == OPEN_SHORT:
            if held == LONG:
                self.close(t, price, "reverse")
            self.open(t, price, SHORT)


# ---------------------------------------------------------------------------------------
# the simulation
# ---------------------------------------------------------------------------------------


def simulate_reference(
    open_, high, low, close, entries, exits, short_entries, short_exits, opts: Options | None = None, **kw
) -> Result:
    """Simulate one column; prices and signals are sequences of equal length T.

    Options come as an :class:`Options` or as keyword arguments (or both: keywords win).
    """
    if opts is None:
        opts = Options()
    if kw:
        opts = Options(**{**opts.__dict__, **kw})
    o_ = [float(x) for x in open_]
    h_ = [float(x) for x in high]
    l_ = [float(x) for x in low]
    c_ = [float(x) for x in close]
    n = len(c_)
    account = Account(opts)
    pending = None
    equity_curve: list[float] = []
    positions: list[float] = []
    last_valid = -1
    prev_equity = opts.init_cash

    for t in range(n):
        o, h, lo, c = o_[t], h_[t], l_[t], c_[t]
        if not is_valid_bar(o, h, lo, c):
            equity_curve.append(prev_equity)  # nothing happens; equity carried
            # interpretation: a position held through an invalid bar counts as exposure
            positions.append(account.signed_units())
            continue
        # 1. pending order at this bar's open
        if pending is not None:
            account.execute(t, pending, o)
            pending = None
        # 2. stops of a position entered on an earlier bar
        if account.position is not None and account.position.entry_idx < t:
            hit = stop_exit(account.position, t, (o_, h_, l_, c_), opts)
            if hit is not None:
                price, reason = hit
                account.close(t, price, reason)
        # 3. signals
        counted = counted_signals(
            opts, bool(entries[t]), bool(exits[t]), bool(short_entries[t]), bool(short_exits[t])
        )
        action = decide_action(account.position, *counted)
        if action is not None:
            if opts.fill == "close":
                account.execute(t, action, c)
            elif opts.fill == "next_open":
                pending = action
            else:
                raise ValueError(opts.fill)
        # 4. mark to market
        equity = account.cash + account.signed_units() * c
        equity_curve.append(equity)
        positions.append(account.signed_units())
        prev_equity = equity
        last_valid = t

    trades = list(account.trades)
    if account.position is not None:
        p = account.position
        last_close = c_[last_valid]
        if p.direction == LONG:
            pnl = p.units * last_close - (p.units * p.entry_price + p.entry_fees)
        else:
            pnl = (p.units * p.entry_price - p.entry_fees) - p.units * last_close
        # interpretation: the open trade's return uses the closed trades' formula
        ret = pnl / (p.units * p.entry_price + p.entry_fees)
        trades.append(
            Trade(p.entry_idx, last_valid, p.direction, p.units, p.entry_price, last_close, p.entry_fees,
                  0.0, pnl, ret, "open")
        )

    returns = bar_returns(equity_curve, opts.init_cash)
    result = Result(equity_curve, returns, positions, trades)
    result.stats = compute_stats(result, opts)
    return result


def bar_returns(equity: list[float], init_cash: float) -> list[float]:
    """r_t = equity_t / equity_{t-1} - 1 with equity_{-1} = init_cash; 0 after ruin."""
    out = []
    prev = init_cash
    for eq in equity:
        out.append(eq / prev - 1.0 if prev > 0.0 else 0.0)
        prev = eq
    return out


def compute_stats(result: Result, opts: Options) -> Stats:
    """The accumulator quantities, each computed the obvious way from the full results."""
    rets = result.returns
    n = len(rets)
    rf = opts.risk_free
    ret_mean = sum(rets) / n if n else 0.0
    ret_m2 = sum((r - ret_mean) ** 2 for r in rets)
    ret_var = ret_m2 / (n - 1) if n > 1 else math.nan
    down_sq = sum(min(r - rf, 0.0) ** 2 for r in rets)
    omega_pos = sum(max(r - rf, 0.0) for r in rets)
    omega_neg = sum(max(rf - r, 0.0) for r in rets)

    peak = opts.init_cash
    max_dd = 0.0
    run = 0
    longest = 0
    for eq in result.equity:
        peak = max(peak, eq)
        max_dd = min(max_dd, eq / peak - 1.0)
        run = run + 1 if eq < peak else 0
        longest = max(longest, run)

    exposure = sum(1 for u in result.positions if u != 0.0)

    closed = result.closed_trades
    pnls = [tr.pnl for tr in closed]
    k = len(pnls)
    pnl_mean = sum(pnls) / k if k else 0.0
    pnl_m2 = sum((p - pnl_mean) ** 2 for p in pnls)
    open_trades = [tr for tr in result.trades if tr.exit_reason == "open"]
    return Stats(
        final_equity=result.equity[-1] if result.equity else opts.init_cash,
        n_bars=n,
        ret_mean=ret_mean,
        ret_m2=ret_m2,
        ret_var=ret_var,
        down_sq=down_sq,
        omega_pos=omega_pos,
        omega_neg=omega_neg,
        max_dd=max_dd,
        max_dd_bars=longest,
        exposure_bars=exposure,
        n_closed=k,
        n_wins=sum(1 for p in pnls if p > 0.0),
        n_losses=sum(1 for p in pnls if p < 0.0),
        gross_profit=sum(p for p in pnls if p > 0.0),
        gross_loss=sum(p for p in pnls if p < 0.0),
        pnl_mean=pnl_mean,
        pnl_m2=pnl_m2,
        pnl_var=pnl_m2 / (k - 1) if k > 1 else math.nan,
        best_ret=max(tr.ret for tr in closed) if closed else math.nan,
        worst_ret=min(tr.ret for tr in closed) if closed else math.nan,
        hold_bars=sum(tr.bars for tr in closed),
        n_open=len(open_trades),
        open_pnl=open_trades[0].pnl if open_trades else 0.0,
    )
