"""PostgreSQL broker: messages in `realtime_messages`, delivered in process, NOTIFYed to peers.

A publish takes its channel's row in `realtime_channels` (so publishes to one channel commit
one after another), draws ids from the table's sequence and stores the messages. Once that
commits, the publishing process hands them to its own subscribers itself: no NOTIFY, no read
back. Other replicas hear of them by NOTIFY only when one is listening: every replica's LISTEN
connection holds one of SLOTS listening slots, an exclusive advisory lock (past SLOTS, a shared
overflow lock), and a publish tries the other slots shared in the statement that draws its ids: a
try that fails means a peer listens. A lone replica sends no NOTIFY at all. The notifications pack many messages each
(with their bodies when they fit), carry every message's id and the previous id on its channel,
and arrive in commit order, so every replica delivers a channel's messages in id order; a
replica that sees a gap (a dropped LISTEN connection, or its own message committed right after
a peer's) reads the missing ones from the table. A resume finds lost messages the same way.

A replica that starts listening (or listens again) takes its presence lock and then waits for
every publish already in flight (they hold a second advisory lock, shared, for their
transaction): one that looked for peers before it appeared has committed by then and is found
by the catch-up read, and every later one sees it and notifies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
import psycopg

from lockgate.realtime.broker import Broker, History, RealtimeOptions
from lockgate.realtime.message import Draft, Message
from lockgate.store.base import Tx
from lockgate.store.operations import insert_rows

log = logging.getLogger("lockgate.realtime")

NOTIFY_CHANNEL = "lockgate_realtime_batch"  # packed notes of this version
SINGLE_NOTIFY_CHANNEL = "lockgate_realtime"  # one note per message, from replicas of earlier versions
MAX_NOTIFY_BYTES = 7000  # PostgreSQL caps a payload at 8000 bytes
IDLE_CHANNEL_MS = 30 * 86400_000  # a channel's last id is remembered this long after its last message
# Advisory lock keys (two-int form; the migrations' lock is the one-bigint 727274).
LOCK_SPACE = 727274
PUBLISHING_LOCK = (LOCK_SPACE, 2)  # held shared by every publishing transaction
OVERFLOW_LOCK = (LOCK_SPACE, 1)  # held shared by listeners that found no free slot
FIRST_SLOT, SLOTS = 100, 16  # (LOCK_SPACE, 100 + s): held exclusively by the replica listening in slot s

# Whether a replica other than the one in slot `own` listens: a shared try on a slot fails only if
# a listener holds it (or is queued for it). No scan of pg_locks: a few lock-table look-ups.
_PEER_LISTENING = (  # one scalar subquery: evaluated once, not per id drawn
    f"(SELECT (SELECT bool_or(NOT pg_try_advisory_xact_lock_shared({LOCK_SPACE}, {FIRST_SLOT} + s))"
    f" FROM generate_series(0, {SLOTS - 1}) AS s WHERE s <> ?)"
    f" OR NOT pg_try_advisory_xact_lock({OVERFLOW_LOCK[0]}, {OVERFLOW_LOCK[1]}))")


_MESSAGE_COLUMNS = (("id", "bigint"), ("channel", "text"), ("prev_id", "bigint"), ("created_at", "bigint"),
                    ("body", "text"))


def append_messages(tx: Tx, entries: list[tuple[str, str, int]], keep: int, origin: str = "",
                    own_slot: int = -1) -> tuple[list[int], list[int], bool]:
    """Store (channel, body JSON, created_at) entries; returns their ids and each one's previous id
    on its channel, in the same order, and whether they were NOTIFYed: when a replica other than
    the one listening in slot `own_slot` (-1: none) listens.

    A handful of statements for the whole batch, however many channels it touches (run progress
    writes to one channel per run): lock and read every channel's row, draw the ids, insert the
    messages, write the channels back."""
    tx.execute("SELECT pg_advisory_xact_lock_shared(?, ?)", PUBLISHING_LOCK)
    updated: dict[str, int] = {}
    for channel, _, created in entries:
        updated[channel] = created  # a channel's time is its latest message's
    channels = sorted(updated)  # rows locked in one order: two batches never wait on each other crosswise
    state = {r["channel"]: [r["last_id"], r["held"]] for r in tx.all(
        "INSERT INTO realtime_channels (channel, last_id, held, updated_at)"
        " SELECT c, 0, 0, t FROM unnest(?::text[], ?::bigint[]) AS u(c, t) ORDER BY c"
        " ON CONFLICT (channel) DO UPDATE SET updated_at = excluded.updated_at RETURNING channel, last_id, held",
        (channels, [updated[c] for c in channels]))}
    # Peers are looked for once the publishing lock is held (see the module's docstring).
    drawn = tx.all(f"SELECT nextval(pg_get_serial_sequence('realtime_messages', 'id')) AS id, {_PEER_LISTENING}"
                   " AS peers FROM generate_series(1, ?)", (own_slot, len(entries)))
    peers = drawn[0]["peers"]
    fresh = sorted(r["id"] for r in drawn)
    prevs: list[int] = []
    rows: list[tuple] = []
    for (channel, body, created), new_id in zip(entries, fresh):  # ids increase along each channel
        last = state[channel]
        rows.append((new_id, channel, last[0], created, body))
        prevs.append(last[0])
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
    if peers:
        # One JSON parameter: psycopg's text[] encoding escapes every quote of every body in Python.
        tx.execute("SELECT pg_notify(?, note) FROM json_array_elements_text(?::json) AS note",
                   (NOTIFY_CHANNEL, orjson.dumps(packed_notes(origin, rows)).decode()))
    return fresh, prevs, peers


def packed_notes(origin: str, rows: list[tuple]) -> list[str]:
    """`{"o": origin, "m": [[channel, id, prev, body or null], …]}` notes of at most MAX_NOTIFY_BYTES,
    in id order; a body that cannot ride along is null (the listener reads it from the table)."""
    start = f'{{"o":{orjson.dumps(origin).decode()},"m":['
    notes: list[str] = []
    parts: list[str] = []
    size = len(start)
    for new_id, channel, prev, _, body in rows:
        head = f"[{orjson.dumps(channel).decode()},{new_id},{prev},"
        part = head + body + "]" if len(start) + len(head) + len(body) + 3 < MAX_NOTIFY_BYTES else head + "null]"
        if parts and size + len(part) + 3 > MAX_NOTIFY_BYTES:
            notes.append(start + ",".join(parts) + "]}")
            parts, size = [], len(start)
        parts.append(part)
        size += len(part) + 1
    if parts:
        notes.append(start + ",".join(parts) + "]}")
    return notes


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
        # Channels followed here → the last id delivered (None: none yet, take the next message as is).
        self._cursors: dict[str, int | None] = {}
        self._listener: asyncio.Task | None = None
        self._listening = asyncio.Event()
        self._slot = -1  # the slot this process's LISTEN connection holds: not a peer
        self.origin = uuid.uuid4().hex[:12]
        self._own_notes = f'{{"o":"{self.origin}",'  # how this process's notes begin
        self._reading: set[asyncio.Task] = set()  # reads of gaps found at local delivery
        self._peers = True  # another replica listened at the last publish (unknown before the first)

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
        for task in (self._listener, *self._reading):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._listener, *self._reading) if t is not None), return_exceptions=True)
        self._listener = None
        await super().stop()

    async def _append(self, drafts: list[Draft]) -> list[Message]:
        return await self._coalesced(drafts)

    async def _store_batch(self, drafts: list[Draft]) -> list[Message]:
        bodies = [d.body() for d in drafts]
        entries = [(d.channel, orjson.dumps(b).decode(), d.created_at_ms) for d, b in zip(drafts, bodies)]
        # Not flushed to disk before it returns: a realtime message is not kept across a database crash
        # (nor by the in-process broker across a restart), and runs' commits need not wait for it.
        ids, prevs, self._peers = await self.store.write_unflushed(
            append_messages, entries, self.options.retention_messages, self.origin, self._slot)
        messages = [Message(str(i), b) for i, b in zip(ids, bodies)]
        self._deliver_own(messages, ids, prevs)
        return messages

    def followed(self, channel: str) -> bool:
        return self._peers or channel in self._cursors

    def _deliver_own(self, messages: list[Message], ids: list[int], prevs: list[int]) -> None:
        """This process's subscribers get its messages straight after the commit. A message whose
        previous id was not delivered here yet (a peer's, committed just before, whose NOTIFY is
        still on its way) waits for a read of the gap, which brings it too."""
        gaps: dict[str, list[int]] = {}  # channel → [after, upto]
        for message, new_id, prev in zip(messages, ids, prevs):
            channel = message.channel
            if channel not in self._cursors:
                continue
            gap = gaps.get(channel)
            if gap is not None:
                gap[1] = new_id
                continue
            cursor = self._cursors[channel]
            if cursor is not None and new_id <= cursor:
                continue
            if cursor is None or prev == cursor:
                self._cursors[channel] = new_id
                self._deliver(message)
            else:
                gaps[channel] = [cursor, new_id]
        for channel, (after, upto) in gaps.items():
            task = asyncio.create_task(self._fetch(channel, after, upto))
            self._reading.add(task)
            task.add_done_callback(self._read_done)

    def _read_done(self, task: asyncio.Task) -> None:
        self._reading.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("realtime: reading missed messages failed (%s); the next one retries",
                        task.exception().__class__.__name__)

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

    # -- the LISTEN side: peers' messages --------------------------------------------------

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.uri, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    await conn.execute(f"LISTEN {SINGLE_NOTIFY_CHANNEL}")
                    # Present from here on; then wait out the publishes that may not have seen it.
                    self._slot = await self._take_slot(conn)
                    await conn.execute("SELECT pg_advisory_lock(%s, %s)", PUBLISHING_LOCK)
                    await conn.execute("SELECT pg_advisory_unlock(%s, %s)", PUBLISHING_LOCK)
                    if self.problem:
                        log.warning("realtime: listening on PostgreSQL again; catching up")
                        self.problem = None
                    self._listening.set()
                    await self._catch_up()
                    async for note in conn.notifies():
                        if not note.payload.startswith(self._own_notes):  # delivered here already
                            await self._on_note(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.problem:
                    log.warning("realtime: lost the PostgreSQL LISTEN connection (%s: %s); retrying every second",
                                exc.__class__.__name__, exc)
                self.problem = f"realtime listener cannot reach PostgreSQL: {exc.__class__.__name__}"
                await asyncio.sleep(1.0)
            finally:
                self._slot = -1

    async def _take_slot(self, conn: psycopg.AsyncConnection) -> int:
        """Hold a free listening slot (publishes in flight hold the free ones shared for a moment:
        wait for them, not for another listener); past SLOTS replicas, the shared overflow lock."""
        await conn.execute("SET lock_timeout = '3s'")
        try:
            for _ in range(SLOTS):
                taken = {r[0] for r in await (await conn.execute(
                    "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objsubid = 2"
                    " AND mode = 'ExclusiveLock' AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())", (LOCK_SPACE,))).fetchall()}
                free = [s for s in range(SLOTS) if FIRST_SLOT + s not in taken]
                if not free:
                    break
                try:
                    await conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_SPACE, FIRST_SLOT + free[0]))
                    return free[0]
                except psycopg.errors.LockNotAvailable:  # another replica took it meanwhile
                    continue
            log.warning("realtime: more than %d replicas listen; this one notifies on every publish", SLOTS)
            await conn.execute("SELECT pg_advisory_lock_shared(%s, %s)", OVERFLOW_LOCK)
            return -1
        finally:
            await conn.execute("RESET lock_timeout")

    async def _on_note(self, payload: str) -> None:
        try:
            note = orjson.loads(payload)
            if "c" in note:  # one message, from a replica of an earlier version
                entries = [(note["c"], int(note["i"]), int(note["p"]), note.get("m"))]
            else:
                entries = [(channel, int(new_id), int(prev), body) for channel, new_id, prev, body in note["m"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("realtime: ignoring a malformed notification %r", payload[:200])
            return
        for channel, new_id, prev, body in entries:
            await self._arrived(channel, new_id, prev, body)

    async def _arrived(self, channel: str, new_id: int, prev: int, body: dict[str, Any] | None) -> None:
        if channel not in self._cursors:
            return
        cursor = self._cursors[channel]
        if cursor is not None and new_id <= cursor:
            return
        if (cursor is None or prev == cursor) and body is not None:
            self._cursors[channel] = new_id
            self._deliver(Message(str(new_id), body))
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
