"""MarketDataService: the data sources and the store behind one façade.

What the command line (``gpu-backtest data …``), the engine (specs without explicit data)
and the web layer's data endpoints call: list sources and symbols, import files, fetch from
a source into the store, check a spec's data at submit, and select the bars a run reads —
fetching what is missing first.

**Sources belong to their plugins.** A registered source (``synthetic``, ``tiingo``, a
third party's) is the only writer of its name: files are imported only into ``upload`` or
into an *upload collection* — any other valid source name that no plugin registers. A
collection is nothing but the catalog rows stored under its name: once a file was imported
into it, it is listed (GET /data/sources, ``data sources``), queryable (``?source=NAME``) and
usable as a spec's ``source``, served like ``upload``. A plugin registered later under the same
name takes the name over (its rows are then read as that plugin's).

**Checked at submit** (`check_spec`, from `JobManager.validate`): the source, the frequency,
whether the source can serve now (Tiingo needs its key), every symbol and the benchmark — as
far as the catalog (one query) and the source itself can tell without fetching — and whether
the range holds any bar. A symbol that a fetching source then cannot supply fails the job with
a DataError naming it (`selection_for`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .config import Settings
from .errors import DataError, NotFoundError, SpecError
from .marketdata import CatalogEntry, MarketDataStore, bounds_ns, check_frequency, check_source
from .panel import check_symbol
from .plan import DataSelection
from .registry import Registry
from .spec import BacktestSpec
from .timeutil import end_bound_utc, to_utc, to_utc_or_none

DEFAULT_SOURCE = "synthetic"
FETCH_BATCH = 8  # symbols per source call when a fetch reports its progress (gpu-backtest data fetch)
UPLOAD_SOURCE = "upload"
_SYMBOL_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._^=-]{0,31}")  # the start of a symbol (`panel.SYMBOL_RE`)


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
    def registered(self) -> dict[str, Any]:
        """The sources plugins register, by name."""
        return dict(self.registry.data_sources())

    def sources(self) -> dict[str, Any]:
        """Registered data sources and stored upload collections, by name (one catalog query)."""
        known = self.registered()
        for name in dict.fromkeys(s for s, _, _ in self.store.catalog_db.summary()):
            collection = None if name in known else self._collection(name, known)
            if collection is not None:
                known[name] = collection
        return known

    def source(self, name: str) -> Any:
        """The source called ``name`` — registered, or a stored upload collection; NotFoundError
        listing the known ones otherwise."""
        known = self.registered()
        if name in known:
            return known[name]
        if isinstance(name, str) and _valid_source(name) and self.store.count(name) > 0:
            collection = self._collection(name, known)
            if collection is not None:
                return collection
        names = sorted(self.sources())
        raise NotFoundError(f"unknown data source {name!r}; known: {', '.join(names)}", {"source": name})

    @staticmethod
    def _collection(name: str, registered: dict[str, Any]) -> Any:
        """An upload collection: the registered upload source's class under another name."""
        upload = registered.get(UPLOAD_SOURCE)
        if upload is None or not _valid_source(name):
            return None
        return type(upload)(name)

    def describe_sources(self) -> list[dict[str, Any]]:
        """Each source's schema plus how many series it has in the store (one catalog query)."""
        counts: dict[str, int] = {}
        for name, _, n in self.store.catalog_db.summary():
            counts[name] = counts.get(name, 0) + n
        return [{**src.schema(), "stored_series": counts.get(name, 0)}
                for name, src in sorted(self.sources().items())]

    # -- deleting ---------------------------------------------------------------------------
    def delete_series(self, source: str, frequency: str, symbol: str) -> CatalogEntry:
        """Remove one stored series (catalog row and files); returns what it was. Names are
        checked whole; NotFoundError when no such series is stored."""
        check_source(source)
        check_frequency(frequency)
        check_symbol(symbol)
        entry = self.store.entry(source, symbol, frequency)
        if entry is None:
            raise NotFoundError(f"no stored {frequency} series {symbol!r} in {source!r}",
                                {"source": source, "frequency": frequency, "symbol": symbol})
        self.store.delete(source, symbol, frequency)
        return entry

    # -- symbols ----------------------------------------------------------------------------
    def symbols(self, source: str | None = None, frequency: str | None = None, prefix: str | None = None,
                limit: int | None = None, offset: int = 0) -> list[CatalogEntry]:
        """Stored series (catalog; no file is opened), optionally filtered and paginated."""
        if source is not None:
            self.source(source)
        if frequency is not None:
            check_frequency(frequency)
        if prefix and not _SYMBOL_PREFIX_RE.fullmatch(prefix):
            return []  # no symbol starts so (and NUL or a lone surrogate would not reach PostgreSQL)
        return self.store.catalog(source, frequency, prefix, limit, offset)

    # -- writing ----------------------------------------------------------------------------
    def import_file(self, path: str | Path, symbol: str | None = None, source: str = UPLOAD_SOURCE,
                    frequency: str = "1d", filename: str | None = None, delisted: Any = False) -> list[CatalogEntry]:
        """Validate a CSV/Parquet file completely, then store it (nothing stored if invalid) into
        ``upload`` or an upload collection (SpecError on ``source`` for a name a plugin owns).
        ``delisted`` (a bool or its text, `upload.parse_delisted`; SpecError on ``delisted``
        otherwise): mark every series of the file as ended at its last bar."""
        from ..plugins.datasources import upload

        ended = upload.parse_delisted(delisted)
        self.check_import_target(source)
        try:
            check_frequency(frequency)
        except DataError as exc:
            raise SpecError("frequency", exc.message) from None
        return upload.import_file(self.store, path, symbol=symbol, source=source, frequency=frequency,
                                  max_bytes=self.settings.max_upload_bytes, filename=filename, delisted=ended)

    def check_import_target(self, source: Any) -> str:
        """``source`` if files may be imported under it: ``upload`` (or another registered source that
        takes imports) or a new or stored collection name; SpecError naming ``source`` otherwise."""
        if not isinstance(source, str) or not _valid_source(source):
            raise SpecError("source", f"invalid source name {source!r}: 1–32 lower-case letters, digits and _, "
                                      "starting with a letter")
        owner = self.registered().get(source)
        if owner is not None and not getattr(owner, "importable", False):
            raise SpecError("source", f"{source!r} belongs to the {source} data source plugin, which fills it "
                                      f"itself; import into {UPLOAD_SOURCE!r} or a collection name of your own "
                                      "(e.g. source=my_data)")
        return source

    def fetch(self, source: str, symbols: Sequence[str], start: Any = None, end: Any = None,
              frequency: str = "1d", adjusted: bool = True,
              progress: Callable[[int, int], None] | None = None) -> list[CatalogEntry]:
        """Fetch ``symbols`` from ``source`` into the store (only what is missing). ``progress(done,
        total)``: called as the symbols are fetched, in batches of `FETCH_BATCH` (one batch without it)."""
        from ..plugins.datasources.base import FetchRange

        src = self.source(source)
        if frequency not in src.frequencies:
            raise DataError(f"{source} serves {', '.join(src.frequencies)}, not {frequency!r}", source)
        symbols = list(dict.fromkeys(src.normalize_symbol(check_symbol(s)) for s in symbols))
        known = src.known_symbols(self.store, frequency) if src.fetchable else None
        unknown = [s for s in symbols if known is not None and s not in known]
        if unknown:
            raise DataError(f"{source} has no {frequency} data for: {', '.join(unknown[:20])}", ",".join(unknown))
        rng = FetchRange(to_utc_or_none(start), to_utc_or_none(end), frequency)
        if progress is None:
            src.ensure(self.store, symbols, rng, adjusted)
        else:
            progress(0, len(symbols))
            for i in range(0, len(symbols), FETCH_BATCH):
                src.ensure(self.store, symbols[i:i + FETCH_BATCH], rng, adjusted)
                progress(min(len(symbols), i + FETCH_BATCH), len(symbols))
        stored = self.store.entries(source, frequency, symbols)
        return [stored[s] for s in symbols if s in stored]

    # -- what a spec needs ------------------------------------------------------------------
    def check_spec(self, spec: BacktestSpec) -> None:
        """Refuse at submit what the catalog and the source can tell is unservable, each as a
        SpecError naming the field: ``source`` (unknown, or unable to serve now: Tiingo without
        its key), ``frequency``, ``symbols[i]``, ``metrics.benchmark``, ``start``/``end`` (no bar
        in the range). Cheap: at most one catalog query, no file opened, nothing fetched."""
        self._check(spec)

    def _check(self, spec: BacktestSpec) -> tuple[Any, str, list[str], str | None,
                                                   pd.Timestamp | None, pd.Timestamp | None]:
        src, name, universe, benchmark = self._universe(spec)
        reason = src.unavailable()
        if reason:
            raise SpecError("source", f"{name}: {reason}")
        start, end = self._range(src, spec)
        lo, hi = (to_utc(start) if start is not None else None), (end_bound_utc(end) if end is not None else None)
        if src.fetchable:
            known = src.known_symbols(self.store, spec.frequency)
            first, last = src.available_range(spec.frequency)
            have = None if known is None else {s: (first, last) for s in [*universe, benchmark or ""] if s in known}
        else:  # what an upload source serves is what the catalog holds
            stored = self.store.entries(name, spec.frequency, universe + ([benchmark] if benchmark else []))
            have = {s: (e.first, e.last) for s, e in stored.items()}
        if have is not None:
            _refuse_unknown(name, spec, universe, benchmark, have, src)
            spans = [have[s] for s in universe]
        else:
            spans = [src.available_range(spec.frequency)]
        # a range with no bar: every symbol's bars (or the source's) lie wholly before or after it
        if spans and all(hi is not None and f is not None and f > hi for f, _ in spans):
            earliest = min(f for f, _ in spans)
            raise SpecError("end" if spec.end else "start",
                            f"{name} has no {spec.frequency} bars of these symbols before {earliest.date()}")
        if spans and all(lo is not None and la is not None and la < lo for _, la in spans):
            latest = max(la for _, la in spans)
            raise SpecError("start", f"{name} has no {spec.frequency} bars of these symbols after {latest.date()}")
        if spec.validation is not None and spans:
            _check_folds(spec, spans, lo, hi, None if src.fetchable else sum(e.rows for e in stored.values()))
        return src, name, universe, benchmark, start, end

    def selection_for(self, spec: BacktestSpec) -> tuple[DataSelection, int]:
        """The data selection of a run plan: the spec's universe (and benchmark) in the source's
        spelling, checked (`check_spec`), fetched into the store first where missing, checked
        against the catalog (no bar file is opened), with the date bounds, the store root workers
        read from, the file of each series' current version and the *ended* marks of the universe's
        symbols that fall within the bounds (`ended_within`). Also returns the most bars any
        selected series holds (a partition-size hint). A symbol still not stored — a fetching
        source could not supply it — is a DataError naming it."""
        src, name, universe, benchmark, start, end = self._check(spec)
        wanted = list(universe) + ([benchmark] if benchmark and benchmark not in universe else [])
        from ..plugins.datasources.base import FetchRange

        src.ensure(self.store, wanted, FetchRange(start, end, spec.frequency), spec.adjusted)
        stored = self.store.entries(name, spec.frequency, wanted)
        missing = [s for s in wanted if s not in stored]
        if missing:
            raise DataError(f"no {spec.frequency} data from {name} for: {', '.join(missing[:20])}"
                            + (f" (+{len(missing) - 20} more)" if len(missing) > 20 else ""), ",".join(missing))
        lo, hi = bounds_ns(start, spec.end if spec.end else end)
        hint = max((stored[s].rows for s in universe), default=1)
        files = tuple((s, stored[s].file or "") for s in universe)
        if benchmark:
            files += ((benchmark, stored[benchmark].file or ""),)
        ended = ended_within([(s, stored[s]) for s in universe], lo, hi)
        return DataSelection(name, spec.frequency, spec.adjusted, tuple(universe), benchmark, lo, hi,
                             root=self.store.root_uri, files=files, ended=ended), hint

    def symbols_without_data(self, data: DataSelection) -> list[str]:
        """Those of a store selection's symbols whose stored bars (as the catalog has them: first
        and last bar) lie wholly outside its date bounds (one catalog query)."""
        if data.source is None:
            return []
        stored = self.store.entries(data.source, data.frequency, data.symbols)
        out = []
        for s in data.symbols:
            e = stored.get(s)
            if e is None or (data.hi_ns is not None and e.first.value > data.hi_ns) or (
                    data.lo_ns is not None and e.last.value < data.lo_ns):
                out.append(s)
        return out

    def _range(self, src: Any, spec: BacktestSpec) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        from ..plugins.datasources.base import default_range_for

        d_start, d_end = default_range_for(src, spec.frequency)  # the source's default for this frequency
        return (to_utc(spec.start) if spec.start else d_start), (to_utc(spec.end) if spec.end else d_end)

    def _universe(self, spec: BacktestSpec) -> tuple[Any, str, list[str], str | None]:
        name = spec.source or DEFAULT_SOURCE
        try:
            src = self.source(name)
        except NotFoundError as exc:
            raise SpecError("source", exc.message) from None
        if spec.frequency not in src.frequencies:
            raise SpecError("frequency", f"source {name} serves {', '.join(src.frequencies)}")
        if spec.symbols:
            universe = []
            for i, s in enumerate(spec.symbols):
                try:
                    universe.append(check_symbol(src.normalize_symbol(s)))
                except DataError as exc:
                    raise SpecError(f"symbols[{i}]", exc.message) from None
            universe = list(dict.fromkeys(universe))
        else:
            universe = src.default_symbols(self.store, spec.frequency)
        if not universe:
            raise SpecError("symbols", f"no symbols given and none stored for source {name}")
        benchmark = None
        if spec.metrics.benchmark:
            try:
                benchmark = check_symbol(src.normalize_symbol(spec.metrics.benchmark))
            except DataError as exc:
                raise SpecError("metrics.benchmark", exc.message) from None
        return src, name, universe, benchmark


def ended_within(entries: Sequence[tuple[str, CatalogEntry]], lo: int | None,
                 hi: int | None) -> tuple[tuple[str, int], ...]:
    """(symbol, UTC ns) of the entries marked ended whose final bar lies within [lo, hi], in the
    order given: a series that ends after the run's last instant does not end within the run (and
    one that ended before its first has no bar in it). Unmarked data gives ``()``, so a plan on
    it keeps its hash."""
    out = []
    for sym, e in entries:
        if e.ended is None:
            continue
        ns = int(e.ended.value)
        if (lo is None or ns >= lo) and (hi is None or ns <= hi):
            out.append((sym, ns))
    return tuple(out)


def _valid_source(name: str) -> bool:
    try:
        check_source(name)
    except DataError:
        return False
    return True


def _check_folds(spec: BacktestSpec, spans: list[tuple[Any, Any]], lo: pd.Timestamp | None,
                 hi: pd.Timestamp | None, rows: int | None) -> None:
    """A walk-forward the universe's bars in the range cannot hold → SpecError naming ``validation``
    (`folds.check_feasible`): bounded by the earliest first and latest last bar within the range, and by the
    stored rows (an upload source) or the most bars of the frequency in that span (a fetching source)."""
    from .folds import check_feasible, max_bars_in

    firsts = [f for f, _ in spans if f is not None]
    lasts = [la for _, la in spans if la is not None]
    first = max([min(firsts)] + ([lo] if lo is not None else [])) if firsts else None
    last = min([max(lasts)] + ([hi] if hi is not None else [])) if lasts else None
    if first is not None and last is not None and rows is None:
        rows = max_bars_in(first, last, spec.frequency) if last >= first else 0
    check_feasible(spec.validation, first, last, rows)


def _refuse_unknown(name: str, spec: BacktestSpec, universe: list[str], benchmark: str | None,
                    have: dict[str, Any], src: Any) -> None:
    """SpecError naming the first symbol (``symbols[i]``, by its place in the spec) or the benchmark
    that the source does not have at the spec's frequency."""
    what = f"{name} has no {spec.frequency} data for"
    hint = "" if src.fetchable else f" (stored symbols: GET /data/symbols?source={name})"
    unknown = [s for s in universe if s not in have]
    if unknown:
        given = list(spec.symbols or [])
        spelled = [src.normalize_symbol(s) for s in given]
        i = spelled.index(unknown[0]) if unknown[0] in spelled else 0
        more = ""
        if unknown[1:]:
            more = f"; also unknown: {', '.join(unknown[1:11])}" + (" …" if len(unknown) > 11 else "")
        raise SpecError(f"symbols[{i}]", f"{what} {unknown[0]!r}{hint}{more}")
    if benchmark and benchmark not in have:
        raise SpecError("metrics.benchmark", f"{what} {benchmark!r}{hint}")
