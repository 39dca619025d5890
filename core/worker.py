"""The context a stage runs in: this process's backend, strategies and settings.

On a cluster worker everything machine-specific is the worker's own choice, read from its own
environment: the device (a dask-cuda worker's ``CUDA_VISIBLE_DEVICES`` lists its own GPU
first, so it uses device 0 of its view, whatever the server's ``GPU_DEVICE`` says), the
memory budget and chunk sizes, the storage credentials, the installed strategy plugins. The
context is built once per worker process (`cluster/worker.py`); a plan's spec is parsed once
per process per plan.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .backend import Backend
from .config import Settings
from .errors import SpecError
from .expr import expression_strategy, is_expression
from .spec import BacktestSpec
from .strategy import Strategy


def in_dask_worker() -> str | None:
    """The address of the Dask worker this code runs in, or None."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


@dataclass
class StageContext:
    """A backend, the strategies it can run and a small cache of parsed specs."""

    settings: Settings
    backend: Backend
    strategies: dict[str, Strategy]
    worker: str | None = None
    _specs: OrderedDict[str, BacktestSpec] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def strategy(self, name: str, doc: Any = None) -> Any:
        """The strategy a task runs: built from ``doc`` (the task spec's ``strategy``) when that is
        an expression strategy object, else ``name`` as installed here; SpecError naming this
        worker otherwise."""
        if is_expression(doc):
            return expression_strategy(doc)
        try:
            return self.strategies[name]
        except KeyError:
            where = f" on worker {self.worker}" if self.worker else ""
            raise SpecError("strategy", f"strategy {name!r} is not installed{where}; "
                                        f"installed: {', '.join(sorted(self.strategies))}") from None

    def spec(self, plan_hash: str, doc: dict[str, Any]) -> BacktestSpec:
        """The plan's spec, parsed once per plan in this process."""
        with self._lock:
            spec = self._specs.get(plan_hash) if plan_hash else None
            if spec is None:
                spec = BacktestSpec.from_dict(doc)
                if plan_hash:
                    self._specs[plan_hash] = spec
                    while len(self._specs) > 32:
                        self._specs.popitem(last=False)
            return spec

    def describe(self) -> dict[str, Any]:
        """Where a stage ran: worker address (None: in-process), host, backend, device."""
        return {"worker": self.worker, "host": socket.gethostname(), "backend": self.backend.name,
                "device": self.backend.device}


def worker_settings(environ: dict[str, str] | None = None) -> Settings:
    """This worker's settings: its environment; a dask-cuda worker uses the first device it sees."""
    env = dict(os.environ if environ is None else environ)
    overrides: dict[str, Any] = {}
    if in_dask_worker() and env.get("CUDA_VISIBLE_DEVICES"):
        overrides["gpu_device"] = 0  # dask-cuda puts the worker's own device first in its view
    return Settings.from_env(env, **overrides)
