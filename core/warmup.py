"""Warm-up: compile the kernels a first job needs before it arrives.

A numba kernel compiles on its first call (seconds on a small machine: the single-asset CPU
kernel ~5 s, the portfolio kernel and CSCV's passes more); a build is then kept in numba's
on-disk cache (`core/jitcache.py`), which the next process loads in a fraction of a second.
`run_warmup` runs tiny jobs (a few hundred synthetic bars) through the same code path as a
real job — `Engine.run`: plan, sweep, ranking, details, on the process's backend — so every
kernel they touch is compiled (or loaded) in this process and written to the disk cache.

The service runs it at start, in the background (web/warmup.py): in a helper process of the
server (``python -m gpu_backtest.core.warmup``, started first thing, slightly niced) and in each
cluster worker (`cluster/warmup.py`: a worker plugin, a thread). Both begin with the sweep — what
a first job needs; a build is compiled once per disk cache (`jitcache.compile_lock`): the helper,
which starts earlier, compiles it while a worker waits and then loads it; after that each takes
a different kernel. A job that arrives meanwhile runs as usual: a kernel call that needs a build
being compiled waits for it, then loads it. ``GPU_BACKTEST_WARMUP=false`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

N_BARS = 300

_SMA = {"strategy": "sma_crossover", "metrics": {"periods_per_year": 252}}


def _sma(n_symbols: int, slow: list[int], top_k: int, **extra: Any) -> tuple[dict[str, Any], int]:
    spec = {**_SMA, "params": {"fast": [5], "slow": slow}, "output": {"top_k": top_k}, **extra}
    return spec, n_symbols


# part → the tiny jobs it runs (spec, number of symbols)
PARTS: dict[str, list[tuple[dict[str, Any], int]]] = {
    # the README's kind of job: 2 symbols × 2 combinations, top 3 columns (one symbol's two and the
    # other's one): sweep and details; the CPU kernel has one build for all of them (simulate/cpu.py)
    "sweep": [_sma(2, [20, 30], 3)],
    # the portfolio kernel: sweep and details
    "portfolio": [({"strategy": "xs_momentum", "params": {"lookback": [20, 40], "skip": 5, "top_n": 2},
                    "portfolio": {"rebalance": "1m"}, "output": {"top_k": 1}}, 4)],
    # CSCV (output.overfitting) on a sweep
    "overfitting": [_sma(2, [20, 30, 40], 1, output={"top_k": 1, "overfitting": {"blocks": 4}})],
}
# both begin with what a first job needs (the helper process starts first: it compiles, a worker waits
# for the build's file lock, core/jitcache.py, and loads it), then each takes a different one next
WORKER_ORDER = ("sweep", "portfolio", "overfitting")
HELPER_ORDER = ("sweep", "overfitting", "portfolio")


def run_warmup(parts: Sequence[str] = WORKER_ORDER, backend: Any = None,
               on_part: Callable[[str, float], None] | None = None) -> dict[str, Any]:
    """Run the tiny jobs of ``parts`` in order on ``backend`` (default: this process's, from
    its settings); returns ``{"seconds": total, "parts": {part: seconds}, "failed": {part: error}}``.
    Never raises: a part that fails is logged and reported, the others still run."""
    t0 = time.perf_counter()
    from ..plugins.manager import default_registry
    from .backend import select_backend
    from .config import Settings
    from .engine import Engine
    from .synthetic import gbm_panel_frame

    settings = Settings.from_env()
    engine = Engine(settings, backend if backend is not None else select_backend(settings), default_registry())
    times: dict[str, float] = {}
    failed: dict[str, str] = {}
    for part in parts:
        t = time.perf_counter()
        try:
            for spec, n_symbols in PARTS[part]:
                engine.run(spec, gbm_panel_frame(n_symbols, N_BARS, seed=11))
        except Exception as exc:  # a warm-up never stops a server; the real job reports its own errors
            failed[part] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("warm-up part %s failed: %s", part, failed[part])
        times[part] = round(time.perf_counter() - t, 3)
        if on_part is not None:
            on_part(part, times[part])
    return {"seconds": round(time.perf_counter() - t0, 3), "parts": times, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    """``python -m gpu_backtest.core.warmup [--parts a,b] [--nice N]``: warm up in this
    process (the server's helper process); prints the result as one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m gpu_backtest.core.warmup")
    ap.add_argument("--parts", default=",".join(WORKER_ORDER))
    ap.add_argument("--nice", type=int, default=0, help="lower this process's priority by N")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown warm-up parts: {unknown}; known: {sorted(PARTS)}", file=sys.stderr)
        return 2
    if args.nice:
        try:
            os.nice(args.nice)
        except (OSError, AttributeError):  # not permitted, or no os.nice (Windows)
            pass
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_warmup(parts)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
