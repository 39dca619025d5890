"""Fixed array layouts of the portfolio kernel (`portfolio.py`): option and output slots.

Like `layout.py` for the single-asset kernel: the portfolio kernel compiles as a numba.cuda
device function, so its options travel as two small arrays and its per-column results come
back in one fixed-width array. docs/semantics.md ("Portfolio mode") defines each slot.
"""

# --- float options: fopts[k] ---------------------------------------------------------
PF_INIT_CASH = 0
PF_FEES = 1        # fraction of traded value (after slippage) charged per order
PF_FIXED_FEE = 2   # currency charged per order
PF_SLIPPAGE = 3    # fraction; buys fill at price × (1 + slippage), sells at price × (1 − slippage)
PF_MIN_TRADE = 4   # orders whose value (units × price) is below this are skipped
N_PFOPTS = 5

# --- int options: iopts[k] -----------------------------------------------------------
PI_FILL = 0        # FILL_CLOSE | FILL_NEXT_OPEN (the values of layout.py)
PI_FRACTIONAL = 1  # 1 = fractional units, 0 = whole units
N_PIOPTS = 2

# --- per-column scratch: scratch[c, s, k] (preallocated by the driver) -----------------------
SC_POS = 0         # units held
SC_LAST_PX = 1     # last known price (NaN until the symbol's first valid open or close)
SC_TARGET = 2      # current target weight (NaN: none yet, the symbol is never traded)
SC_DELTA = 3       # this rebalance's order in units (NaN: the symbol cannot trade)
N_SCRATCH = 4

# --- per-column results: acc[c, k] ----------------------------------------------------
PA_FINAL_EQUITY = 0
PA_N_ORDERS = 1    # executed orders (fills)
PA_COSTS = 2       # fees + fixed fees + slippage paid
PA_TURNOVER = 3    # traded value, sum of units × price before slippage
N_PACC = 4
