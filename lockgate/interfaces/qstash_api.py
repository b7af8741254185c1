"""The QStash v2 HTTP API (spec `qstash-api.md`): publish, enqueue, batch and the management routes.

Destinations travel inside the path (`/v2/publish/https://host/a%20b?x=1`), so they are read from
the raw, undecoded path and the raw query string, never from the decoded route parameters.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.interfaces.errors import ApiError, json_response, read_body, read_json
from lockgate.limits import DEFAULT as DEFAULT_LIMITS, Limits
from lockgate.models import now_ms
from lockgate.protocol.qstash_signing import DEV_TOKEN
from lockgate.qstash import admin, flow
from lockgate.qstash.config import ConfigError, canonical_header, check_name, check_url, classify_destination, parse_config
from lockgate.qstash.delivery import release_waiting
from lockgate.qstash.models import LogState
from lockgate.qstash.publish import NotFound, PublishRequest, is_deduplicated
from lockgate.qstash.render import group_json, message_json, queue_json, schedule_json
from lockgate.qstash.service import QStash
from lockgate.store import qstash_operations as qops

# Query filters shared by bulk cancel, DLQ and logs: parameter → column.
_MESSAGE_FILTERS = {"messageId": "message_id", "messageIds": "message_id", "url": "url", "topicName": "topic_name",
                    "queueName": "queue_name", "scheduleId": "schedule_id", "label": "label",
                    "flowControlKey": "flow_control_key", "callerIp": "caller_ip", "callerIP": "caller_ip"}
_NOT_FORWARDED = {"host", "authorization", "content-length", "content-type", "connection", "keep-alive",
                  "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"}
_PAGING = {"cursor", "count", "fromDate", "toDate", "order"}


def _ok() -> Response:
    return json_response({})


class QStashApi:
    def __init__(self, qstash: QStash, limits: Limits = DEFAULT_LIMITS) -> None:
        self.qstash = qstash
        self.store = qstash.store
        self.max_body = limits.max_qstash_body_bytes
        self.max_depth = limits.max_json_depth

    # -- edge helpers --------------------------------------------------------------

    def _auth(self, request: Request) -> None:
        token = self.qstash.options.token
        if not token:
            raise ApiError(401, "the QStash API is not configured on this server: set QSTASH_TOKEN")
        header = request.headers.get("authorization", "")
        # A webhook sender may carry its own Authorization; the query token then identifies us.
        candidates = [header[7:].strip() if header.lower().startswith("bearer ") else "",
                      request.query_params.get("qstash_token", "")]
        candidates = [c for c in candidates if c]
        if not candidates:
            raise ApiError(401, "missing token: send 'Authorization: Bearer <QSTASH_TOKEN>'")
        if not any(hmac.compare_digest(c.encode(), token.encode()) for c in candidates):
            dev = hmac.compare_digest(token.encode(), DEV_TOKEN.encode())
            where = ("this dev server uses the QStash dev server's preset token (see the README's QStash .env)"
                     if dev else "set QSTASH_TOKEN in the app to the token lockgate was started with"
                     " (QSTASH_TOKEN / LOCKGATE_QSTASH_TOKEN)")
            raise ApiError(401, f"invalid token: the Bearer token is not this server's QStash token; {where}."
                           " A production token from Upstash does not work here: point QSTASH_URL at Upstash"
                           " to use it")

    @staticmethod
    def _split_query(request: Request) -> tuple[list[tuple[str, str]], str]:
        """QStash's own query parameters become config headers; the rest belongs to the destination."""
        raw = request.scope.get("query_string", b"").decode("latin-1")
        config, kept = [], []
        for pair in raw.split("&") if raw else []:
            name = unquote(pair.split("=", 1)[0]).lower()
            if name == "qstash_token":
                continue
            if name.startswith("upstash-"):
                value = unquote(pair.split("=", 1)[1]) if "=" in pair else ""
                config.append((name, value))
                continue
            kept.append(pair)
        return config, "&".join(kept)

    def _destination(self, request: Request, prefix_parts: int) -> tuple[str, list[tuple[str, str]]]:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("utf-8", errors="replace").split("?", 1)[0]
        rest = path.split("/", prefix_parts)[prefix_parts] if path.count("/") >= prefix_parts else ""
        config, query = self._split_query(request)
        if query:
            rest += "?" + query
        return rest, config

    @staticmethod
    def _caller_ip(request: Request) -> str | None:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
        return request.client.host if request.client else None

    @staticmethod
    def _headers(request: Request) -> list[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]

    def _webhook_headers(self, request: Request, config: list[tuple[str, str]]) -> dict[str, list[str]]:
        """`Upstash-Header-Forward: true` (webhook mode) forwards the caller's own headers too."""
        wanted = request.headers.get("upstash-header-forward", "") or dict(config).get("upstash-header-forward", "")
        if wanted.lower() != "true":
            return {}
        out: dict[str, list[str]] = {}
        for name, value in self._headers(request):
            low = name.lower()
            if low in _NOT_FORWARDED or low.startswith("upstash-"):
                continue
            out.setdefault(canonical_header(name), []).append(value)
        return out

    async def _publish(self, request: Request, destination: str, config: list[tuple[str, str]],
                       queue: str | None) -> Response:
        self._auth(request)
        body = await read_body(request, limit=self.max_body)
        try:
            cfg = parse_config(self._headers(request) + config, now_ms=now_ms())
            if queue is not None:
                check_name(queue, "queue name")
            result = await self.qstash.publish(PublishRequest(
                destination=destination, body=body, config=cfg, queue=queue, caller_ip=self._caller_ip(request),
                extra_headers=self._webhook_headers(request, config)))
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return json_response(result, status=202 if is_deduplicated(result) else 200)

    # -- publishing ----------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        destination, config = self._destination(request, 3)  # "", "v2", "publish", <dest>
        return await self._publish(request, destination, config, None)

    async def enqueue(self, request: Request) -> Response:
        destination, config = self._destination(request, 4)
        return await self._publish(request, destination, config, request.path_params["queue"])

    async def batch(self, request: Request) -> Response:
        self._auth(request)
        items = await read_json(request, limit=self.max_body, max_depth=self.max_depth)
        if not isinstance(items, list):
            raise ApiError(400, "the batch body must be a JSON array of messages")
        requests, now, caller = [], now_ms(), self._caller_ip(request)
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict) or not isinstance(item.get("destination"), str):
                    raise ConfigError("each element needs a string 'destination'")
                classify_destination(item["destination"])
                headers = item.get("headers") or {}
                if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
                    raise ConfigError("'headers' must be an object of strings")
                body = item.get("body")
                if body is not None and not isinstance(body, str):
                    raise ConfigError("'body' must be a string or null")
                queue = item.get("queue")
                if queue is not None:
                    check_name(str(queue), "queue name")
                cfg = parse_config(list(headers.items()), now_ms=now)
            except ValueError as exc:
                raise ApiError(400, f"batch element {index}: {exc}") from None
            requests.append(PublishRequest(destination=item["destination"], body=(body or "").encode(), config=cfg,
                                           queue=queue, caller_ip=caller))
        try:
            return json_response(await self.qstash.batch(requests))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None

    # -- messages ------------------------------------------------------------------

    async def get_message(self, request: Request) -> Response:
        self._auth(request)
        msg = await self.store.read(qops.get_message, request.path_params["message_id"])
        if msg is None:
            raise ApiError(404, f"message {request.path_params['message_id']} not found")
        return json_response(message_json(msg))

    async def cancel_message(self, request: Request) -> Response:
        self._auth(request)
        message_id = request.path_params["message_id"]
        if await self.qstash.cancel([message_id]) == 0:
            raise ApiError(404, f"message {message_id} not found or already finished")
        return json_response({"cancelled": 1})

    def _filters(self, request: Request, allowed: dict[str, str], *, extra: set[str] = frozenset()) -> dict:
        params = request.query_params
        unknown = sorted(set(params.keys()) - set(allowed) - _PAGING - set(extra) - {"qstash_token"})
        if unknown:
            raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}")
        filters: dict[str, list[str]] = {}
        for name, column in allowed.items():
            for value in params.getlist(name):
                filters.setdefault(column, []).extend(v for v in value.split(",") if v)
        return filters

    @staticmethod
    def _int_param(request: Request, name: str, default: int | None, high: int) -> int | None:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer") from None
        if value < 0:
            raise ApiError(400, f"{name} must not be negative")
        return min(value, high)

    async def cancel_messages(self, request: Request) -> Response:
        self._auth(request)
        filters = self._filters(request, _MESSAGE_FILTERS)
        body = await read_json(request, limit=self.max_body, max_depth=self.max_depth, empty_ok=True)
        if isinstance(body, dict) and body.get("messageIds") is not None:
            ids = body["messageIds"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ApiError(400, "messageIds must be a list of strings")
            return json_response({"cancelled": await self.qstash.cancel(ids)})
        count = self._int_param(request, "count", None, 500)
        n = await self.qstash.cancel_matching(filters, from_ms=self._int_param(request, "fromDate", None, 2**62),
                                              to_ms=self._int_param(request, "toDate", None, 2**62), limit=count)
        return json_response({"cancelled": n})

    # -- DLQ -----------------------------------------------------------------------

    def _dlq_filters(self, request: Request) -> dict:
        filters = self._filters(request, {**_MESSAGE_FILTERS, "dlqIds": "dlq_id", "responseStatus": "response_status"})
        if "response_status" in filters:
            try:
                filters["response_status"] = [int(v) for v in filters["response_status"]]
            except ValueError:
                raise ApiError(400, "responseStatus must be an integer") from None
        return filters

    async def _dlq_page(self, request: Request, default_count: int = 100) -> tuple[list, str | None]:
        filters = self._dlq_filters(request)
        count = self._int_param(request, "count", default_count, 100) or default_count
        order = request.query_params.get("order", "latestFirst")
        if order not in ("latestFirst", "earliestFirst"):
            raise ApiError(400, "order must be latestFirst or earliestFirst")
        after = None
        cursor = request.query_params.get("cursor")
        if cursor:
            at, _, dlq_id = cursor.partition(":")
            if not at.isdigit():
                raise ApiError(400, "invalid cursor")
            after = (int(at), dlq_id)
        rows = await self.store.read(lambda tx: qops.list_dlq(
            tx, filters, from_ms=self._int_param(request, "fromDate", None, 2**62),
            to_ms=self._int_param(request, "toDate", None, 2**62), after=after, count=count + 1,
            newest_first=order == "latestFirst"))
        more = len(rows) > count
        rows = rows[:count]
        next_cursor = f"{rows[-1][0]}:{rows[-1][1]}" if more else None
        return rows, next_cursor

    async def list_dlq(self, request: Request) -> Response:
        self._auth(request)
        rows, cursor = await self._dlq_page(request)
        out: dict[str, Any] = {"messages": [data for _, _, data in rows]}
        if cursor:
            out["cursor"] = cursor
        return json_response(out)

    async def get_dlq(self, request: Request) -> Response:
        self._auth(request)
        entry = await self.store.read(qops.get_dlq, request.path_params["dlq_id"])
        if entry is None:
            raise ApiError(404, f"dlq message {request.path_params['dlq_id']} not found")
        return json_response(entry)

    async def delete_dlq(self, request: Request) -> Response:
        self._auth(request)
        dlq_id = request.path_params["dlq_id"]
        if await self.store.write(qops.delete_dlq, [dlq_id]) == 0:
            raise ApiError(404, f"dlq message {dlq_id} not found")
        return _ok()

    async def _bulk_dlq_ids(self, request: Request) -> tuple[list[str], str | None]:
        body = await read_json(request, limit=self.max_body, max_depth=self.max_depth, empty_ok=True)
        if isinstance(body, dict) and body.get("dlqIds") is not None:
            ids = body["dlqIds"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ApiError(400, "dlqIds must be a list of strings")
            self._dlq_filters(request)
            return ids, None
        rows, cursor = await self._dlq_page(request)
        return [dlq_id for _, dlq_id, _ in rows], cursor

    async def delete_dlq_many(self, request: Request) -> Response:
        self._auth(request)
        ids, cursor = await self._bulk_dlq_ids(request)
        out: dict[str, Any] = {"deleted": await self.store.write(qops.delete_dlq, ids)}
        if cursor:
            out["cursor"] = cursor
        return json_response(out)

    async def retry_dlq(self, request: Request) -> Response:
        self._auth(request)
        overrides = [(k, v) for k, v in self._headers(request) if k.lower().startswith("upstash-")]
        try:
            if "dlq_id" in request.path_params:
                done = await self.qstash.retry_dlq([request.path_params["dlq_id"]], overrides)
                if not done:
                    raise ApiError(404, f"dlq message {request.path_params['dlq_id']} not found")
                return json_response(done[0])
            ids, cursor = await self._bulk_dlq_ids(request)
            out: dict[str, Any] = {"responses": await self.qstash.retry_dlq(ids, overrides)}
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        if cursor:
            out["cursor"] = cursor
        return json_response(out)

    # -- logs ----------------------------------------------------------------------

    async def list_events(self, request: Request) -> Response:
        self._auth(request)
        filters = self._filters(request, {**_MESSAGE_FILTERS, "state": "state"})
        if "state" in filters:
            states = []
            for state in filters["state"]:
                state = "CANCELED" if state.upper() == "CANCELLED" else state.upper()
                if state == "IN_PROGRESS":
                    states += ["CREATED", "ACTIVE", "RETRY", "ERROR", "CANCEL_REQUESTED"]
                elif state in LogState.__members__:
                    states.append(state)
                else:
                    raise ApiError(400, f"unknown state {state!r}")
            filters["state"] = states
        count = self._int_param(request, "count", 100, 1000) or 100
        cursor = request.query_params.get("cursor")
        if cursor and not cursor.isdigit():
            raise ApiError(400, "invalid cursor")
        rows = await self.store.read(lambda tx: qops.list_events(
            tx, filters, from_ms=self._int_param(request, "fromDate", None, 2**62),
            to_ms=self._int_param(request, "toDate", None, 2**62), before_seq=int(cursor) if cursor else None,
            count=count + 1))
        events = [data for _, data in rows[:count]]
        out: dict[str, Any] = {"events": events}
        if request.url.path.endswith("/logs"):
            out["logs"] = events
        if len(rows) > count:
            out["cursor"] = str(rows[count - 1][0])
        return json_response(out)

    # -- schedules -----------------------------------------------------------------

    async def create_schedule(self, request: Request) -> Response:
        self._auth(request)
        destination, config = self._destination(request, 3)
        body = await read_body(request, limit=self.max_body)
        try:
            cfg = parse_config(self._headers(request) + config, now_ms=now_ms(), schedule=True)
            schedule_id = await self.qstash.upsert_schedule(destination, body, cfg, self._caller_ip(request))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return json_response({"scheduleId": schedule_id})

    async def list_schedules(self, request: Request) -> Response:
        self._auth(request)
        return json_response([schedule_json(s) for s in await self.store.read(qops.list_schedules)])

    async def get_schedule(self, request: Request) -> Response:
        self._auth(request)
        schedule = await self.store.read(qops.get_schedule, request.path_params["schedule_id"])
        if schedule is None:
            raise ApiError(404, f"schedule {request.path_params['schedule_id']} not found")
        return json_response(schedule_json(schedule))

    async def delete_schedule(self, request: Request) -> Response:
        self._auth(request)
        await self.qstash.delete_schedule(request.path_params["schedule_id"])
        return _ok()

    async def pause_schedule(self, request: Request) -> Response:
        self._auth(request)
        paused = request.url.path.endswith("/pause")
        if not await self.store.write(qops.set_schedule_paused, request.path_params["schedule_id"], paused):
            raise ApiError(404, f"schedule {request.path_params['schedule_id']} not found")
        return _ok()

    # -- queues --------------------------------------------------------------------

    async def upsert_queue(self, request: Request) -> Response:
        self._auth(request)
        body = await read_json(request, limit=self.max_body, max_depth=self.max_depth)
        if not isinstance(body, dict) or not isinstance(body.get("queueName"), str):
            raise ApiError(400, "expected a JSON object with a string 'queueName'")
        parallelism = body.get("parallelism", 1)
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ApiError(400, "parallelism must be an integer of at least 1")
        try:
            name = check_name(body["queueName"], "queue name")
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        paused = bool(body.get("paused", False))
        await self.store.write(admin.upsert_queue, name, parallelism, paused, now_ms())
        self.qstash.wake()
        return _ok()

    async def get_queue(self, request: Request) -> Response:
        self._auth(request)
        queue = await self.store.read(qops.get_queue, request.path_params["name"])
        if queue is None:
            raise ApiError(404, f"queue {request.path_params['name']} not found")
        return json_response(queue_json(queue))

    async def list_queues(self, request: Request) -> Response:
        self._auth(request)
        return json_response([queue_json(q) for q in await self.store.read(qops.list_queues)])

    async def delete_queue(self, request: Request) -> Response:
        self._auth(request)
        name = request.path_params["name"]
        await self.qstash.cancel_matching({"queue_name": [name]}, from_ms=None, to_ms=None, limit=None)
        await self.store.write(qops.delete_queue, name)
        return _ok()

    async def pause_queue(self, request: Request) -> Response:
        self._auth(request)
        name, paused = request.path_params["name"], request.url.path.endswith("/pause")
        try:
            await self.store.write(admin.set_queue_paused, name, paused, now_ms())
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        self.qstash.wake()
        return _ok()

    # -- URL groups ----------------------------------------------------------------

    async def _endpoints(self, request: Request) -> list[dict[str, str]]:
        body = await read_json(request, limit=self.max_body, max_depth=self.max_depth)
        endpoints = body.get("endpoints") if isinstance(body, dict) else None
        if not isinstance(endpoints, list) or not all(isinstance(e, dict) for e in endpoints):
            raise ApiError(400, "expected a JSON object with an 'endpoints' list")
        return endpoints

    async def upsert_endpoints(self, request: Request) -> Response:
        self._auth(request)
        try:
            name = check_name(request.path_params["group"], "url group name")
            endpoints = []
            for e in await self._endpoints(request):
                if not isinstance(e.get("url"), str):
                    raise ConfigError("each endpoint needs a 'url'")
                endpoints.append({"url": check_url(e["url"], "endpoint url"),
                                  **({"name": str(e["name"])} if e.get("name") else {})})
        except ConfigError as exc:
            raise ApiError(400, str(exc)) from None
        await self.store.write(admin.add_endpoints, name, endpoints, now_ms())
        return _ok()

    async def remove_endpoints(self, request: Request) -> Response:
        self._auth(request)
        name = request.path_params["group"]
        removing = await self._endpoints(request)
        try:
            await self.store.write(admin.remove_endpoints, name, removing, now_ms())
        except NotFound as exc:
            raise ApiError(404, str(exc)) from None
        return _ok()

    async def get_group(self, request: Request) -> Response:
        self._auth(request)
        group = await self.store.read(qops.get_url_group, request.path_params["group"])
        if group is None:
            raise ApiError(404, f"url group {request.path_params['group']} not found")
        return json_response(group_json(group))

    async def list_groups(self, request: Request) -> Response:
        self._auth(request)
        return json_response([group_json(g) for g in await self.store.read(qops.list_url_groups)])

    async def delete_group(self, request: Request) -> Response:
        self._auth(request)
        await self.store.write(qops.delete_url_group, request.path_params["group"])
        return _ok()

    # -- keys ----------------------------------------------------------------------

    async def get_keys(self, request: Request) -> Response:
        self._auth(request)
        current, next_key = await self.qstash.keys()
        return json_response({"current": current, "next": next_key})

    async def rotate_keys(self, request: Request) -> Response:
        self._auth(request)
        current, next_key = await self.qstash.rotate_keys()
        return json_response({"current": current, "next": next_key})

    # -- flow control --------------------------------------------------------------

    async def get_flow_control(self, request: Request) -> Response:
        self._auth(request)
        key = request.path_params["key"]
        found = await self.store.read(lambda tx: (k := qops.get_flow_key(tx, key)) and flow.info(tx, k))
        if not found:
            raise ApiError(404, f"flow-control key {key} not found")
        return json_response(found)

    async def list_flow_control(self, request: Request) -> Response:
        self._auth(request)
        search = request.query_params.get("search", "")
        return json_response(await self.store.read(
            lambda tx: [flow.info(tx, k) for k in qops.list_flow_keys(tx) if search in k.key]))

    async def update_flow_control(self, request: Request) -> Response:
        self._auth(request)
        key, action = request.path_params["key"], request.path_params["action"]
        if action not in ("pause", "resume", "pin", "unpin", "resetRate", "reset"):
            raise ApiError(404, f"no flow-control action {action!r}")
        params = dict(request.query_params)
        for name in ("parallelism", "rate", "period"):
            if action == "pin" and name in params and not params[name].isdigit():
                raise ApiError(400, f"{name} must be a non-negative integer")
        found = await self.store.write(lambda tx: flow.update(tx, key, action, params, now_ms()))
        if found is None:
            raise ApiError(404, f"flow-control key {key} not found")
        if action in ("resume", "pin", "unpin", "resetRate", "reset"):
            await self.store.write(lambda tx: release_waiting(tx, "flow_control_key", key, found.parallelism or 1,
                                                              now_ms()))
            self.qstash.wake()
        return _ok()

    async def global_parallelism(self, request: Request) -> Response:
        self._auth(request)
        count = await self.store.read(qops.active_total)
        return json_response({"parallelismMax": 0, "parallelismCount": count})

    def routes(self) -> list[Route]:
        return [
            Route("/v2/publish/{rest:path}", self.publish, methods=["POST"]),
            Route("/v2/enqueue/{queue}/{rest:path}", self.enqueue, methods=["POST"]),
            Route("/v2/batch", self.batch, methods=["POST"]),
            Route("/v2/messages/{message_id}", self.get_message, methods=["GET"]),
            Route("/v2/messages/{message_id}", self.cancel_message, methods=["DELETE"]),
            Route("/v2/messages", self.cancel_messages, methods=["DELETE"]),
            Route("/v2/dlq", self.list_dlq, methods=["GET"]),
            Route("/v2/dlq", self.delete_dlq_many, methods=["DELETE"]),
            Route("/v2/dlq/retry", self.retry_dlq, methods=["POST"]),
            Route("/v2/dlq/retry/{dlq_id}", self.retry_dlq, methods=["POST"]),
            Route("/v2/dlq/{dlq_id}", self.get_dlq, methods=["GET"]),
            Route("/v2/dlq/{dlq_id}", self.delete_dlq, methods=["DELETE"]),
            Route("/v2/events", self.list_events, methods=["GET"]),
            Route("/v2/logs", self.list_events, methods=["GET"]),
            Route("/v2/schedules", self.list_schedules, methods=["GET"]),
            Route("/v2/schedules/{schedule_id}/pause", self.pause_schedule, methods=["PATCH", "POST"]),
            Route("/v2/schedules/{schedule_id}/resume", self.pause_schedule, methods=["PATCH", "POST"]),
            Route("/v2/schedules/{schedule_id}", self.get_schedule, methods=["GET"]),
            Route("/v2/schedules/{schedule_id}", self.delete_schedule, methods=["DELETE"]),
            Route("/v2/schedules/{rest:path}", self.create_schedule, methods=["POST"]),
            Route("/v2/queues", self.upsert_queue, methods=["POST"]),
            Route("/v2/queues", self.list_queues, methods=["GET"]),
            Route("/v2/queues/{name}", self.get_queue, methods=["GET"]),
            Route("/v2/queues/{name}", self.delete_queue, methods=["DELETE"]),
            Route("/v2/queues/{name}/pause", self.pause_queue, methods=["POST"]),
            Route("/v2/queues/{name}/resume", self.pause_queue, methods=["POST"]),
            Route("/v2/topics", self.list_groups, methods=["GET"]),
            Route("/v2/topics/{group}", self.get_group, methods=["GET"]),
            Route("/v2/topics/{group}", self.delete_group, methods=["DELETE"]),
            Route("/v2/topics/{group}/endpoints", self.upsert_endpoints, methods=["POST"]),
            Route("/v2/topics/{group}/endpoints", self.remove_endpoints, methods=["DELETE"]),
            Route("/v2/keys", self.get_keys, methods=["GET"]),
            Route("/v2/keys/rotate", self.rotate_keys, methods=["POST"]),
            Route("/v2/flowControl", self.list_flow_control, methods=["GET"]),
            Route("/v2/flowControl/{key}", self.get_flow_control, methods=["GET"]),
            Route("/v2/flowControl/{key}/{action}", self.update_flow_control, methods=["POST"]),
            Route("/v2/globalParallelism", self.global_parallelism, methods=["GET"]),
        ]
