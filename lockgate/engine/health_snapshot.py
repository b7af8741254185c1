"""One snapshot of how the server is doing: the dashboard's Health page, `/v1/stats` and `/metrics` all read it."""

from __future__ import annotations

import functools
from importlib import metadata
from typing import Any

from lockgate.models import now_ms
from lockgate.store import health_operations as hops
from lockgate.store import operations as ops
from lockgate.store import replica_operations as rops
from lockgate.store.base import Tx

WINDOW_MS = 15 * 60_000  # the chart's span
BUCKET_MS = 60_000


@functools.cache  # reading the package metadata parses a file: /v1/stats is polled
def version() -> str:
    try:
        return metadata.version("lockgate")
    except metadata.PackageNotFoundError:
        return "unknown"


def _read(tx: Tx, now: int) -> dict[str, Any]:
    since = now - WINDOW_MS
    oldest = hops.oldest_due_job(tx, now)
    functions = {f.id: f for f in ops.load_functions(tx, include_archived=True)}
    by_function = hops.runs_by_function(tx)  # run_counts and a few live rows, not every stored run
    per_function = [
        {"function_id": fid, "slug": functions[fid].slug if fid in functions else fid,
         "app": functions[fid].app_name if fid in functions else None, "runs": counts}
        for fid, counts in by_function.items()
    ]
    per_function.sort(key=lambda f: f["slug"])
    return {
        "runs": hops.total_by_status(by_function),
        "queue_depth": ops.queue_depth(tx),
        "due_jobs": hops.due_job_count(tx, now),
        "oldest_due_lateness_ms": 0 if oldest is None else now - oldest,
        "waits": ops.count_waits(tx),
        "functions": per_function,
        "throughput": _series(hops.throughput(tx, since=since, bucket_ms=BUCKET_MS), now),
        "started_last_15m": hops.runs_started_since(tx, since),
        "replicas": rops.list_replicas(tx),  # `start` replicas sharing this database (none listed in dev)
    }


def _series(rows: list[dict[str, Any]], now: int) -> list[dict[str, Any]]:
    """One point per minute of the window (empty minutes included), oldest first."""
    last = now // BUCKET_MS * BUCKET_MS
    points = {last - i * BUCKET_MS: {"at": last - i * BUCKET_MS, "completed": 0, "failed": 0, "cancelled": 0,
                                     "mean_ms": 0.0} for i in range(WINDOW_MS // BUCKET_MS)}
    weights: dict[int, int] = {}
    for r in rows:
        point = points.get(r["bucket"])
        if point is None:
            continue
        key = r["status"].lower()
        if key in point:
            point[key] += r["n"]
        total = weights.get(r["bucket"], 0)
        point["mean_ms"] = (point["mean_ms"] * total + r["mean_ms"] * r["n"]) / (total + r["n"])
        weights[r["bucket"]] = total + r["n"]
    return [points[k] for k in sorted(points)]


async def snapshot(engine: Any) -> dict[str, Any]:
    now = now_ms()
    store = engine.store
    figures = await store.read(_read, now)
    figures.update({
        "calls_in_flight": engine.dispatcher.inflight,
        "calls": {"total": getattr(engine.executor, "calls", 0),
                  "use_api": getattr(engine.executor, "calls_use_api", 0)},
        "store": {"kind": store.description, "commits": getattr(store, "commits", None),
                  "writes": getattr(store, "writes", None)},
        "version": version(),
        "this_replica": engine.dispatcher.owner,
        "at": now,
    })
    return figures
