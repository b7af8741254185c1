"""PostgreSQL broker: messages in `realtime_messages`, announced to every replica by NOTIFY.

A publish takes its channel's row in `realtime_channels` (so publishes to one channel commit
one after another), draws ids from the table's sequence, stores the messages and NOTIFYs each
with its id, the previous id on its channel and, when it fits, its body. NOTIFYs arrive in
commit order, so every replica sees a channel's messages in id order. Each message names its
predecessor, so a replica that missed some (a dropped LISTEN connection) notices the gap and
reads them from the table; a resume finds lost messages the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import psycopg

from lockgate.realtime.broker import Broker, History, RealtimeOptions
from lockgate.realtime.message import Draft, Message
from lockgate.store.base import Tx
from lockgate.store.operations import insert_rows

log = logging.getLogger("lockgate.realtime")

NOTIFY_CHANNEL = "lockgate_realtime"
MAX_NOTIFY_BYTES = 7000  # PostgreSQL caps a payload at 8000 bytes
IDLE_CHANNEL_MS = 30 * 86400_000  # a channel's last id is remembered this long after its last message


_MESSAGE_COLUMNS = (("id", "bigint"), ("channel", "text"), ("prev_id", "bigint"), ("created_at", "bigint"),
                    ("body", "text"))


def append_messages(tx: Tx, entries: list[tuple[str, str, int]], keep: int) -> list[int]:
    """Store (channel, body JSON, created_at) entries; returns their ids, in the same order.

    A handful of statements for the whole batch, however many channels it touches (run progress
    writes to one channel per run): lock and read every channel's row, draw the ids, insert the
    messages, write the channels back, NOTIFY."""
    updated: dict[str, int] = {}
    for channel, _, created in entries:
        updated[channel] = created  # a channel's time is its latest message's
    channels = sorted(updated)  # rows locked in one order: two batches never wait on each other crosswise
    state = {r["channel"]: [r["last_id"], r["held"]] for r in tx.all(
        "INSERT INTO realtime_channels (channel, last_id, held, updated_at)"
        " SELECT c, 0, 0, t FROM unnest(?::text[], ?::bigint[]) AS u(c, t) ORDER BY c"
        " ON CONFLICT (channel) DO UPDATE SET updated_at = excluded.updated_at RETURNING channel, last_id, held",
        (channels, [updated[c] for c in channels]))}
    fresh = sorted(r["id"] for r in tx.all(
        "SELECT nextval(pg_get_serial_sequence('realtime_messages', 'id')) AS id FROM generate_series(1, ?)",
        (len(entries),)))
    ids: list[int] = []
    rows: list[tuple] = []
    notes: list[str] = []
    for (channel, body, created), new_id in zip(entries, fresh):  # ids increase along each channel
        last = state[channel]
        rows.append((new_id, channel, last[0], created, body))
        head = f'{{"c":{orjson.dumps(channel).decode()},"i":{new_id},"p":{last[0]}'
        notes.append(head + (f',"m":{body}}}' if len(head) + len(body) < MAX_NOTIFY_BYTES else "}"))
        ids.append(new_id)
        last[0] = new_id
        last[1] += 1
    insert_rows(tx, "realtime_messages", _MESSAGE_COLUMNS, rows)
    for channel in channels:
        if state[channel][1] > keep + max(10, keep // 10):  # trim in steps, not on every publish
            tx.execute("DELETE FROM realtime_messages WHERE channel = ? AND id <= ?",
                       (channel, prev_kept(tx, channel, keep)))
            state[channel][1] = keep
    tx.execute("UPDATE realtime_channels SET last_id = u.last_id, held = u.held"
               " FROM unnest(?::text[], ?::bigint[], ?::bigint[]) AS u(channel, last_id, held)"
               " WHERE realtime_channels.channel = u.channel",
               (channels, [state[c][0] for c in channels], [state[c][1] for c in channels]))
    # One JSON parameter: psycopg's text[] encoding escapes every quote of every body in Python.
    tx.execute("SELECT pg_notify(?, note) FROM json_array_elements_text(?::json) AS note",
               (NOTIFY_CHANNEL, orjson.dumps(notes).decode()))
    return ids


def prev_kept(tx: Tx, channel: str, keep: int) -> int:
    row = tx.one("SELECT id FROM realtime_messages WHERE channel = ? ORDER BY id DESC LIMIT 1 OFFSET ?", (channel, keep))
    return row["id"] if row else 0


def messages_after(tx: Tx, channel: str, after: int, upto: int | None, limit: int) -> list[Any]:
    if upto is None:
        return tx.all("SELECT id, prev_id, body FROM realtime_messages WHERE channel = ? AND id > ? ORDER BY id LIMIT ?",
                      (channel, after, limit))
    return tx.all("SELECT id, prev_id, body FROM realtime_messages WHERE channel = ? AND id > ? AND id <= ? "
                  "ORDER BY id LIMIT ?", (channel, after, upto, limit))


def channel_last_id(tx: Tx, channel: str) -> int:
    row = tx.one("SELECT last_id FROM realtime_channels WHERE channel = ?", (channel,))
    return row["last_id"] if row else 0


def history_of(tx: Tx, channel: str, after: int, limit: int) -> tuple[list[Any], int, int | None]:
    rows = messages_after(tx, channel, after, None, limit)
    oldest = tx.one("SELECT MIN(id) AS id FROM realtime_messages WHERE channel = ?", (channel,))
    return rows, channel_last_id(tx, channel), oldest["id"] if oldest else None


def sweep(tx: Tx, before_ms: int, idle_before_ms: int) -> None:
    tx.execute("DELETE FROM realtime_messages WHERE created_at < ?", (before_ms,))
    tx.execute("DELETE FROM realtime_channels WHERE updated_at < ?", (idle_before_ms,))


class PostgresBroker(Broker):
    name = "postgres"

    def __init__(self, store: Any, options: RealtimeOptions | None = None) -> None:
        super().__init__(options)
        self.store = store
        self.uri: str = store.uri
        # Channels followed here → the last id delivered (None: none yet, take the next NOTIFY as is).
        self._cursors: dict[str, int | None] = {}
        self._listener: asyncio.Task | None = None
        self._listening = asyncio.Event()

    def order_key(self, message_id: str) -> int:
        value = int(message_id)
        if value < 0:
            raise ValueError(message_id)
        return value

    async def start(self) -> None:
        await super().start()
        self._listener = asyncio.create_task(self._listen_forever(), name="realtime-pg-listen")
        try:
            await asyncio.wait_for(self._listening.wait(), 10)
        except asyncio.TimeoutError:
            log.warning("realtime: not yet listening on PostgreSQL; messages from other replicas wait until it is")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
            self._listener = None
        await super().stop()

    async def _append(self, drafts: list[Draft]) -> list[Message]:
        return await self._coalesced(drafts)

    async def _store_batch(self, drafts: list[Draft]) -> list[Message]:
        bodies = [d.body() for d in drafts]
        entries = [(d.channel, orjson.dumps(b).decode(), d.created_at_ms) for d, b in zip(drafts, bodies)]
        # Not flushed to disk before it returns: a realtime message is not kept across a database crash
        # (nor by the in-process broker across a restart), and runs' commits need not wait for it.
        ids = await self.store.write_unflushed(append_messages, entries, self.options.retention_messages)
        # Delivery, here too, comes through NOTIFY: one path keeps every replica in the same order.
        return [Message(str(i), b) for i, b in zip(ids, bodies)]

    async def _history(self, channel: str, after: str) -> History:
        after_id = int(after)
        # The table may hold a little more than the retention count (it is trimmed in steps).
        rows, last_id, oldest = await self.store.read(history_of, channel, after_id,
                                                      2 * self.options.retention_messages + 100)
        lost = (rows[0]["prev_id"] > after_id) if rows else last_id > after_id
        return History([Message(str(r["id"]), orjson.loads(r["body"])) for r in rows],
                       lost or after_id > last_id > 0, None if oldest is None else str(oldest))

    def _cutoff_ms(self) -> int:
        return int((time.time() - self.options.retention_s) * 1000)

    def _watch(self, channel: str) -> None:
        self._cursors.setdefault(channel, None)

    def _unwatch(self, channel: str) -> None:
        self._cursors.pop(channel, None)

    async def _ready(self, channel: str) -> None:
        if channel in self._cursors and self._cursors[channel] is None:
            last_id = await self.store.read(channel_last_id, channel)
            if channel in self._cursors and self._cursors[channel] is None:
                self._cursors[channel] = last_id

    async def _sweep(self) -> None:
        now = int(time.time() * 1000)
        await self.store.write(sweep, self._cutoff_ms(), now - IDLE_CHANNEL_MS)

    # -- the LISTEN side --------------------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.uri, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if self.problem:
                        log.warning("realtime: listening on PostgreSQL again; catching up")
                        self.problem = None
                    self._listening.set()
                    await self._catch_up()
                    async for note in conn.notifies():
                        await self._on_note(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.problem:
                    log.warning("realtime: lost the PostgreSQL LISTEN connection (%s: %s); retrying every second",
                                exc.__class__.__name__, exc)
                self.problem = f"realtime listener cannot reach PostgreSQL: {exc.__class__.__name__}"
                await asyncio.sleep(1.0)

    async def _on_note(self, payload: str) -> None:
        try:
            note = orjson.loads(payload)
            channel, new_id, prev = note["c"], int(note["i"]), int(note["p"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("realtime: ignoring a malformed notification %r", payload[:200])
            return
        if channel not in self._cursors:
            return
        cursor = self._cursors[channel]
        if cursor is not None and new_id <= cursor:
            return
        if (cursor is None or prev == cursor) and "m" in note:
            self._cursors[channel] = new_id
            self._deliver(Message(str(new_id), note["m"]))
            return
        # Missed notifications, or a body too large to ride along: read them from the table.
        await self._fetch(channel, prev if cursor is None else cursor, new_id)

    async def _fetch(self, channel: str, after: int, upto: int | None) -> None:
        rows = await self.store.read(messages_after, channel, after, upto, 100_000)
        for row in rows:
            cursor = self._cursors.get(channel, -1)
            if channel not in self._cursors or (cursor is not None and row["id"] <= cursor):
                continue
            self._cursors[channel] = row["id"]
            self._deliver(Message(str(row["id"]), orjson.loads(row["body"])))

    async def _catch_up(self) -> None:
        for channel, cursor in list(self._cursors.items()):
            if cursor is not None:
                await self._fetch(channel, cursor, None)
