"""The per-column portfolio simulation, written once as plain numba-compatible Python.

`simulate_column` is compiled twice: by `cpu.py` with numba ``njit`` (a ``prange`` loop over
columns) and by `cuda.py` with ``numba.cuda.jit(device=True)`` (one GPU thread per column).
It therefore allocates nothing, uses only scalars, ``math`` and array indexing, and reads its
options from the fixed layouts in `layout.py` (filled by `sim_options.SimOptions.arrays`).
Fill prices, sizing and fees come from the shared cost functions of `orders.py`, the
closed-trade statistics from `accumulators.py`; the portfolio kernel uses the same ones.
docs/semantics.md is its specification.
"""

import math

from .accumulators import TS_N_FIELDS, trade_stats_add, trade_stats_new
from .layout import (
    A_DOWN_SQ,
    A_EXPOSURE_BARS,
    A_FINAL_EQUITY,
    A_MAX_DD,
    A_MAX_DD_BARS,
    A_N_BARS,
    A_N_CLOSED,
    A_N_OPEN,
    A_OMEGA_NEG,
    A_OMEGA_POS,
    A_OPEN_PNL,
    A_RET_M2,
    A_RET_MEAN,
    BK_N,
    BK_N_CLOSED,
    BK_PNL,
    BK_SUM,
    BK_SUM2,
    BK_SUM3,
    BK_SUM4,
    DIR_LONG,
    DIR_SHORT,
    F_FEES,
    F_FIXED_FEE,
    F_INIT_CASH,
    F_RISK_FREE,
    F_SIZE,
    F_SL_STOP,
    F_SLIPPAGE,
    F_TP_STOP,
    F_TSL_STOP,
    FILL_CLOSE,
    I_DIRECTION,
    I_FILL,
    I_FRACTIONAL,
    I_FUSED,
    I_N_BLOCKS,
    I_N_TAIL,
    I_RECORD,
    I_SIZE_TYPE,
    I_WANT_RETURNS,
    N_BLOCK_ACC,
    R_OPEN,
    R_REVERSE,
    R_SIGNAL,
    R_SL,
    R_TP,
    R_TSL,
    SIZE_PERCENT,
    SIZE_UNITS,
    SIZE_VALUE,
    T_DIRECTION,
    T_ENTRY_FEES,
    T_ENTRY_IDX,
    T_ENTRY_PRICE,
    T_EXIT_FEES,
    T_EXIT_IDX,
    T_EXIT_PRICE,
    T_EXIT_REASON,
    T_PNL,
    T_RETURN,
    T_SIZE,
)
from .orders import (
    affordable_units,
    buy_fill_price,
    buy_outlay,
    fill_fees,
    sell_fill_price,
    sell_proceeds,
)

# actions decided by the signals of a bar
ACT_NONE = 0
ACT_LONG = 1
ACT_SHORT = 2
ACT_CLOSE = 3


def simulate_column(
    c,
    open_,
    high,
    low,
    close,
    sym,
    entries,
    exits,
    short_entries,
    short_exits,
    fopts,
    iopts,
    acc,
    returns_out,
    equity_out,
    trades_out,
    ntrades_out,
    blocks_out,
    tails_out,
    fused_bank,
    fused_idx,
    fused_w,
):
    """Simulate column ``c`` over all bars; write its accumulators (and records) in place.

    Prices are (T, S) arrays indexed by ``sym[c]``; signals are (T, C) arrays indexed by ``c``
    (the short pair may be (1, 1) dummies when the direction is ``long``).
    ``returns_out``/``equity_out`` are (T, C) and ``trades_out`` is (C, max_trades, N_TFIELDS)
    when the corresponding iopts flag is set, else (1, 1) / (1, 1, 1) dummies; ``blocks_out``
    is (C, B, N_BLOCK_ACC) when ``iopts[I_N_BLOCKS]`` = B > 0 (per-block sums: bar ``t`` is in
    block ``b`` when ⌊b·T/B⌋ <= t < ⌊(b+1)·T/B⌋; a closed trade counts in its exit bar's block),
    else a (1, 1, 1) dummy.
    """
    s = sym[c]
    n_bars = close.shape[0]
    init_cash = fopts[F_INIT_CASH]
    fees = fopts[F_FEES]
    fixed_fee = fopts[F_FIXED_FEE]
    slippage = fopts[F_SLIPPAGE]
    size = fopts[F_SIZE]
    sl_stop = fopts[F_SL_STOP]
    tp_stop = fopts[F_TP_STOP]
    tsl_stop = fopts[F_TSL_STOP]
    rf = fopts[F_RISK_FREE]
    fill_close = iopts[I_FILL] == FILL_CLOSE
    direction = iopts[I_DIRECTION]
    size_type = iopts[I_SIZE_TYPE]
    fractional = iopts[I_FRACTIONAL] != 0
    want_returns = iopts[I_WANT_RETURNS] != 0
    record = iopts[I_RECORD] != 0
    use_long = direction != DIR_SHORT
    use_short = direction != DIR_LONG
    max_trades = trades_out.shape[1]

    cash = init_cash
    pos = 0.0
    entry_idx = -1
    entry_base = 0.0
    entry_fill = 0.0
    entry_fees = 0.0
    extreme = 0.0
    pending = ACT_NONE
    last_close = math.nan
    last_valid = -1

    prev_eq = init_cash
    peak_eq = init_cash
    underwater = 0
    max_underwater = 0
    max_dd = 0.0
    n_ret = 0
    ret_mean = 0.0
    ret_m2 = 0.0
    down_sq = 0.0
    omega_pos = 0.0
    omega_neg = 0.0
    exposure = 0

    stats = trade_stats_new()
    n_trades = 0

    n_tail = iopts[I_N_TAIL]
    fused = iopts[I_FUSED] != 0
    root0 = root1 = math.inf  # the tail heaps' roots
    below = 0  # the fused form: bit q set when signal q's A < B at the previous bar
    f_le = f_lx = f_se = f_sx = False

    # per-block sums, kept in registers and stored once per block
    n_blocks = iopts[I_N_BLOCKS]
    blk = 0
    blk_end = n_bars
    if n_blocks > 0:
        blk_end = n_bars // n_blocks
        for b in range(n_blocks):
            for k in range(N_BLOCK_ACC):
                blocks_out[c, b, k] = 0.0
    b_n = 0.0
    b_s1 = 0.0
    b_s2 = 0.0
    b_s3 = 0.0
    b_s4 = 0.0
    b_closed = 0.0
    b_pnl = 0.0

    for t in range(n_bars):
        if n_blocks > 0:
            while t >= blk_end and blk < n_blocks - 1:
                blk += 1
                blk_end = ((blk + 1) * n_bars) // n_blocks
        if fused:  # signal q fires when A crosses above B (NaN compares false)
            fired = 0
            for q in range(4):
                ia = fused_idx[c, 4 * q]
                if ia < 0:
                    continue
                a = fused_bank[ia, t, s]
                j = fused_idx[c, 4 * q + 1]
                if j >= 0:
                    a = a + fused_w[c, 2 * q] * fused_bank[j, t, s]
                b = fused_bank[fused_idx[c, 4 * q + 2], t, s]
                j = fused_idx[c, 4 * q + 3]
                if j >= 0:
                    b = b + fused_w[c, 2 * q + 1] * fused_bank[j, t, s]
                if a > b and (below >> q) & 1:
                    fired |= 1 << q
                if a < b:
                    below |= 1 << q
                else:
                    below &= ~(1 << q)
            f_le = (fired & 1) != 0
            f_lx = (fired & 2) != 0
            f_se = (fired & 4) != 0
            f_sx = (fired & 8) != 0
        o = open_[t, s]
        h = high[t, s]
        lo = low[t, s]
        cl = close[t, s]
        valid = not (math.isnan(o) or math.isnan(h) or math.isnan(lo) or math.isnan(cl))
        if valid:
            # up to three fills per bar: pending order, stop, signal. Each pass of this loop
            # handles one (action, price, reason) triple so the fill code is written once.
            for phase in range(3):
                act = ACT_NONE
                price = 0.0
                reason = R_SIGNAL
                if phase == 0:
                    if pending != ACT_NONE:
                        act = pending
                        price = o
                        pending = ACT_NONE
                elif phase == 1:
                    if pos != 0.0 and entry_idx < t:
                        if pos > 0.0:
                            loss_level = -math.inf
                            reason = R_SL
                            if sl_stop > 0.0:
                                loss_level = entry_base * (1.0 - sl_stop)
                            if tsl_stop > 0.0:
                                tsl_level = extreme * (1.0 - tsl_stop)
                                if tsl_level > loss_level:
                                    loss_level = tsl_level
                                    reason = R_TSL
                            if (sl_stop > 0.0 or tsl_stop > 0.0) and lo <= loss_level:
                                act = ACT_CLOSE
                                price = o if o < loss_level else loss_level
                            elif tp_stop > 0.0:
                                tp_level = entry_base * (1.0 + tp_stop)
                                if h >= tp_level:
                                    act = ACT_CLOSE
                                    price = o if o > tp_level else tp_level
                                    reason = R_TP
                        else:
                            loss_level = math.inf
                            reason = R_SL
                            if sl_stop > 0.0:
                                loss_level = entry_base * (1.0 + sl_stop)
                            if tsl_stop > 0.0:
                                tsl_level = extreme * (1.0 + tsl_stop)
                                if tsl_level < loss_level:
                                    loss_level = tsl_level
                                    reason = R_TSL
                            if (sl_stop > 0.0 or tsl_stop > 0.0) and h >= loss_level:
                                act = ACT_CLOSE
                                price = o if o > loss_level else loss_level
                            elif tp_stop > 0.0:
                                tp_level = entry_base * (1.0 - tp_stop)
                                if lo <= tp_level:
                                    act = ACT_CLOSE
                                    price = o if o < tp_level else tp_level
                                    reason = R_TP
                        if act == ACT_NONE:
                            if pos > 0.0:
                                if h > extreme:
                                    extreme = h
                            elif lo < extreme:
                                extreme = lo
                else:
                    if fused:
                        s_le, s_lx, s_se, s_sx = f_le, f_lx, f_se, f_sx
                    else:
                        s_le = use_long and entries[t, c]
                        s_lx = use_long and exits[t, c]
                        s_se = use_short and short_entries[t, c]
                        s_sx = use_short and short_exits[t, c]
                    le = use_long and s_le and not s_lx
                    lx = use_long and s_lx and not s_le
                    se = use_short and s_se and not s_sx
                    sx = use_short and s_sx and not s_se
                    if le and se:
                        le = False
                        se = False
                    if pos == 0.0:
                        if le:
                            act = ACT_LONG
                        elif se:
                            act = ACT_SHORT
                    elif pos > 0.0:
                        if se:
                            act = ACT_SHORT
                        elif lx:
                            act = ACT_CLOSE
                    else:
                        if le:
                            act = ACT_LONG
                        elif sx:
                            act = ACT_CLOSE
                    if act != ACT_NONE and not fill_close:
                        pending = act
                        act = ACT_NONE
                    price = cl
                if act == ACT_NONE:
                    continue

                # ---- close the open position if the action requires it ----
                if pos != 0.0 and (
                    act == ACT_CLOSE or (act == ACT_LONG and pos < 0.0) or (act == ACT_SHORT and pos > 0.0)
                ):
                    if act != ACT_CLOSE:
                        reason = R_REVERSE
                    if pos > 0.0:
                        units = pos
                        fill = sell_fill_price(price, slippage)
                        exit_fees = fill_fees(units, fill, fees, fixed_fee)
                        cash += sell_proceeds(units, fill, exit_fees)
                        pnl = sell_proceeds(units, fill, exit_fees) - buy_outlay(units, entry_fill, entry_fees)
                        tdir = 1.0
                    else:
                        units = -pos
                        fill = buy_fill_price(price, slippage)
                        exit_fees = fill_fees(units, fill, fees, fixed_fee)
                        cash -= buy_outlay(units, fill, exit_fees)
                        pnl = sell_proceeds(units, entry_fill, entry_fees) - buy_outlay(units, fill, exit_fees)
                        tdir = -1.0
                    tret = pnl / buy_outlay(units, entry_fill, entry_fees)
                    if record and n_trades < max_trades:
                        trades_out[c, n_trades, T_ENTRY_IDX] = entry_idx
                        trades_out[c, n_trades, T_EXIT_IDX] = t
                        trades_out[c, n_trades, T_DIRECTION] = tdir
                        trades_out[c, n_trades, T_SIZE] = units
                        trades_out[c, n_trades, T_ENTRY_PRICE] = entry_fill
                        trades_out[c, n_trades, T_EXIT_PRICE] = fill
                        trades_out[c, n_trades, T_ENTRY_FEES] = entry_fees
                        trades_out[c, n_trades, T_EXIT_FEES] = exit_fees
                        trades_out[c, n_trades, T_PNL] = pnl
                        trades_out[c, n_trades, T_RETURN] = tret
                        trades_out[c, n_trades, T_EXIT_REASON] = reason
                    n_trades += 1
                    stats = trade_stats_add(stats, pnl, tret, t - entry_idx)
                    b_closed += 1.0
                    b_pnl += pnl
                    pos = 0.0

                # ---- open a new position ----
                if act == ACT_LONG or act == ACT_SHORT:
                    equity = cash
                    if equity > 0.0:
                        if act == ACT_LONG:
                            fill = buy_fill_price(price, slippage)
                        else:
                            fill = sell_fill_price(price, slippage)
                        if size_type == SIZE_PERCENT:
                            budget = size * equity
                        elif size_type == SIZE_VALUE:
                            budget = size if size < equity else equity
                        else:
                            budget = equity
                        units = affordable_units(budget, fill, fees, fixed_fee)
                        if size_type == SIZE_UNITS and size < units:
                            units = size
                        if not fractional:
                            units = math.floor(units)
                        if units > 0.0:
                            entry_fees = fill_fees(units, fill, fees, fixed_fee)
                            if act == ACT_LONG:
                                cash -= buy_outlay(units, fill, entry_fees)
                                pos = units
                            else:
                                cash += sell_proceeds(units, fill, entry_fees)
                                pos = -units
                            entry_idx = t
                            entry_base = price
                            entry_fill = fill
                            extreme = price
            last_close = cl
            last_valid = t
            eq = cash + pos * cl
        else:
            eq = prev_eq

        # ---- per-bar return and its running sums ----
        if prev_eq > 0.0:
            r = eq / prev_eq - 1.0
        else:
            r = 0.0
        n_ret += 1
        delta = r - ret_mean
        ret_mean += delta / n_ret
        ret_m2 += delta * (r - ret_mean)
        x = r - rf
        if x < 0.0:
            down_sq += x * x
            omega_neg -= x
        else:
            omega_pos += x
        if eq > peak_eq:
            peak_eq = eq
            underwater = 0
        elif eq < peak_eq:
            underwater += 1
            if underwater > max_underwater:
                max_underwater = underwater
            dd = eq / peak_eq - 1.0
            if dd < max_dd:
                max_dd = dd
        else:
            underwater = 0
        if pos != 0.0:
            exposure += 1
        if want_returns:
            returns_out[t, c] = r
        if n_tail > 0 and (n_ret <= n_tail or r < root0 or -r < root1):
            # side 0 keeps the n_tail smallest r, side 1 the n_tail smallest -r (the largest r), each a
            # max-heap: fill, then a value below the root replaces it and sifts down (the roots are
            # kept in registers: most bars touch no heap)
            for side in range(2):
                v = r if side == 0 else -r
                if n_ret > n_tail and not v < (root0 if side == 0 else root1):
                    continue
                if n_ret <= n_tail:
                    i = n_ret - 1
                    while i > 0:
                        p = (i - 1) // 2
                        if tails_out[c, side, p] < v:
                            tails_out[c, side, i] = tails_out[c, side, p]
                            i = p
                        else:
                            break
                    tails_out[c, side, i] = v
                else:
                    i = 0
                    while True:
                        j = 2 * i + 1
                        if j >= n_tail:
                            break
                        if j + 1 < n_tail and tails_out[c, side, j + 1] > tails_out[c, side, j]:
                            j += 1
                        if tails_out[c, side, j] > v:
                            tails_out[c, side, i] = tails_out[c, side, j]
                            i = j
                        else:
                            break
                    tails_out[c, side, i] = v
            root0 = tails_out[c, 0, 0]
            root1 = tails_out[c, 1, 0]
        if n_blocks > 0:
            r2 = r * r
            b_n += 1.0
            b_s1 += r
            b_s2 += r2
            b_s3 += r2 * r
            b_s4 += r2 * r2
            if t + 1 >= blk_end:
                blocks_out[c, blk, BK_N] = b_n
                blocks_out[c, blk, BK_SUM] = b_s1
                blocks_out[c, blk, BK_SUM2] = b_s2
                blocks_out[c, blk, BK_SUM3] = b_s3
                blocks_out[c, blk, BK_SUM4] = b_s4
                blocks_out[c, blk, BK_N_CLOSED] = b_closed
                blocks_out[c, blk, BK_PNL] = b_pnl
                b_n = 0.0
                b_s1 = 0.0
                b_s2 = 0.0
                b_s3 = 0.0
                b_s4 = 0.0
                b_closed = 0.0
                b_pnl = 0.0
        if record:
            equity_out[t, c] = eq
        prev_eq = eq

    n_open = 0
    open_pnl = 0.0
    if pos != 0.0:
        n_open = 1
        if pos > 0.0:
            units = pos
            open_pnl = units * last_close - buy_outlay(units, entry_fill, entry_fees)
            tdir = 1.0
        else:
            units = -pos
            open_pnl = sell_proceeds(units, entry_fill, entry_fees) - units * last_close
            tdir = -1.0
        if record and n_trades < max_trades:
            trades_out[c, n_trades, T_ENTRY_IDX] = entry_idx
            trades_out[c, n_trades, T_EXIT_IDX] = last_valid
            trades_out[c, n_trades, T_DIRECTION] = tdir
            trades_out[c, n_trades, T_SIZE] = units
            trades_out[c, n_trades, T_ENTRY_PRICE] = entry_fill
            trades_out[c, n_trades, T_EXIT_PRICE] = last_close
            trades_out[c, n_trades, T_ENTRY_FEES] = entry_fees
            trades_out[c, n_trades, T_EXIT_FEES] = 0.0
            trades_out[c, n_trades, T_PNL] = open_pnl
            trades_out[c, n_trades, T_RETURN] = open_pnl / buy_outlay(units, entry_fill, entry_fees)
            trades_out[c, n_trades, T_EXIT_REASON] = R_OPEN
        n_trades += 1

    acc[c, A_FINAL_EQUITY] = prev_eq
    acc[c, A_N_BARS] = n_ret
    acc[c, A_RET_MEAN] = ret_mean
    acc[c, A_RET_M2] = ret_m2
    acc[c, A_DOWN_SQ] = down_sq
    acc[c, A_OMEGA_POS] = omega_pos
    acc[c, A_OMEGA_NEG] = omega_neg
    acc[c, A_MAX_DD] = max_dd
    acc[c, A_MAX_DD_BARS] = max_underwater
    acc[c, A_EXPOSURE_BARS] = exposure
    for k in range(TS_N_FIELDS):
        acc[c, A_N_CLOSED + k] = stats[k]
    acc[c, A_N_OPEN] = n_open
    acc[c, A_OPEN_PNL] = open_pnl
    if record:
        ntrades_out[c] = n_trades if n_trades < max_trades else max_trades
