"""MarketDataService: the data sources and the store behind one façade.

What the command line (``gpu-backtest data …``), the engine (specs without explicit data)
and the web layer's data endpoints call: list sources and symbols, import files, fetch from
a source into the store, and load the panel a spec asks for — fetching what is missing first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pluggy

from .config import Settings
from .errors import DataError, NotFoundError, SpecError
from .marketdata import CatalogEntry, MarketDataStore, check_frequency, check_source
from .panel import MarketPanel, check_symbol
from .spec import BacktestSpec

DEFAULT_SOURCE = "synthetic"


def _ts(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


class MarketDataService:
    """Sources (plugins) + the Parquet store under the market-data root (``GPU_BACKTEST_MARKET_ROOT``,
    default ``<data dir>/market``), its catalog in the job database."""

    def __init__(self, settings: Settings | None = None, pm: pluggy.PluginManager | None = None,
                 store: MarketDataStore | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self.pm = pm
        if store is None:
            from .jobstore import default_url

            store = MarketDataStore(self.settings.market_uri, default_url(self.settings))
        self.store = store

    # -- sources ----------------------------------------------------------------------------
    def sources(self) -> dict[str, Any]:
        """Registered data sources by name."""
        from ..plugins.manager import data_sources

        return data_sources(self.pm)

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
        src.ensure(self.store, symbols, FetchRange(_ts(start), _ts(end), frequency), adjusted)
        stored = self.store.entries(source, frequency, symbols)
        return [stored[s] for s in symbols if s in stored]

    # -- what a spec needs ------------------------------------------------------------------
    def panel_for(self, spec: BacktestSpec) -> tuple[MarketPanel, list[str], str | None]:
        """The panel a spec runs on (its universe plus any benchmark symbol), the universe and the
        benchmark symbol, both in the source's spelling (e.g. Tiingo's ``BRK-A`` for ``brk.a``)."""
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
        wanted = list(universe)
        benchmark = src.normalize_symbol(spec.metrics.benchmark) if spec.metrics.benchmark else None
        if benchmark and benchmark not in wanted:
            wanted.append(benchmark)
        d_start, d_end = src.default_range()
        start = _ts(spec.start) if spec.start else d_start
        end = _ts(spec.end) if spec.end else d_end
        from ..plugins.datasources.base import FetchRange

        src.ensure(self.store, wanted, FetchRange(start, end, spec.frequency), spec.adjusted)
        end_bound: Any = spec.end if spec.end else end
        panel = self.store.load_panel(name, wanted, spec.frequency, start, end_bound, adjusted=spec.adjusted)
        return panel, universe, benchmark
