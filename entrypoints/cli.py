"""The ``gpu-backtest`` command: ``run``, ``strategies``, ``data``, ``report``, ``jobs``, ``migrate``, ``serve``.

Exit codes: 0 success, 2 a user error (bad spec, unknown strategy, unreadable data — the
message on stderr names the field or file), 1 an unexpected internal error.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.errors import GpuBacktestError

EXIT_USAGE = 2


class UserError(Exception):
    """A problem with the command line or its inputs (exit code 2)."""


def _load_spec(path: str) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def print_table(result: Any, limit: int, out: Any = sys.stdout) -> None:
    """A plain-text table of the top ``limit`` rows."""
    rows = result.rows(limit)
    info = result.info
    portfolio = info.get("mode") == "portfolio"
    preferred = (("total_return", "cagr", "sharpe", "max_drawdown", "turnover", "avg_holdings", "total_costs")
                 if portfolio else
                 ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "num_trades", "win_rate"))
    shown = [m for m in preferred if m in result.metric_names] or result.metric_names[:6]
    header = ["rank", "column" if portfolio else "symbol", *result.param_names, *shown]
    lines = [header]
    for r in rows:
        first = str(r["column"]) if portfolio else r["symbol"]
        lines.append([str(r["rank"]), first, *(_fmt(r["params"][p]) for p in result.param_names),
                      *(_fmt(r["metrics"].get(m)) for m in shown)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)), file=out)
    what = (f"{info['n_columns']} portfolios ({info['n_combinations']} combinations, each over "
            f"{info['n_symbols']} symbols)" if portfolio else
            f"{info['n_columns']} columns ({info['n_symbols']} symbols × {info['n_combinations']} combinations)")
    print(f"\n{what} "
          f"over {info['n_bars']} bars in {info['elapsed_s']:.3f} s on {info['backend']} "
          f"({info['chunks']} chunk(s)); ranked by {info['rank_by']}", file=out)


def print_folds(wf: dict[str, Any], out: Any = sys.stdout) -> None:
    """A walk-forward's fold table (one row per fold and symbol) and its out-of-sample summary."""
    from ..core.walkforward import fold_table

    table = fold_table(wf)
    lines = [list(table.columns)] + [[_fmt(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    print(f"\nwalk-forward: {wf['n_folds']} folds ({'anchored' if wf['anchored'] else 'rolling'}, train "
          f"{wf['train']}, test {wf['test']}, choose {wf['choose']}), {wf['oos_bars']} out-of-sample bars", file=out)
    for line in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)), file=out)
    rank_by = wf["rank_by"]
    print("\nout-of-sample (stitched):", file=out)
    for s in wf["symbols"]:
        m = s["metrics"]
        print(f"  {s['symbol']}: total_return {_fmt(m.get('total_return'))}  {rank_by} {_fmt(m.get(rank_by))}  "
              f"efficiency {_fmt(s['efficiency'])}", file=out)
    print(f"mean walk-forward efficiency: {_fmt(wf['mean_efficiency'])}", file=out)


class ProgressBar:
    """A run's progress as a bar on ``stream`` (default stderr) when it is a terminal; silent
    otherwise (pipes, files, CI logs). Callable as the engine's ``progress(fraction, stage)``."""

    def __init__(self, stream: Any = None, mininterval: float = 0.1) -> None:
        stream = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self.lock = threading.Lock()  # the stages may report from several threads
        isatty = getattr(stream, "isatty", None)
        if callable(isatty) and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=100.0, file=stream, leave=False, dynamic_ncols=True, mininterval=mininterval,
                            bar_format="{desc:<12}{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]")

    def __call__(self, fraction: float, stage: str) -> None:
        if self.bar is not None:
            with self.lock:
                self.bar.set_description_str(stage, refresh=False)
                self.bar.update(max(0.0, min(100.0, 100.0 * float(fraction))) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    from ..api import run_backtest

    spec = _load_spec(args.spec)
    if isinstance(spec, dict) and isinstance(spec.get("strategy"), str):
        from ..plugins.manager import strategies

        if spec["strategy"] not in strategies():  # perhaps a saved strategy: run its document
            spec = _strategy_catalog().inline_saved(spec)
    if args.source:
        if not isinstance(spec, dict):
            raise UserError(f"{args.spec}: the spec must be a JSON object")
        spec = {**spec, "source": args.source}
    bar = ProgressBar()
    try:
        result = run_backtest(spec, list(args.data) if args.data else None, backend=args.backend, progress=bar)
    finally:
        bar.close()
    if args.report:
        write_report(result, args.report, list(args.data) if args.data else None)
    if args.json:
        json.dump(result.to_dict(limit=args.limit), sys.stdout, indent=None if args.compact else 2)
        sys.stdout.write("\n")
    else:
        print_table(result, args.limit or 20)
        if result.info.get("walk_forward"):
            print_folds(result.info["walk_forward"])
    return 0


def _benchmark(result: Any, data: Any) -> dict[str, Any] | None:
    """The report's benchmark curve (None when there is none or it cannot be read)."""
    from ..core.backend import select_backend
    from ..core.config import Settings
    from ..core.engine import Engine
    from ..core.report import benchmark_curve
    from ..plugins.manager import default_registry

    try:
        settings = Settings.from_env()
        engine = Engine(settings, select_backend(settings, "cpu"), default_registry())
        return benchmark_curve(engine, result.spec.to_dict(), result.info, (result.details or [None])[0], data)
    except Exception as exc:
        logging.getLogger(__name__).info("report without its benchmark: %s", exc)
        return None


def write_report(result: Any, path: str, data: Any = None) -> None:
    """The run's HTML report (core/report.py: the page GET /backtest/{id}/report serves) to ``path``."""
    from ..core.artifacts import Artifact
    from ..core.engine import SUMMARY_ROWS
    from ..core.report import build_report

    table = ([result.table] if result.artifact is None else
             Artifact.open(result.artifact).piece_batches(["symbol", *result.param_names, result.info["rank_by"]]))
    spec = result.spec
    page = build_report(result.info, result.rows(SUMMARY_ROWS), result.details, table=table,
                        init_cash=float(spec.execution.init_cash), risk_free=float(spec.metrics.risk_free),
                        benchmark=_benchmark(result, data))
    try:
        Path(path).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write the report ({exc.strerror or exc})") from None


def _strategy_catalog() -> Any:
    from ..core.config import Settings
    from ..core.jobstore import JobStore
    from ..core.strategy_catalog import StrategyCatalog
    from ..core.strategystore import StrategyStore
    from ..plugins.manager import PluginRegistry

    settings = Settings.from_env()
    store = JobStore.from_settings(settings)
    store.migrate(apply=settings.auto_migrate)
    return StrategyCatalog(PluginRegistry(), StrategyStore(store.engine))


def cmd_strategies(args: argparse.Namespace) -> int:
    if args.action in ("save", "show", "delete") and not args.target:
        raise UserError(f"strategies {args.action} needs a {'file' if args.action == 'save' else 'name'}")
    if args.action == "save":
        doc = _load_spec(args.target)
        catalog = _strategy_catalog()
        name = doc.get("name") if isinstance(doc, dict) else None
        exists = isinstance(name, str) and catalog.store.versions(name)
        saved = catalog.save(doc, name if exists else None)
        print(json.dumps(saved.to_dict(), indent=2) if args.json else f"saved {saved.name} version {saved.version}")
        return 0
    if args.action == "show":
        print(json.dumps(_strategy_catalog().get(args.target, args.version), indent=2))
        return 0
    if args.action == "delete":
        n = _strategy_catalog().delete(args.target)
        print(f"deleted {args.target} ({n} version{'s' if n != 1 else ''})")
        return 0
    strats = _strategy_catalog().list()
    if args.json:
        json.dump(strats, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for s in strats:
        kind = " [portfolio]" if s.get("kind") == "portfolio" else ""
        saved = f" [saved v{s['version']}]" if s.get("source") == "saved" else ""
        print(f"{s['name']}{kind}{saved}: {s['description']}")
        for p in s["params"]:
            bounds = ""
            if p.get("min") is not None or p.get("max") is not None:
                bounds = f" [{_fmt(p.get('min'))}, {_fmt(p.get('max'))}]"
            if p.get("choices"):
                bounds = f" one of {list(p['choices'])}"
            print(f"    {p['name']} ({p['type']}, default {p['default']!r}){bounds} {p['description']}".rstrip())
        if s.get("constraint"):
            print(f"    constraint: {s['constraint']}")
    return 0


def _data_service() -> Any:
    from ..core.dataservice import MarketDataService
    from ..plugins.manager import default_registry

    return MarketDataService(registry=default_registry())


def cmd_data_sources(args: argparse.Namespace) -> int:
    sources = _data_service().describe_sources()
    if args.json:
        json.dump(sources, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for s in sources:
        kind = "upload collection; " if s.get("collection") else ""
        print(f"{s['name']}: {s['description']} ({kind}frequencies: {', '.join(s['frequencies'])}; "
              f"{s['stored_series']} stored series)")
    return 0


def _print_entries(entries: list[Any], as_json: bool) -> None:
    if as_json:
        json.dump([e.to_dict() for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    for e in entries:
        ended = f"  ended {e.ended.date()}" if e.ended is not None else ""
        print(f"{e.source:10s} {e.frequency:5s} {e.symbol:12s} {e.first.date()} … {e.last.date()}  {e.rows:7d} bars"
              f"{ended}")


def cmd_data_symbols(args: argparse.Namespace) -> int:
    entries = _data_service().symbols(args.source, args.frequency)
    _print_entries(entries, args.json)
    if not entries and not args.json:
        print("no stored symbols" + (f" for source {args.source}" if args.source else ""), file=sys.stderr)
    return 0


def cmd_data_import(args: argparse.Namespace) -> int:
    entries = _data_service().import_file(args.file, symbol=args.symbol, source=args.source,
                                          frequency=args.frequency, delisted=args.delisted)
    _print_entries(entries, args.json)
    return 0


class FetchProgress:
    """A fetch's progress in symbols as a bar on ``stream`` (default stderr) when it is a terminal;
    silent otherwise. Callable as `MarketDataService.fetch`'s ``progress(done, total)``."""

    def __init__(self, stream: Any = None, mininterval: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mininterval = mininterval
        self.bar: Any = None
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(callable(isatty) and isatty())

    def __call__(self, done: int, total: int) -> None:
        if not self.tty:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=self.stream, leave=False, dynamic_ncols=True, unit="symbol", miniters=1,
                            mininterval=self.mininterval, desc="fetching")
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def cmd_data_fetch(args: argparse.Namespace) -> int:
    bar = FetchProgress()
    try:
        entries = _data_service().fetch(args.source, args.symbols, args.start, args.end, args.frequency,
                                        adjusted=not args.raw, progress=bar if bar.tty else None)
    finally:
        bar.close()
    _print_entries(entries, args.json)
    return 0


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (it listens once the app has started: connections are
    refused until then); UserError ``port N is in use`` when another process listens there."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use (GPU_SERVER_PORT)") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def cmd_serve(args: argparse.Namespace) -> int:
    """Bind the port first (a taken port: one line, exit 2, nothing started), set up logging
    (`core/logs.py`), start the app (database, cluster, jobs), then log "serving on"."""
    from aiohttp import web

    from ..core.config import Settings
    from ..core.logs import configure_logging

    settings = Settings.from_env()
    sock = bound_socket(settings.host, settings.port)
    configure_logging(settings.debug or args.verbose, settings.log_format)
    from ..core.jitcache import configure_numba_cache

    configure_numba_cache(settings.data_dir)  # before any kernel module is imported; workers inherit it
    from ..web.app import create_app

    app = create_app(settings, dashboard_address=args.dashboard)
    log = logging.getLogger(__name__)

    def serving(_: str) -> None:  # aiohttp calls it once the app has started and the socket accepts
        log.info("serving on http://%s:%d (data: %s)", settings.host, settings.port, settings.data_dir,
                 extra={"event": "serving"})

    try:
        web.run_app(app, sock=sock, print=serving, access_log=None, shutdown_timeout=60.0)
    except OSError as exc:  # another server started listening on the port meanwhile
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {settings.port} is in use (GPU_SERVER_PORT)") from None
        raise
    return 0


def _client(args: argparse.Namespace) -> Any:
    """A client of the server ``--url`` names (default this machine's GPU_SERVER_PORT), with
    GPU_SERVER_API_KEY."""
    from ..core.config import Settings
    from ..web.client import BacktestClient

    settings = Settings.from_env()
    try:
        return BacktestClient(args.url or f"http://127.0.0.1:{settings.port}", api_key=settings.api_key)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _client_call(fn: Any, *a: Any, **kw: Any) -> Any:
    from ..web.client import ClientError

    try:
        return fn(*a, **kw)
    except ClientError as exc:  # the server's error (status, code, message) or why it was not reached
        raise UserError(str(exc)) from None


def cmd_report(args: argparse.Namespace) -> int:
    """Fetch a job's HTML report from a running server and write it to a file."""
    page = _client_call(_client(args).report, args.job_id, args.column)
    out = Path(args.output or (f"{args.job_id}.html" if args.column is None else
                               f"{args.job_id}-column-{args.column}.html"))
    try:
        out.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{out}: cannot write the report ({exc.strerror or exc})") from None
    print(f"wrote {out} ({len(page.encode()) / 1e6:.1f} MB)")
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """A running server's jobs, newest first."""
    doc = _client_call(_client(args).jobs, args.status, args.limit)
    if args.json:
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    lines = [["job_id", "status", "progress", "strategy", "columns", "created_at"]]
    for j in doc["jobs"]:
        lines.append([j["job_id"], j["status"], f"{100 * float(j.get('progress') or 0):.0f} %",
                      str(j.get("strategy") or "-"), _fmt(j.get("n_columns")),
                      str((j.get("timings") or {}).get("created_at") or "-")[:19]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    print(f"\n{len(doc['jobs'])} of {doc['total']} job(s)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the job database to this version's schema (what ``serve`` does at start-up)."""
    from ..core.config import Settings
    from ..core.jobstore import JobStore
    from ..core.migrations import inspect_schema

    with JobStore.from_settings(Settings.from_env()) as store:
        if args.check:
            with store.engine.connect() as conn:
                state = inspect_schema(conn)
            if state.newer:
                print(f"newer: the database is at schema version {state.schema_version} "
                      f"({', '.join(state.revisions)}), this code knows {state.code_version} ({state.head})")
                return 1
            if not state.current:
                print(f"behind: the database is at schema version {state.schema_version} "
                      f"({', '.join(state.revisions) or 'no migration history'}), this code needs "
                      f"{state.code_version} ({state.head})")
                return 1
            print(f"current: schema version {state.schema_version} ({state.head})")
            return 0
        version = store.migrate()
    print(f"the job database is at schema version {version}")
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    """Compile every kernel into the numba cache ``serve`` uses (``<data dir>/numba-cache`` unless
    NUMBA_CACHE_DIR is set): run once after installing (an image build), the first server start
    then finds them compiled."""
    from ..core.config import Settings
    from ..core.jitcache import configure_numba_cache

    where = configure_numba_cache(Settings.from_env().data_dir)  # before the kernels are imported
    from ..core.warmup import HELPER_ORDER, run_warmup

    out = run_warmup(HELPER_ORDER)
    print(f"kernels compiled into {where or 'numba default cache'} in {out['seconds']:.1f} s "
          f"({', '.join(f'{k} {v:.1f} s' for k, v in out['parts'].items())})")
    for part, error in out["failed"].items():
        print(f"failed: {part}: {error}", file=sys.stderr)
    return 1 if out["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpu-backtest", description="AlphaStrategyLab GPU Backtesting Server")
    parser.add_argument("-v", "--verbose", action="store_true", help="DEBUG lines of gpu_backtest's own loggers")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a backtest or sweep from a JSON spec")
    run.add_argument("spec", help="the spec (JSON file, the POST /backtest document)")
    run.add_argument("--data", nargs="+", metavar="FILE",
                     help="CSV/Parquet OHLCV files (default: the spec's source through the data store)")
    run.add_argument("--source", help="data source to run on (overrides the spec's source)")
    run.add_argument("--json", action="store_true", help="print the result document as JSON")
    run.add_argument("--compact", action="store_true", help="with --json: one line")
    run.add_argument("--limit", type=int, default=None, help="result rows to print (table default 20)")
    run.add_argument("--backend", choices=["auto", "cpu", "cuda"], default=None)
    run.add_argument("--report", metavar="FILE", help="also write the run's HTML report (one offline page) to FILE")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("strategies", help="list strategies; save, show or delete saved expression strategies",
                        description="list (default); save FILE: an expression strategy (JSON, with a name) as the "
                                    "next version in the job database; show NAME [--version N]; delete NAME")
    st.add_argument("action", nargs="?", choices=["list", "save", "show", "delete"], default="list")
    st.add_argument("target", nargs="?", help="save: the JSON file; show/delete: the strategy's name")
    st.add_argument("--version", type=int, default=None, help="show: this version (default: the latest)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_strategies)

    data = sub.add_parser("data", help="market data: sources, symbols, import, fetch")
    dsub = data.add_subparsers(dest="data_command", required=True)
    ds = dsub.add_parser("sources", help="list data sources")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=cmd_data_sources)
    dy = dsub.add_parser("symbols", help="list stored symbols with first/last bar")
    dy.add_argument("--source")
    dy.add_argument("--frequency")
    dy.add_argument("--json", action="store_true")
    dy.set_defaults(func=cmd_data_symbols)
    di = dsub.add_parser("import", help="validate and store a CSV/Parquet file")
    di.add_argument("file")
    di.add_argument("--symbol", help="the symbol (default: the file stem, or the file's symbol column)")
    di.add_argument("--source", default="upload",
                    help="upload (default), or a collection name of yours (any name no plugin owns: "
                         "synthetic and tiingo are refused); the collection is then a spec's source")
    di.add_argument("--frequency", default="1d")
    di.add_argument("--delisted", action="store_true",
                    help="the file's series have ended (delisted): mark them ended at their last bar "
                         "(importing without it stores them unmarked)")
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=cmd_data_import)
    df = dsub.add_parser("fetch", help="fetch symbols from a source into the store")
    df.add_argument("symbols", nargs="+")
    df.add_argument("--source", required=True)
    df.add_argument("--start")
    df.add_argument("--end")
    df.add_argument("--frequency", default="1d")
    df.add_argument("--raw", action="store_true", help="unadjusted prices")
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=cmd_data_fetch)

    rp = sub.add_parser("report", help="fetch a job's HTML report from a running server")
    rp.add_argument("job_id")
    rp.add_argument("--column", type=int, default=None, help="one column's report instead of the job's")
    rp.add_argument("-o", "--output", metavar="FILE", help="where to write it (default JOB_ID.html)")
    rp.add_argument("--url", help="the server (default http://127.0.0.1:GPU_SERVER_PORT)")
    rp.set_defaults(func=cmd_report)

    jb = sub.add_parser("jobs", help="a running server's jobs, newest first")
    jb.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jb.add_argument("--limit", type=int, default=20)
    jb.add_argument("--url", help="the server (default http://127.0.0.1:GPU_SERVER_PORT)")
    jb.add_argument("--json", action="store_true")
    jb.set_defaults(func=cmd_jobs)

    mg = sub.add_parser("migrate", help="upgrade the job database's schema (DATABASE_URL) to this version's")
    mg.add_argument("--check", action="store_true",
                    help="only report: exit 0 if the schema is current, 1 if it is behind or newer")
    mg.set_defaults(func=cmd_migrate)

    sv = sub.add_parser("serve", help="start the HTTP server (GPU_SERVER_HOST:GPU_SERVER_PORT)")
    sv.add_argument("--dashboard", default=None,
                    help="Dask dashboard address (default GPU_BACKTEST_DASHBOARD_ADDRESS, 127.0.0.1:8787)")
    sv.set_defaults(func=cmd_serve)

    wu = sub.add_parser("warmup", help="compile the kernels into the numba cache serve uses (e.g. after installing)")
    wu.set_defaults(func=cmd_warmup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gpu-backtest`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.verbose:  # debug lines of our own loggers, never of the libraries (numba's compiler: tens of MB)
        logging.getLogger("gpu_backtest").setLevel(logging.DEBUG)
    try:
        return int(args.func(args))
    except (UserError, GpuBacktestError) as exc:
        msg = exc.message if isinstance(exc, GpuBacktestError) else str(exc)
        print(f"error: {msg}", file=sys.stderr)
        problems = getattr(exc, "problems", None) or []
        for p in problems:
            where = ", ".join(f"{k} {p[k]}" for k in ("row", "column") if isinstance(p, dict) and p.get(k) is not None)
            text = p.get("message", p) if isinstance(p, dict) else p
            print(f"  {where + ': ' if where else ''}{text}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `gpu-backtest data symbols | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # never a traceback for the user; the log has it with -v
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
