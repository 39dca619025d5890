"""Fixed array layouts shared by the simulation kernel, its drivers and the metrics.

The kernel must compile for numba.cuda as a device function, so it takes no Python objects:
options travel as two small arrays (float and int) and results come back in fixed-width
arrays. This module names every slot of those arrays, once.
"""

# --- float options: fopts[k] ---------------------------------------------------------
F_INIT_CASH = 0
F_FEES = 1
F_FIXED_FEE = 2
F_SLIPPAGE = 3
F_SIZE = 4
F_SL_STOP = 5
F_TP_STOP = 6
F_TSL_STOP = 7
F_RISK_FREE = 8
N_FOPTS = 9

# --- int options: iopts[k] -----------------------------------------------------------
I_FILL = 0          # FILL_CLOSE | FILL_NEXT_OPEN
I_DIRECTION = 1     # DIR_LONG | DIR_SHORT | DIR_BOTH
I_SIZE_TYPE = 2     # SIZE_PERCENT | SIZE_VALUE | SIZE_UNITS
I_FRACTIONAL = 3    # 1 = fractional units, 0 = whole units
I_WANT_RETURNS = 4  # 1 = write per-bar returns into returns_out[:, c]
I_RECORD = 5        # 1 = write equity_out[:, c] and trade records
I_N_BLOCKS = 6      # B > 0 = write per-block sums into blocks_out[c, b, :]; 0 = off
I_N_TAIL = 7        # m > 0 = keep the m smallest and m largest returns in tails_out[c, 0|1, :]; 0 = off
I_FUSED = 8         # 1 = signals from crossings of lines (fused_bank, fused_idx, fused_w), not the bool arrays
N_IOPTS = 9

# --- the fused signal form: per column, 4 signals (entry, exit, short entry, short exit), each
# "A crosses above B", an operand = bank[i] + w·bank[j] (j = -1: bank[i] alone); i = -1: never
FUSED_N_IDX = 16    # fused_idx[c, 4q + (0: A.i, 1: A.j, 2: B.i, 3: B.j)]
FUSED_N_W = 8       # fused_w[c, 2q + (0: A.w, 1: B.w)]

FILL_CLOSE = 0
FILL_NEXT_OPEN = 1

DIR_LONG = 0
DIR_SHORT = 1
DIR_BOTH = 2

SIZE_PERCENT = 0
SIZE_VALUE = 1
SIZE_UNITS = 2

# --- per-column accumulators: acc[c, k] ------------------------------------------------
A_FINAL_EQUITY = 0
A_N_BARS = 1          # number of returns (T)
A_RET_MEAN = 2        # Welford running mean of r_t
A_RET_M2 = 3          # Welford running sum of squared deviations of r_t
A_DOWN_SQ = 4         # sum of min(r_t - rf, 0)^2
A_OMEGA_POS = 5       # sum of max(r_t - rf, 0)
A_OMEGA_NEG = 6       # sum of max(rf - r_t, 0)
A_MAX_DD = 7          # most negative equity_t / running_peak - 1 (peak starts at init_cash)
A_MAX_DD_BARS = 8     # longest run of consecutive bars below the running peak
A_EXPOSURE_BARS = 9   # bars whose closing position is not flat
A_N_CLOSED = 10       # closed trades
A_N_WINS = 11         # closed trades with pnl > 0
A_N_LOSSES = 12       # closed trades with pnl < 0
A_GROSS_PROFIT = 13   # sum of pnl over winners
A_GROSS_LOSS = 14     # sum of pnl over losers (<= 0)
A_PNL_MEAN = 15       # Welford running mean of closed-trade pnl
A_PNL_M2 = 16         # Welford running sum of squared deviations of closed-trade pnl
A_BEST_RET = 17       # best closed-trade return (NaN when none)
A_WORST_RET = 18      # worst closed-trade return (NaN when none)
A_HOLD_BARS = 19      # sum of bars held over closed trades
A_N_OPEN = 20         # 1 when a position is open after the last bar
A_OPEN_PNL = 21       # unrealised pnl of that open position
N_ACC = 22

# --- per-block sums: blocks_out[c, b, k] (bars floor(b*T/B) <= t < floor((b+1)*T/B)) ----------
BK_N = 0          # returns in the block (every bar has one)
BK_SUM = 1        # sum of r_t
BK_SUM2 = 2       # sum of r_t^2
BK_SUM3 = 3       # sum of r_t^3
BK_SUM4 = 4       # sum of r_t^4
BK_N_CLOSED = 5   # closed trades whose exit bar lies in the block
BK_PNL = 6        # sum of the pnl of those trades
N_BLOCK_ACC = 7

# --- trade records: trades_out[c, i, k] --------------------------------------------------
T_ENTRY_IDX = 0
T_EXIT_IDX = 1
T_DIRECTION = 2       # +1 long, -1 short
T_SIZE = 3
T_ENTRY_PRICE = 4
T_EXIT_PRICE = 5
T_ENTRY_FEES = 6
T_EXIT_FEES = 7
T_PNL = 8
T_RETURN = 9
T_EXIT_REASON = 10    # one of R_*
N_TFIELDS = 11

R_OPEN = 0
R_SIGNAL = 1
R_REVERSE = 2
R_SL = 3
R_TSL = 4
R_TP = 5
EXIT_REASONS = ("open", "signal", "reverse", "sl", "tsl", "tp")
