"""Queue and URL-group changes, each one store transaction (called by the QStash router)."""

from __future__ import annotations

from lockgate.qstash.delivery import release_waiting
from lockgate.qstash.models import UrlGroup
from lockgate.qstash.publish import NotFound
from lockgate.store import qstash_operations as qops
from lockgate.store.base import Tx


def upsert_queue(tx: Tx, name: str, parallelism: int, paused: bool, now: int) -> None:
    qops.upsert_queue(tx, name, parallelism=parallelism, paused=paused, now=now)
    if not paused:  # resumed or widened: let waiting messages go
        release_waiting(tx, "queue_name", name, parallelism, now)


def set_queue_paused(tx: Tx, name: str, paused: bool, now: int) -> None:
    queue = qops.get_queue(tx, name)
    if queue is None:
        raise NotFound(f"queue {name} not found")
    upsert_queue(tx, name, queue.parallelism, paused, now)


def add_endpoints(tx: Tx, name: str, endpoints: list[dict[str, str]], now: int) -> None:
    """Create the group if needed; an endpoint with the same URL or name is replaced."""
    group = qops.get_url_group(tx, name) or UrlGroup(name=name, endpoints=[], created_at=now, updated_at=now)
    for new in endpoints:
        group.endpoints = [e for e in group.endpoints
                           if e["url"] != new["url"] and (not new.get("name") or e.get("name") != new["name"])]
        group.endpoints.append(new)
    group.updated_at = now
    qops.save_url_group(tx, group)


def remove_endpoints(tx: Tx, name: str, removing: list[dict[str, str]], now: int) -> None:
    """Removing the last endpoint deletes the group."""
    group = qops.get_url_group(tx, name)
    if group is None:
        raise NotFound(f"url group {name} not found")
    group.endpoints = [e for e in group.endpoints if not any(
        (r.get("url") and r["url"] == e["url"]) or (r.get("name") and r["name"] == e.get("name")) for r in removing)]
    if group.endpoints:
        group.updated_at = now
        qops.save_url_group(tx, group)
    else:
        qops.delete_url_group(tx, name)
