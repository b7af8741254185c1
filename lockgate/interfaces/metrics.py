"""`/metrics`: the Health page's figures in Prometheus text format (prometheus-client renders them).

Values are read from the store at scrape time (the same snapshot as the Health page), so every
replica reports the shared queue and run counts, plus its own calls in flight.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine import health_snapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class SnapshotCollector(Collector):
    def __init__(self, snap: dict[str, Any]) -> None:
        self.snap = snap

    def collect(self):
        s = self.snap
        runs = GaugeMetricFamily("lockgate_runs", "Stored runs by status", labels=["status"])
        for status, n in sorted(s["runs"].items()):
            runs.add_metric([status], n)
        yield runs
        per_fn = GaugeMetricFamily("lockgate_function_runs", "Stored runs by function and status",
                                   labels=["function", "status"])
        for f in s["functions"]:
            for status, n in sorted(f["runs"].items()):
                per_fn.add_metric([f["slug"], status], n)
        yield per_fn
        yield GaugeMetricFamily("lockgate_queue_depth", "Queued jobs (calls, timers, deliveries)",
                                value=s["queue_depth"])
        yield GaugeMetricFamily("lockgate_queue_due_jobs", "Jobs due now and not leased", value=s["due_jobs"])
        yield GaugeMetricFamily("lockgate_queue_oldest_due_lateness_seconds",
                                "How late the oldest due, unleased job is", value=s["oldest_due_lateness_ms"] / 1000)
        yield GaugeMetricFamily("lockgate_calls_in_flight", "Calls to apps in flight on this replica",
                                value=s["calls_in_flight"])
        waits = GaugeMetricFamily("lockgate_waits", "Pending waits by kind", labels=["kind"])
        for kind, n in sorted(s["waits"].items()):
            waits.add_metric([kind], n)
        yield waits
        yield CounterMetricFamily("lockgate_calls", "Calls to apps made by this replica", value=s["calls"]["total"])
        last = s["throughput"][-2] if len(s["throughput"]) > 1 else None  # the last complete minute
        finished = GaugeMetricFamily("lockgate_runs_finished_last_minute", "Runs finished in the last full minute",
                                     labels=["status"])
        latency = GaugeMetricFamily("lockgate_run_duration_mean_seconds_last_minute",
                                    "Mean duration of the runs that finished in the last full minute")
        if last:
            for status in ("completed", "failed", "cancelled"):
                finished.add_metric([status], last[status])
            latency.add_metric([], last["mean_ms"] / 1000)
        yield finished
        yield latency
        yield GaugeMetricFamily("lockgate_replicas", "Replicas registered on this database (start mode; 1 in dev)",
                                value=max(1, len(s["replicas"])))
        yield InfoMetricFamily("lockgate_build", "Version and store backend",
                               value={"version": s["version"], "store": s["store"]["kind"]})


def routes(engine: Any, allowed) -> list[Route]:
    async def metrics(request: Request) -> Response:
        allowed(request)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(await health_snapshot.snapshot(engine)))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE)

    return [Route("/metrics", metrics, methods=["GET"])]
