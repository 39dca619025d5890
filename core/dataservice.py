"""MarketDataService: the data sources and the store behind one façade.

What the command line (``gpu-backtest data …``), the engine (specs without explicit data)
and the web layer's data endpoints call: list sources and symbols, import files, fetch from
a source into the store, and load the panel a spec asks for — fetching what is missing first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import Settings
from .errors import DataError, NotFoundError, SpecError
from .marketdata import CatalogEntry, MarketDataStore, bounds_ns, check_frequency, check_source
from .panel import check_symbol
from .plan import DataSelection
from .registry import Registry
from .spec import BacktestSpec
from .timeutil import to_utc, to_utc_or_none

DEFAULT_SOURCE = "synthetic"


class MarketDataService:
    """Sources (plugins) + the Parquet store under the market-data root (``GPU_BACKTEST_MARKET_ROOT``,
    default ``<data dir>/market``), its catalog in the job database."""

    def __init__(self, settings: Settings | None = None, registry: Registry | None = None,
                 store: MarketDataStore | None = None) -> None:
        self.settings = settings or Settings.from_env()
        if registry is None:
            raise TypeError("MarketDataService needs a registry (plugins.manager.default_registry())")
        self.registry = registry
        if store is None:
            from .jobstore import default_url

            store = MarketDataStore(self.settings.market_uri, default_url(self.settings))
        self.store = store

    # -- sources ----------------------------------------------------------------------------
    def sources(self) -> dict[str, Any]:
        """Registered data sources by name."""
        return dict(self.registry.data_sources())

    def source(self, name: str) -> Any:
        """The source called ``name``; NotFoundError listing the known ones otherwise."""
        known = self.sources()
        if name not in known:
            raise NotFoundError(f"unknown data source {name!r}; known: {', '.join(sorted(known))}",
                                {"source": name})
        return known[name]

    def describe_sources(self) -> list[dict[str, Any]]:
        """Each source's schema plus how many series it has in the store."""
        out = []
        for name, src in sorted(self.sources().items()):
            out.append({**src.schema(), "stored_series": self.store.count(name)})
        return out

    # -- symbols ----------------------------------------------------------------------------
    def symbols(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None,
                limit: int | None = None, offset: int = 0) -> list[CatalogEntry]:
        """Stored series (catalog; no file is opened), optionally filtered and paginated."""
        if source is not None:
            self.source(source)
        if frequency is not None:
            check_frequency(frequency)
        return self.store.catalog(source, frequency, prefix, limit, offset)

    # -- writing ----------------------------------------------------------------------------
    def import_file(self, path: str | Path, symbol: str | None = None, source: str = "upload",
                    frequency: str = "1d", filename: str | None = None) -> list[CatalogEntry]:
        """Validate a CSV/Parquet file completely, then store it (nothing stored if invalid)."""
        from ..plugins.datasources import upload

        check_source(source)
        check_frequency(frequency)
        return upload.import_file(self.store, path, symbol=symbol, source=source, frequency=frequency,
                                  max_bytes=self.settings.max_upload_bytes, filename=filename)

    def fetch(self, source: str, symbols: Sequence[str], start: Any = None, end: Any = None,
              frequency: str = "1d", adjusted: bool = True) -> list[CatalogEntry]:
        """Fetch ``symbols`` from ``source`` into the store (only what is missing)."""
        from ..plugins.datasources.base import FetchRange

        src = self.source(source)
        if frequency not in src.frequencies:
            raise DataError(f"{source} serves {', '.join(src.frequencies)}, not {frequency!r}", source)
        symbols = list(dict.fromkeys(src.normalize_symbol(check_symbol(s)) for s in symbols))
        src.ensure(self.store, symbols, FetchRange(to_utc_or_none(start), to_utc_or_none(end), frequency), adjusted)
        stored = self.store.entries(source, frequency, symbols)
        return [stored[s] for s in symbols if s in stored]

    # -- what a spec needs ------------------------------------------------------------------
    def selection_for(self, spec: BacktestSpec) -> tuple[DataSelection, int]:
        """The data selection of a run plan: the spec's universe (and benchmark) in the source's
        spelling, fetched into the store first where missing, checked against the catalog (no
        bar file is opened), with the date bounds and the store root workers read from. Also
        returns the most bars any selected series holds (a partition-size hint)."""
        src, name, universe, benchmark = self._universe(spec)
        wanted = list(universe) + ([benchmark] if benchmark and benchmark not in universe else [])
        from ..plugins.datasources.base import FetchRange, default_range_for

        d_start, d_end = default_range_for(src, spec.frequency)  # the source's default for this frequency
        start = to_utc(spec.start) if spec.start else d_start
        end = to_utc(spec.end) if spec.end else d_end

        src.ensure(self.store, wanted, FetchRange(start, end, spec.frequency), spec.adjusted)
        stored = {e.symbol: e for e in self.store.catalog(name, spec.frequency)}
        missing = [s for s in wanted if s not in stored]
        if missing:
            raise DataError(f"no {spec.frequency} data from {name} for: {', '.join(missing[:20])}"
                            + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""), ",".join(missing))
        lo, hi = bounds_ns(start, spec.end if spec.end else end)
        hint = max((stored[s].rows for s in universe), default=1)
        return DataSelection(name, spec.frequency, spec.adjusted, tuple(universe), benchmark, lo, hi,
                             root=self.store.root_uri), hint

    def _universe(self, spec: BacktestSpec) -> tuple[Any, str, list[str], str | None]:
        name = spec.source or DEFAULT_SOURCE
        try:
            src = self.source(name)
        except NotFoundError as exc:
            raise SpecError("source", exc.message) from None
        if spec.frequency not in src.frequencies:
            raise SpecError("frequency", f"source {name} serves {', '.join(src.frequencies)}")
        universe = (list(dict.fromkeys(src.normalize_symbol(s) for s in spec.symbols)) if spec.symbols
                    else src.default_symbols(self.store, spec.frequency))
        if not universe:
            raise SpecError("symbols", f"no symbols given and none stored for source {name}")
        for i, s in enumerate(universe):
            try:
                check_symbol(s)
            except DataError as exc:
                raise SpecError(f"symbols[{i}]", exc.message) from None
        benchmark = src.normalize_symbol(spec.metrics.benchmark) if spec.metrics.benchmark else None
        return src, name, universe, benchmark
