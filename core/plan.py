"""RunPlan: a backtest job as plain, versioned data — what the cluster's workers run.

The server (or `run_backtest`) turns a spec into a `RunPlan` once: the resolved strategy
(name, and the plugin, distribution and version that provide it), the parameter grid, the
data selection (source, frequency, adjustment, the resolved symbols, the date bounds, and the
store root + layout that say where each symbol's partition lives), the validated spec (costs,
execution, metrics, output options), the partitions, and a content hash of all of it.

The plan holds no secrets and nothing machine-specific: each worker picks its device, memory
budget, chunk sizes and storage credentials from its own environment (`core/worker.py`).
Partitions are contiguous blocks of the symbol list; a partition task gets a slim
`PartitionTask` (its own symbols only), so what a task carries through the scheduler does not
grow with the universe. In portfolio mode (``mode == "portfolio"``: one column is one
combination's portfolio over the whole universe) partitions are contiguous blocks of the
*combinations* instead, and every task carries all the symbols.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

PLAN_VERSION = 1
STORE_LAYOUT = "symbol-files/v1"  # <root>/<source>/<frequency>/symbol=<SYMBOL>/<file> (DataSelection.files)
MODE_SIGNALS = "signals"  # one column per (symbol, combination); partitions split symbols
MODE_PORTFOLIO = "portfolio"  # one column per combination (a portfolio); partitions split combinations


@dataclass(frozen=True)
class StrategyRef:
    """The strategy a plan runs and what provides it (so a result names its code)."""

    name: str
    plugin: str | None = None
    distribution: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class DataSelection:
    """Which bars a plan reads. ``source`` None: bars given in memory (local runs only)."""

    source: str | None
    frequency: str
    adjusted: bool
    symbols: tuple[str, ...]
    benchmark: str | None
    lo_ns: int | None  # first timestamp included (UTC ns), None: from the first stored bar
    hi_ns: int | None  # last timestamp included (UTC ns), None: to the last stored bar
    root: str | None = None  # the market-data store root (directory or s3:// URI)
    layout: str = STORE_LAYOUT
    # (symbol, file) of the version of each series this plan reads (core.marketdata: series are
    # versioned files named in the catalog): one per symbol in ``symbols`` order, then one for the
    # benchmark when there is one; "" or no entry: bars.parquet (a series stored before versions)
    files: tuple[tuple[str, str], ...] = ()
    # (symbol, UTC ns) of each series the source marks as ended (a delisting: Tiingo's end date, an
    # upload's flag), at its last bar; portfolio mode closes positions there (exit reason "delisted")
    ended: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Partition:
    """Symbols ``[start, stop)`` of the plan's symbol list."""

    index: int
    start: int
    stop: int

    @property
    def n_symbols(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class RunPlan:
    """Everything that can change a result, as plain data (see the module docstring)."""

    strategy: StrategyRef
    spec: dict[str, Any]  # the validated spec's JSON form (BacktestSpec.to_dict)
    grid: dict[str, list[Any]]  # parameter name -> value per combination
    data: DataSelection
    partitions: tuple[Partition, ...]
    version: int = PLAN_VERSION
    hash: str = ""
    mode: str = MODE_SIGNALS  # "portfolio": partitions are blocks of combinations

    @property
    def n_combinations(self) -> int:
        return len(next(iter(self.grid.values()))) if self.grid else 1

    @property
    def n_symbols(self) -> int:
        return len(self.data.symbols)

    @property
    def n_columns(self) -> int:
        if self.mode == MODE_PORTFOLIO:
            return self.n_combinations
        return self.n_symbols * self.n_combinations

    def partition_columns(self, p: Partition) -> int:
        """How many result rows partition ``p`` produces."""
        return p.n_symbols if self.mode == MODE_PORTFOLIO else p.n_symbols * self.n_combinations

    def grid_arrays(self) -> dict[str, np.ndarray]:
        """The grid as numpy arrays (the form strategies take)."""
        return {k: np.asarray(v) for k, v in self.grid.items()}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (round-trips through `from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunPlan:
        """Rebuild a plan from its JSON form; ValueError on another plan version."""
        if doc.get("version") != PLAN_VERSION:
            raise ValueError(f"run plan version {doc.get('version')!r}; this build reads {PLAN_VERSION}")
        data = dict(doc["data"])
        data["symbols"] = tuple(data["symbols"])
        data["files"] = tuple((str(s), str(f)) for s, f in data.get("files", ()))
        data["ended"] = tuple((str(s), int(ns)) for s, ns in data.get("ended", ()))
        return cls(strategy=StrategyRef(**doc["strategy"]), spec=doc["spec"], grid=doc["grid"],
                   data=DataSelection(**data), partitions=tuple(Partition(**p) for p in doc["partitions"]),
                   version=doc["version"], hash=doc.get("hash", ""), mode=doc.get("mode", MODE_SIGNALS))

    def task(self, p: Partition) -> PartitionTask:
        """The slim task of partition ``p``: this plan without the other partitions' symbols
        (portfolio mode: every symbol; ``p`` is a block of combinations)."""
        if self.mode == MODE_PORTFOLIO:
            return PartitionTask(self.hash, self.strategy, self.spec, self.grid, replace(self.data, symbols=()),
                                 p, self.data.symbols, self.mode)
        files = self.data.files
        if files:  # this partition's symbols' files, and the benchmark's
            files = files[p.start:p.stop] + files[len(self.data.symbols):]
        own = set(self.data.symbols[p.start:p.stop])
        ended = tuple(m for m in self.data.ended if m[0] in own)
        return PartitionTask(self.hash, self.strategy, self.spec, self.grid,
                             replace(self.data, symbols=(), files=files, ended=ended), p,
                             self.data.symbols[p.start:p.stop])


@dataclass(frozen=True)
class PartitionTask:
    """What one partition task carries: the plan's shared parts and its own symbols (its
    ``data.symbols`` is empty: the universe does not travel with every task)."""

    plan_hash: str
    strategy: StrategyRef
    spec: dict[str, Any]
    grid: dict[str, list[Any]]
    data: DataSelection
    partition: Partition
    symbols: tuple[str, ...] = field(default_factory=tuple)
    mode: str = MODE_SIGNALS

    @property
    def n_combinations(self) -> int:
        return len(next(iter(self.grid.values()))) if self.grid else 1


def content_hash(plan: RunPlan) -> str:
    """sha256 of the plan's canonical JSON (the hash field itself excluded)."""
    doc = plan.to_dict()
    doc.pop("hash", None)
    # fields added later hash as before while they hold their defaults (a plan keeps its hash)
    if doc.get("mode") == MODE_SIGNALS:
        doc.pop("mode")
    if not doc["data"].get("ended"):
        doc["data"].pop("ended", None)
    output = doc["spec"].get("output")
    if isinstance(output, dict) and output.get("overfitting") is None:
        output.pop("overfitting", None)
    if isinstance(doc.get("spec"), dict) and doc["spec"].get("validation", 0) is None:
        doc["spec"] = {k: v for k, v in doc["spec"].items() if k != "validation"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def partition_symbols(n_symbols: int, per_partition: int) -> tuple[Partition, ...]:
    """Contiguous blocks of at most ``per_partition`` symbols (the last may be smaller)."""
    per = max(1, int(per_partition))
    return tuple(Partition(i, s, min(n_symbols, s + per)) for i, s in enumerate(range(0, n_symbols, per)))


def symbols_per_partition(n_combinations: int, n_bars_hint: int, target_cells: int) -> int:
    """Symbols per partition so a partition holds about ``target_cells`` bar × column cells
    (bounded memory per task, enough tasks to spread over workers)."""
    per_symbol = max(1, n_combinations * max(1, n_bars_hint))
    return max(1, target_cells // per_symbol)
