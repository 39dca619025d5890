"""The aiohttp application: `create_app(settings)` with its start-up/clean-up contexts and routes.

Start-up order: warm-up helper process (web/warmup.py) → plugin manager → job store (schema migrated
under a lock, expired leases' jobs recovered) → market-data service → Dask cluster → engine → job
manager → warm-up on the workers. Clean-up runs in reverse: stop the warm-up, stop accepting jobs,
let running ones finish within the grace period and hand the others back to the queue (another
server, or the next start, runs them), close the cluster, close the database.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from ..core.backend import select_backend
from ..core.config import Settings
from ..core.dataservice import MarketDataService
from ..core.engine import Engine
from ..core.jobs import JobManager
from ..core.jobstore import JobStore
from ..core.strategy_catalog import StrategyCatalog
from ..core.strategystore import StrategyStore
from ..plugins.manager import PluginRegistry, build_plugin_manager
from . import explorer, uploads
from . import handlers as h
from . import keys as K
from .accesslog import access_log_middleware
from .console import console_access, console_middleware, setup_console
from .jobwatch import FinishWatch
from .metrics import ServiceMetrics
from .middlewares import (
    auth_middleware,
    cors_headers,
    cors_middleware,
    error_middleware,
    request_id_header,
    request_id_middleware,
)
from .openapi import document_to_30, openapi_document
from .warmup import ServerWarmup

log = logging.getLogger(__name__)
MAX_JSON_BODY = 2 * 1024**2
COLUMN_COMPUTATIONS = 2  # on-demand column details computed at once (GET /backtest/{id}/columns/{n})


def listens_beyond_loopback(host: str) -> bool:
    """True unless ``host`` is a loopback address or 'localhost'."""
    if host in ("localhost", ""):
        return host == ""
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def create_app(settings: Settings | None = None, *, cluster: bool | Any = True,
               cluster_processes: bool = True, dashboard_address: str | None = None,
               shutdown_grace_s: float | None = None) -> web.Application:
    """The application. ``cluster``: True starts/connects a Dask cluster (cluster/dask.py),
    False runs chunks in the server process, or pass a started `ClusterHandle`.
    ``dashboard_address``: where a local cluster's dashboard listens (default
    GPU_BACKTEST_DASHBOARD_ADDRESS, 127.0.0.1:8787).
    ``shutdown_grace_s``: how long shutdown lets running jobs finish before handing them back
    (default GPU_BACKTEST_SHUTDOWN_GRACE_S)."""
    settings = settings or Settings.from_env()
    metrics = ServiceMetrics()
    app = web.Application(
        client_max_size=MAX_JSON_BODY,
        middlewares=[request_id_middleware, access_log_middleware(metrics), cors_middleware(settings.cors_origins),
                     error_middleware,
                     auth_middleware(settings.api_key, settings.api_key_required, settings.public_docs,
                                     console_access),
                     console_middleware],
    )
    app.on_response_prepare.append(request_id_header)
    if settings.cors_origins:
        app.on_response_prepare.append(cors_headers(settings.cors_origins))
    app[K.SETTINGS] = settings
    app[K.METRICS] = metrics
    app[K.OPENAPI] = openapi_document(public_docs=settings.public_docs)
    app[K.OPENAPI_30] = document_to_30(app[K.OPENAPI])
    watch = FinishWatch()
    app[K.WATCH] = watch
    app[K.COLUMN_SLOTS] = asyncio.Semaphore(COLUMN_COMPUTATIONS)
    app[uploads.UPLOAD_SLOTS] = asyncio.Semaphore(settings.max_concurrent_uploads)

    async def services(app: web.Application) -> AsyncIterator[None]:
        # The requests' database and file work (asyncio.to_thread) runs on a pool of its own;
        # jobs compute on the job manager's threads, so no request ever waits behind a job.
        io_pool = ThreadPoolExecutor(max_workers=settings.io_threads, thread_name_prefix="gbt-io")
        asyncio.get_running_loop().set_default_executor(io_pool)
        # compile the kernels in the background from the start (web/warmup.py): a helper process now,
        # the cluster's workers once it is up; the first job then finds them compiled
        warm = ServerWarmup(settings)
        app[K.WARMUP] = warm
        await warm.start()
        pm = build_plugin_manager()
        app[K.PM] = pm
        store = JobStore.from_settings(settings)
        await asyncio.to_thread(functools.partial(store.migrate, apply=settings.auto_migrate))
        app[K.STORE] = store
        registry = PluginRegistry(pm)
        app[K.STRATEGIES] = StrategyCatalog(registry, StrategyStore(store.engine))
        data = MarketDataService(settings, registry)
        app[K.DATA] = data
        handle = None
        if cluster is True:
            from ..cluster.dask import start_cluster

            handle = await asyncio.to_thread(start_cluster, settings, cluster_processes, dashboard_address)
        elif cluster:
            handle = cluster
        app[K.CLUSTER] = handle
        engine = Engine(settings, select_backend(settings), registry, data)
        app[K.ENGINE] = engine
        executor_factory = None
        if handle is not None:
            from ..cluster.dask import executor

            def executor_factory() -> Any:
                return executor(handle, settings)

        watch.bind(asyncio.get_running_loop())

        def on_job_event(name: str, data: dict[str, Any]) -> None:
            metrics.on_job_event(name, data)
            watch.on_event(name, data)

        jobs = JobManager(settings, store, engine, executor_factory, on_job_event, strategies=app[K.STRATEGIES])
        app[K.JOBS] = jobs
        await jobs.start()
        warm.attach(getattr(handle, "client", None))  # a stand-in cluster may have no client
        # warm the demo data in the background so a first backtest needs no generation
        from ..plugins.datasources.synthetic import DEMO_SYMBOLS

        demo = asyncio.create_task(asyncio.to_thread(data.fetch, "synthetic", DEMO_SYMBOLS))
        demo.add_done_callback(lambda t: t.cancelled() or t.exception())
        if jobs.recovered:
            log.info("recovered jobs: %s", jobs.recovered)
        if listens_beyond_loopback(settings.host) and not settings.api_key_required:
            log.warning("listening on %s with API_KEY_REQUIRED off: anyone who can reach the port can run jobs",
                        settings.host)
        yield
        await warm.close()
        await jobs.shutdown(settings.shutdown_grace_s if shutdown_grace_s is None else shutdown_grace_s)
        if handle is not None and cluster is True:
            await asyncio.to_thread(handle.close)
        await asyncio.to_thread(store.close)
        await asyncio.to_thread(data.store.close)
        if getattr(asyncio.get_running_loop(), "_default_executor", None) is not io_pool:
            io_pool.shutdown(wait=False)  # else another app on this loop may use it: the loop's close ends it

    app.cleanup_ctx.append(services)

    app.router.add_post("/backtest", h.submit_backtest)
    app.router.add_get("/backtest", h.list_backtests)
    app.router.add_get("/backtest/{job_id}", h.get_backtest)
    app.router.add_delete("/backtest/{job_id}", h.cancel_backtest)
    app.router.add_get("/backtest/{job_id}/results", h.backtest_results)
    app.router.add_get("/backtest/{job_id}/details", h.backtest_details)
    app.router.add_get("/backtest/{job_id}/columns/{n}", h.backtest_column)
    app.router.add_get("/backtest/{job_id}/report", h.backtest_report)
    app.router.add_get("/backtest/{job_id}/columns/{n}/report", h.backtest_column_report)
    app.router.add_get("/strategies", h.list_strategies)
    app.router.add_post("/strategies", h.save_strategy)
    app.router.add_get("/strategies/{name}", h.get_strategy)
    app.router.add_put("/strategies/{name}", h.save_strategy)
    app.router.add_delete("/strategies/{name}", h.delete_strategy)
    app.router.add_get("/gpu/status", h.get_gpu_status)
    app.router.add_get("/data/sources", h.data_sources)
    app.router.add_get("/data/symbols", h.data_symbols)
    app.router.add_delete("/data/symbols/{source}/{frequency}/{symbol}", h.delete_series)
    app.router.add_post("/data/upload", uploads.data_upload)
    app.router.add_get("/health", h.health)
    app.router.add_get("/metrics", h.metrics)
    app.router.add_get("/openapi.json", explorer.openapi_json)
    app.router.add_get("/docs", explorer.docs)
    app.router.add_get("/docs/{file}", explorer.docs_file)
    setup_console(app)  # /ui: the web console (web/console.py)
    return app
