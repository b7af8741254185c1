"""Realtime over HTTP: the SDKs' publish / token / WebSocket subscribe, and resumable SSE.

Shapes follow the official SDKs (inngest-py `experimental.realtime`, the JS `inngest/realtime`);
lockgate's additions (ids, resume, retention, run progress) are described in docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import secrets
from collections import OrderedDict
from typing import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lockgate.engine.engine import Engine
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.errors import ApiError, error_response, json_response, read_body
from lockgate.realtime import (CLOSING, PROGRESS_TOPIC, RESERVED_PREFIX, BrokerUnavailable, Draft, Message,
                               Subscription, tokens)
from lockgate.store import operations as ops

log = logging.getLogger("lockgate.realtime")

HEARTBEAT_S = 15.0
SSE_RETRY_MS = 2000
STREAM_CONTENT_TYPE = "text/stream"
RAW_KIND = "raw"  # see lockgate.interfaces.checkpoint_api (the stream tee)


def routes(engine: Engine, access: AccessPolicy, *, signing_keys: list[str]) -> list:
    broker = engine.realtime
    options = broker.options
    token_secrets = [tokens.token_secret(k) for k in signing_keys] or [tokens.token_secret(None)]
    function_of_run: OrderedDict[str, str | None] = OrderedDict()  # run id → function slug, recent runs

    async def fn_id_for(run_id: str | None) -> str | None:
        if not run_id:
            return None
        if run_id not in function_of_run:
            run = await engine.store.read(ops.get_run, run_id)
            function_of_run[run_id] = run.function_slug if run else None
            if len(function_of_run) > 10_000:
                function_of_run.popitem(last=False)
        return function_of_run[run_id]

    def check_limit(size: int | None) -> None:
        if size is None or size > options.max_message_bytes:
            told = "larger than the limit" if size is None else f"{size} bytes; the limit is"
            raise ApiError(413, f"realtime message is {told} {options.max_message_bytes} bytes "
                                "(LOCKGATE_REALTIME_MAX_MESSAGE_BYTES): send smaller messages or stream the body "
                                f"with Content-Type: {STREAM_CONTENT_TYPE}")

    async def read_message(request: Request) -> bytes:
        try:
            return await read_body(request, limit=options.max_message_bytes)
        except ApiError as exc:
            if exc.status == 413:
                declared = request.headers.get("content-length", "")
                check_limit(int(declared) if declared.isdigit() else None)
            raise

    async def publish(request: Request) -> Response:
        access.check_api(request)
        channel = request.query_params.get("channel", "")
        topics = request.query_params.getlist("topic")
        run_id = request.query_params.get("run_id") or None
        if not channel:
            raise ApiError(400, "query parameter 'channel' is required: /v1/realtime/publish?channel=<c>&topic=<t>")
        if not topics or not all(topics):
            raise ApiError(400, "query parameter 'topic' is required: /v1/realtime/publish?channel=<c>&topic=<t>")
        if channel.startswith(RESERVED_PREFIX):
            raise ApiError(403, f"channels starting with '{RESERVED_PREFIX}' are the server's own; publish to another name")
        fn_id = await fn_id_for(run_id)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if content_type == STREAM_CONTENT_TYPE:
                ids = await publish_stream(request, channel, topics, run_id, fn_id)
            else:
                data = decode_payload(await read_message(request))
                sent = await broker.publish_many([Draft(channel, t, data, run_id=run_id, fn_id=fn_id) for t in topics])
                ids = [m.id for m in sent]
        except BrokerUnavailable as exc:
            log.warning("realtime: publish to %r failed: %s", channel, exc)
            raise ApiError(503, str(exc)) from None
        return json_response({"ok": True, "ids": ids})

    async def publish_stream(request: Request, channel: str, topics: list[str], run_id: str | None,
                             fn_id: str | None) -> list[str | None]:
        """A streamed body: start, one `chunk` per piece received, end — per topic, as it arrives."""
        stream_id = secrets.token_hex(12)

        def drafts(kind: str, data, with_stream: bool = False) -> list[Draft]:
            return [Draft(channel, t, data, kind, run_id, fn_id, stream_id if with_stream else None) for t in topics]

        first = await broker.publish_many(drafts("datastream-start", stream_id))
        last = first
        decoder = _Utf8Chunks()
        async for piece in request.stream():
            text = decoder.feed(piece)
            if text:
                check_limit(len(text))
                last = await broker.publish_many(drafts("chunk", text, with_stream=True))
        tail = decoder.flush()
        if tail:
            await broker.publish_many(drafts("chunk", tail, with_stream=True))
        last = await broker.publish_many(drafts("datastream-end", stream_id))
        return [first[0].id, last[0].id]

    async def mint_token(request: Request) -> Response:
        access.check_api(request)
        try:
            body = orjson.loads(await read_body(request, limit=64 * 1024) or b"null")
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
        channel, topics = parse_token_request(body)
        return json_response({"jwt": tokens.mint(token_secrets[0], channel, topics, options.token_ttl_s)})

    def grant_for(token: str | None) -> tokens.Grant:
        try:
            return tokens.verify(token_secrets, token)
        except tokens.TokenError as exc:
            raise ApiError(401, str(exc)) from None

    def resume_point(request_headers, query) -> str | None:
        after = query.get("last_event_id") or request_headers.get("last-event-id") or None
        if after is not None:
            try:
                broker.order_key(after)
            except ValueError:
                raise ApiError(400, f"Last-Event-ID {after!r} is not an id this server gave out; "
                                    "reconnect without it to follow live messages") from None
        return after

    async def open_subscription(grant: tokens.Grant, after: str | None) -> Subscription:
        sub = broker.subscribe(grant.channel, topics=grant.topics, after=after)
        try:
            await sub.ready()
        except BrokerUnavailable as exc:
            await sub.close()
            raise ApiError(503, str(exc)) from None
        return sub

    async def sse(request: Request) -> Response:
        grant = grant_for(request.query_params.get("token"))
        after = resume_point(request.headers, request.query_params)
        sub = await open_subscription(grant, after)
        return StreamingResponse(sse_stream(sub), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def connect(websocket: WebSocket) -> None:
        try:
            grant = grant_for(websocket.query_params.get("token"))
            after = resume_point(websocket.headers, websocket.query_params)
            sub = await open_subscription(grant, after)
        except ApiError as exc:
            log.info("realtime: refused a WebSocket subscription: %s", exc.message)
            await websocket.send_denial_response(error_response(exc.status, exc.message))
            return
        await websocket.accept()
        reader = asyncio.create_task(_drain_incoming(websocket))
        try:
            async for message in _with_heartbeats(sub, reader):
                if message is None:
                    await websocket.send_text('{"kind":"ping"}')
                    continue
                await websocket.send_text(message.dumps().decode())
                if message.kind == CLOSING:
                    break
        except (WebSocketDisconnect, RuntimeError):
            pass  # the subscriber went away
        finally:
            reader.cancel()
            await sub.close()
            try:
                await websocket.close()
            except RuntimeError:
                pass

    return [
        Route("/v1/realtime/publish", publish, methods=["POST"]),
        Route("/v1/realtime/token", mint_token, methods=["POST"]),
        Route("/v1/realtime/sse", sse, methods=["GET"]),
        WebSocketRoute("/v1/realtime/connect", connect),
    ]


def parse_token_request(body) -> tuple[str, list[str]]:
    """The SDKs send `[{"channel": c, "name": topic, "kind": "run"}, …]`; `{"channel", "topics"}` works too."""
    if isinstance(body, dict) and isinstance(body.get("channel"), str) and isinstance(body.get("topics"), list):
        entries = [{"channel": body["channel"], "name": t} for t in body["topics"]]
    elif isinstance(body, list):
        entries = body
    else:
        raise ApiError(400, 'the body must be [{"channel": "<c>", "name": "<topic>"}, …] as the SDKs send it')
    channels, topics = set(), []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("channel"), str) or not entry["channel"] \
                or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ApiError(400, 'each entry needs a non-empty "channel" and topic "name"')
        channels.add(entry["channel"])
        topics.append(entry["name"])
    if len(channels) != 1:
        raise ApiError(400, f"a subscription token covers exactly one channel; this request names {len(channels)}")
    return channels.pop(), topics


def decode_payload(body: bytes):
    """JSON when it parses; the JS SDK sends a string payload as raw text, so that is kept as a string."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return body.decode()
        except UnicodeDecodeError:
            raise ApiError(400, "the message body is neither JSON nor UTF-8 text") from None


async def sse_stream(sub: Subscription) -> AsyncIterator[bytes]:
    try:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        async for message in _with_heartbeats(sub, None):
            if message is None:
                yield b": keep-alive\n\n"
                continue
            yield sse_frame(message)
            if message.kind == CLOSING:
                return
    finally:
        await sub.close()


def sse_frame(message: Message) -> bytes:
    if message.kind == RAW_KIND and isinstance(message.data, str):
        return message.data.encode()  # a durable endpoint's stream: already SSE, sent as the app wrote it
    lines = []
    if message.id is not None:
        lines.append(f"id: {message.id}")
    lines.append(f"event: {sse_event_name(message)}")
    lines.append("data: " + message.dumps().decode())
    return ("\n".join(lines) + "\n\n").encode()


def sse_event_name(message: Message) -> str:
    """Progress by its type, other data by topic, streams and control messages by kind."""
    if message.kind != "data":
        return message.kind
    data = message.data
    if message.topic == PROGRESS_TOPIC and message.channel.startswith(RESERVED_PREFIX) and isinstance(data, dict):
        return str(data.get("type", PROGRESS_TOPIC))
    return _single_line(message.topic) or "message"


def _single_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


async def _with_heartbeats(sub: Subscription, stop: asyncio.Task | None) -> AsyncIterator[Message | None]:
    """The subscription's messages, with None every HEARTBEAT_S of quiet. The pending read is
    kept across heartbeats (never cancelled), so nothing is lost between them."""
    pending: asyncio.Task | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(sub.__anext__())
            waiting = {pending} if stop is None else {pending, stop}
            done, _ = await asyncio.wait(waiting, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if stop is not None and stop in done:
                return
            if pending not in done:
                yield None
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield message
    finally:
        if pending is not None:
            pending.cancel()


async def _drain_incoming(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so a disconnect is noticed at once."""
    try:
        while True:
            await websocket.receive_text()
    except (WebSocketDisconnect, RuntimeError, KeyError):
        return


class _Utf8Chunks:
    """Decode a byte stream to text without splitting a multi-byte character across chunks."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
