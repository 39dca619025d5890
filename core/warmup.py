"""Warm-up: compile the kernels a first job needs before it arrives.

A numba kernel compiles on its first call (seconds on a small machine: the single-asset CPU
kernel ~5 s, the portfolio kernel and CSCV's passes more); a build is then kept in numba's
on-disk cache (`core/jitcache.py`), which the next process loads in a fraction of a second.
`run_warmup` runs tiny jobs (a few hundred synthetic bars) through the same code path as a
real job — `Engine.run`: plan, sweep, ranking, details, on the process's backend — and CSCV's
passes through their stage functions, so every kernel they touch is compiled (or loaded) in
this process and written to the disk cache.

The service runs it at start, in the background (web/warmup.py): in a helper process of the
server (``python -m gpu_backtest.core.warmup``, started first thing) and in each cluster worker
(`cluster/warmup.py`: a worker plugin, a thread). A worker begins with the simulation kernel (a
first job's first stage), the helper with CSCV's passes (on by default, a first job's last):
the two cores compile both at once. Then each loads the other's from the disk cache and goes on
at a lower priority; every kernel is compiled once per disk cache (`jitcache.compile_lock`: the
other process waits and loads it). A job that arrives meanwhile runs as usual: a kernel call
that needs a build being compiled waits for it, then loads it.
``GPU_BACKTEST_WARMUP=false`` turns it off.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)

N_BARS = 300

_SMA = {"strategy": "sma_crossover", "metrics": {"periods_per_year": 252}}


def _sma(n_symbols: int, slow: list[int], top_k: int, **extra: Any) -> tuple[dict[str, Any], int]:
    spec = {**_SMA, "params": {"fast": [5], "slow": slow}, "output": {"top_k": top_k}, **extra}
    return spec, n_symbols


def _cscv_passes() -> None:
    """CSCV's two passes (`core/overfit_stages.py`, compiled in `cscv_fast.py`) on per-block sums
    of seeded random returns: 6 columns × 4 blocks of 20 bars — what a sweep's partition hands them."""
    from types import SimpleNamespace

    import numpy as np

    from . import overfit_stages as ofs

    r = np.random.default_rng(3).normal(0.0005, 0.01, (6, 4, 20))
    full = np.stack([np.full(r.shape[:2], 20.0), *(np.sum(r**p, axis=2) for p in (1, 2, 3, 4))], axis=2)
    out = SimpleNamespace(blocks=np.ascontiguousarray(full[:, :, 1:3]), block_n=full[0, :, 0].copy(),
                          totals=full.sum(axis=1), column_start=0)
    merged = ofs.merge_pass1(ofs.pass1(out, 0.0, compiled=True))  # the numba passes, not the numpy path
    ofs.pass2(out, merged, 0, 0.0, compiled=True)


# part → what it runs: tiny jobs (spec, number of symbols) through Engine.run, or a function
PARTS: dict[str, list[tuple[dict[str, Any], int]] | Callable[[], None]] = {
    # the README's kind of job without CSCV: 2 symbols × 2 combinations, top 3 columns (one symbol's
    # two and the other's one): sweep and details; the CPU kernel has one build for all (simulate/cpu.py)
    "sweep": [_sma(2, [20, 30], 3, output={"top_k": 3, "overfitting": None})],
    # CSCV's passes (output.overfitting, on by default): compiled apart from the sweep, so that
    # another process can compile them while this one builds the simulation kernel
    "cscv": _cscv_passes,
    # the portfolio kernel: sweep and details
    "portfolio": [({"strategy": "xs_momentum", "params": {"lookback": [20, 40], "skip": 5, "top_n": 2},
                    "portfolio": {"rebalance": "1m"}, "output": {"top_k": 1, "overfitting": None}}, 4)],
}
# A worker begins with the simulation kernel (a first job's first stage); the helper process, which
# starts earlier, with CSCV (its last), so the two cores compile both at once. Every kernel is
# compiled once per disk cache (`jitcache.compile_lock`, `jitcache.FirstUse`): the other process
# waits and loads it. What a process runs after its first part runs at a lower CPU priority.
WORKER_ORDER = ("sweep", "cscv", "portfolio")
HELPER_ORDER = ("cscv", "sweep", "portfolio")


def lower_priority(by: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux: per thread; elsewhere the process's, or nothing)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + by)
    except (OSError, AttributeError):
        pass


def run_warmup(parts: Sequence[str] = WORKER_ORDER, backend: Any = None,
               on_part: Callable[[str, float], None] | None = None, background: bool = False) -> dict[str, Any]:
    """Run the tiny jobs of ``parts`` in order on ``backend`` (default: this process's, from
    its settings); returns ``{"seconds": total, "parts": {part: seconds}, "failed": {part: error}}``.
    Never raises: a part that fails is logged and reported, the others still run. ``background``:
    the parts after the first run at a lower CPU priority (this thread's)."""
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
    for i, part in enumerate(parts):
        if i == 1 and background:
            lower_priority()
        t = time.perf_counter()
        try:
            what = PARTS[part]
            if callable(what):
                what()
            else:
                for spec, n_symbols in what:
                    engine.run(spec, gbm_panel_frame(n_symbols, N_BARS, seed=11))
        except Exception as exc:  # a warm-up never stops a server; the real job reports its own errors
            failed[part] = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("warm-up part %s failed: %s", part, failed[part])
        times[part] = round(time.perf_counter() - t, 3)
        if on_part is not None:
            on_part(part, times[part])
    return {"seconds": round(time.perf_counter() - t0, 3), "parts": times, "failed": failed}


def main(argv: list[str] | None = None) -> int:
    """``python -m gpu_backtest.core.warmup [--parts a,b]``: warm up in this process (the
    server's helper process); prints the result as one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m gpu_backtest.core.warmup")
    ap.add_argument("--parts", default=",".join(WORKER_ORDER))
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        print(f"unknown warm-up parts: {unknown}; known: {sorted(PARTS)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(json.dumps(run_warmup(parts, background=True)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
