"""Fixed array layouts of the portfolio kernel (`portfolio.py`): option, state and output slots.

Like `layout.py` for the single-asset kernel: the portfolio kernel compiles as a numba.cuda
device function, so its options travel as two small arrays and its per-column results come
back in fixed-width arrays. docs/semantics.md ("Portfolio mode") defines each slot. Callers
build the option arrays with `portfolio_options.PortfolioOptions.arrays()`, never by position.
"""

# --- float options: fopts[k] ---------------------------------------------------------
PF_INIT_CASH = 0
PF_FEES = 1        # fraction of traded value (after slippage) charged per order
PF_FIXED_FEE = 2   # currency charged per order
PF_SLIPPAGE = 3    # fraction; buys fill at price × (1 + slippage), sells at price × (1 − slippage)
PF_MIN_TRADE = 4   # rebalance orders whose value (units × price) is below this are skipped
PF_SL_STOP = 5     # stop-loss as a fraction of the average entry price; 0 = off
PF_TP_STOP = 6     # take-profit as a fraction of the average entry price; 0 = off
N_PFOPTS = 7

# --- int options: iopts[k] -----------------------------------------------------------
PI_FILL = 0        # FILL_CLOSE | FILL_NEXT_OPEN (the values of layout.py)
PI_FRACTIONAL = 1  # 1 = fractional units, 0 = whole units
PI_SHORTS = 2      # 1 = negative target weights hold short positions, 0 = they count as 0
N_PIOPTS = 3

# --- per-column scratch: scratch[c, s, k] (preallocated by the driver) -----------------------
SC_POS = 0         # units held (negative: short)
SC_LAST_PX = 1     # last known price (NaN until the symbol's first valid open or close)
SC_TARGET = 2      # current target weight (NaN: none yet, the symbol is never traded)
SC_DELTA = 3       # this step's order in units (NaN: the symbol does not trade)
SC_AVG_PX = 4      # average entry price (before slippage) of the open position
SC_ENTRY_BAR = 5   # bar of the open position trade's first fill
SC_FLOW = 6        # cash flow of the open position trade's fills so far (costs included)
SC_ENTRY_COST = 7  # Σ u × F × (1 + fees) + fixed fee over the open trade's entry fills
SC_REASON = 8      # this step's order reason (one of OR_*)
# the k-th slot row (k = 0..orders − 1, not symbol k) holds the k-th fill of a rebalance in call order:
SC_CALL = 9        # scratch[c, k, SC_CALL]: its symbol (as a float)
SC_CALL_KEY = 10   # scratch[c, k, SC_CALL_KEY]: its sort key, w × value − position × P
N_SCRATCH = 11

# --- per-column results: acc[c, k] ----------------------------------------------------
PA_FINAL_EQUITY = 0
PA_N_ORDERS = 1       # executed orders (fills), records dropped past max_records included
PA_COSTS = 2          # fees + fixed fees + slippage paid
PA_TURNOVER = 3       # traded value, sum of units × price before slippage
PA_N_CLOSED = 4       # closed position trades
PA_N_WINS = 5         # closed trades with pnl > 0
PA_N_LOSSES = 6       # closed trades with pnl < 0
PA_GROSS_PROFIT = 7   # sum of pnl over winners
PA_GROSS_LOSS = 8     # sum of pnl over losers (<= 0)
PA_PNL_MEAN = 9       # Welford running mean of closed-trade pnl
PA_PNL_M2 = 10        # Welford running sum of squared deviations of closed-trade pnl
PA_BEST_RET = 11      # best closed-trade return (NaN when none)
PA_WORST_RET = 12     # worst closed-trade return (NaN when none)
PA_HOLD_BARS = 13     # sum of bars held over closed trades
PA_N_OPEN = 14        # position trades still open after the last bar
PA_OPEN_PNL = 15      # their unrealised pnl, summed
PA_EXPOSURE_BARS = 16  # bars where any position is non-zero after the mark
PA_HOLDINGS_SUM = 17   # Σ over bars of the number of non-zero positions after the mark
PA_GROSS_SUM = 18      # Σ over bars (equity > 0) of Σ|position × last_px| / equity
PA_NET_SUM = 19        # Σ over bars (equity > 0) of Σ position × last_px / equity
PA_EXPO_BARS_POS = 20  # number of bars counted in PA_GROSS_SUM / PA_NET_SUM
PA_TURNOVER_REL = 21   # Σ over orders of u × P / value (the value the order was sized from)
N_PACC = 22

# --- order records: orders_out[c, i, k] --------------------------------------------------
O_BAR = 0
O_SYMBOL = 1
O_UNITS = 2        # signed: + buy, − sell
O_PRICE = 3        # fill price F (after slippage)
O_COSTS = 4        # u × F × fees + fixed fee + u × P × slippage of this fill
O_REASON = 5       # one of OR_*
N_OFIELDS = 6

OR_REBALANCE = 0
OR_DELISTED = 1
OR_STOP_LOSS = 2
OR_TAKE_PROFIT = 3
ORDER_REASONS = ("rebalance", "delisted", "stop_loss", "take_profit")
