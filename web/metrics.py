"""Prometheus metrics of one server: HTTP requests, latencies, jobs by state, durations, queue depth.

A registry per app (so several apps in one process — tests — don't collide); job gauges are
refreshed from the job store at scrape time.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..core.jobstatus import QUEUED, STATUSES

STATES = STATUSES


class ServiceMetrics:
    """The metric families and their update methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("gpu_backtest_http_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("gpu_backtest_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.jobs = Gauge("gpu_backtest_jobs", "jobs by state", ["state"], registry=self.registry)
        self.queue_depth = Gauge("gpu_backtest_queue_depth", "queued jobs", registry=self.registry)
        self.running_here = Gauge("gpu_backtest_jobs_running_here", "jobs running in this process",
                                  registry=self.registry)
        self.job_duration = Histogram("gpu_backtest_job_duration_seconds", "job run time, by final state",
                                      ["state"], registry=self.registry,
                                      buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900))
        self.submitted = Counter("gpu_backtest_jobs_submitted_total", "jobs submitted", registry=self.registry)
        self.leases_lost = Counter("gpu_backtest_job_leases_lost_total",
                                   "running jobs this process stopped because it lost their lease",
                                   registry=self.registry)
        self.handed_back = Counter("gpu_backtest_jobs_handed_back_total",
                                   "running jobs this process handed back to the queue at shutdown",
                                   registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def on_job_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "submitted":
            self.submitted.inc()
        elif name == "finished":
            self.job_duration.labels(data["status"]).observe(data["duration_s"])
        elif name == "lease_lost":
            self.leases_lost.inc()
        elif name == "handed_back":
            self.handed_back.inc(data["jobs"])

    def render(self, counts: dict[str, int], running_here: int) -> bytes:
        for s in STATES:
            self.jobs.labels(s).set(counts.get(s, 0))
        self.queue_depth.set(counts.get(QUEUED, 0))
        self.running_here.set(running_here)
        return generate_latest(self.registry)
