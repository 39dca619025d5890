"""Random expressions over the expression grammar (hypothesis strategies and a seeded generator).

Mostly well-typed, sometimes not (a wrong argument kind, a bad window), so that both the
compile-and-run path and the error path get exercised."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

PARAMS = {"fast": {"type": "int", "default": 5, "min": 1, "max": 50},
          "slow": {"type": "int", "default": 20, "min": 2, "max": 60},
          "k": {"type": "float", "default": 1.5, "min": 0.0, "max": 5.0}}
FIELDS = ["open", "high", "low", "close", "volume"]
GOOD_WINDOWS = ["fast", "slow", "3", "10"]
BAD_WINDOWS = ["0", "k", "2.5", "100000"]


def window(rng: random.Random) -> str:
    return rng.choice(GOOD_WINDOWS if rng.random() < 0.95 else BAD_WINDOWS)
SERIES_FNS = ["sma", "ema", "rsi", "stdev", "highest", "lowest", "shift", "diff", "pct_change"]


def gen_float(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.25:
        return rng.choice([*FIELDS, "k", "fast", str(round(rng.uniform(-5, 200), 3)), "0", "1e300"])
    if r < 0.5:
        fn = rng.choice(SERIES_FNS)
        return f"{fn}({gen_float(rng, depth - 1)}, {window(rng)})"
    if r < 0.6:
        fn = rng.choice(["bb_upper", "bb_lower"])
        return f"{fn}({gen_float(rng, depth - 1)}, {window(rng)}, {rng.choice(['k', '2', 'k', '2', 'close'])})"
    if r < 0.65:
        return f"macd_hist({gen_float(rng, depth - 1)}, fast, slow, {window(rng)})"
    if r < 0.7:
        return f"atr({window(rng)})"
    if r < 0.8:
        return f"{rng.choice(['abs', 'log', 'sqrt'])}({gen_float(rng, depth - 1)})"
    if r < 0.85:
        return f"{rng.choice(['min', 'max'])}({gen_float(rng, depth - 1)}, {gen_float(rng, depth - 1)})"
    if r < 0.9:
        return f"where({gen_bool(rng, depth - 1)}, {gen_float(rng, depth - 1)}, {gen_float(rng, depth - 1)})"
    op = rng.choice(["+", "-", "*", "/"])
    return f"({gen_float(rng, depth - 1)} {op} {gen_float(rng, depth - 1)})"


def gen_bool(rng: random.Random, depth: int) -> str:
    r = rng.random()
    if depth <= 0 or r < 0.35:
        op = rng.choice(["<", "<=", ">", ">=", "==", "!="])
        return f"{gen_float(rng, depth - 1)} {op} {gen_float(rng, depth - 1)}"
    if r < 0.6:
        fn = rng.choice(["cross_above", "cross_below"])
        return f"{fn}({gen_float(rng, depth - 1)}, {gen_float(rng, depth - 1)})"
    if r < 0.7:
        return f"not ({gen_bool(rng, depth - 1)})"
    if r < 0.63:
        return gen_float(rng, depth - 1)  # a type error on purpose
    op = rng.choice(["and", "or"])
    return f"({gen_bool(rng, depth - 1)}) {op} ({gen_bool(rng, depth - 1)})"


def gen_doc(rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {"signals": {"entry": gen_bool(rng, 3), "exit": gen_bool(rng, 3)}, "params": PARAMS}
    if rng.random() < 0.3:
        doc["signals"]["short_entry"] = gen_bool(rng, 2)
    if rng.random() < 0.3:
        doc["constraint"] = rng.choice(["fast < slow", "fast < slow and k > 0", "close > 1", "fast"])
    return doc


docs = st.integers(0, 2**32 - 1).map(lambda seed: gen_doc(random.Random(seed)))
TOKENS = [*"abcdeflosrt_ (),.+-*/<>=!0123456789[]{}:'\"\\@%~^&|#",
          "sma", "close", "__", "import", "lambda", "not", "and", " or ", "\u0441"]
junk = st.lists(st.sampled_from(TOKENS),
               max_size=40).map("".join)


def gen_portfolio_doc(rng: random.Random) -> dict[str, Any]:
    e = gen_float(rng, 3)
    r = rng.random()
    if r < 0.3:
        e = f"rank({e})"
    elif r < 0.5:
        e = f"zscore({e})"
    elif r < 0.6:
        e = f"where({gen_bool(rng, 1)}, {e}, 0)"
    return {"score" if rng.random() < 0.7 else "weights": e, "params": PARAMS}
