"""JS v4 checkpoints: steps run inside a call (async mode) or inside an app's own HTTP request
(sync mode, durable endpoints), the run output a redirected client polls, and the raw stream tee.

Routes live under `/v1/checkpoint` and, as on the Inngest server, under the older alias
`/v1/http/runs` (the SDK still builds its redirect to `/v1/http/runs/{run}/output`).
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import hmac
import logging
import time

import jwt
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lockgate.engine.checkpoint import CheckpointError
from lockgate.engine.engine import Engine
from lockgate.interfaces.auth import AccessPolicy
from lockgate.interfaces.realtime_api import RAW_KIND
from lockgate.interfaces.errors import ApiError, error_response, json_response, read_json
from lockgate.models import RunStatus
from lockgate.realtime import BrokerUnavailable, Draft, tokens
from lockgate.store import operations as ops

log = logging.getLogger("lockgate.checkpoint")

PREFIXES = ("/v1/checkpoint", "/v1/http/runs")
STREAM_TOPIC = "$stream"  # the topic a durable endpoint's raw response stream is published on
OUTPUT_WAIT_S = 300.0  # how long GET .../output holds the request for the run to end (as Inngest)
OUTPUT_POLL_S = 0.25
OUTPUT_TOKEN_TTL_S = 7 * 86400
_OUTPUT_AUDIENCE = "lockgate-run-output"
# Response headers of the app's answer that describe its transfer, not its content.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"})


def output_secret(signing_key: str | None) -> bytes:
    if not signing_key:
        return hashlib.sha256(b"lockgate dev run output tokens").digest()
    return hmac.new(signing_key.encode(), b"lockgate run output tokens", hashlib.sha256).digest()


def routes(engine: Engine, access: AccessPolicy, *, signing_keys: list[str]) -> list[Route]:
    limits = engine.options.limits
    realtime_secret = tokens.token_secret(signing_keys[0] if signing_keys else None)
    output_secrets = [output_secret(k) for k in signing_keys] or [output_secret(None)]

    async def body_of(request: Request):
        access.check_api(request)
        return await read_json(request, limit=limits.max_checkpoint_bytes, max_depth=limits.max_json_depth)

    async def checkpoint_async(request: Request) -> Response:
        # JS v4 retries anything but 200 and 409, then returns the steps in its 206 instead.
        body = await body_of(request)
        try:
            saved = await engine.checkpoint(request.path_params["run_id"], body)
        except CheckpointError as exc:
            return error_response(exc.status, exc.message)
        return json_response({"status": 200, "saved": saved})

    async def new_run(request: Request) -> Response:
        body = await body_of(request)
        try:
            created = await engine.checkpoint_new_run(body)
        except CheckpointError as exc:
            return error_response(exc.status, exc.message)
        run_id = created.run.run_id
        now = int(time.time())
        token = jwt.encode({"aud": _OUTPUT_AUDIENCE, "iat": now, "exp": now + OUTPUT_TOKEN_TTL_S, "run_id": run_id},
                           output_secrets[0], algorithm="HS256")
        # For a client redirected to GET /v1/realtime/sse once the run leaves the request.
        realtime = tokens.mint(realtime_secret, run_id, [STREAM_TOPIC], engine.realtime.options.token_ttl_s)
        return json_response({"data": {"fn_id": created.function.id, "app_id": created.function.app_name,
                                       "run_id": run_id, "token": token, "realtime_token": realtime}})

    async def steps(request: Request) -> Response:
        body = await body_of(request)
        try:
            await engine.checkpoint_steps(request.path_params["run_id"], body)
        except CheckpointError as exc:
            return error_response(exc.status, exc.message)
        return json_response({"status": 200})

    def run_of_token(token: str | None, run_id: str) -> None:
        if not token:
            raise ApiError(401, "a run output token is required: ?token=<the token the endpoint's redirect carries>")
        for secret in output_secrets:
            try:
                claims = jwt.decode(token, secret, algorithms=["HS256"], audience=_OUTPUT_AUDIENCE)
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise ApiError(401, f"the run output token is not valid ({exc})") from None
            if claims.get("run_id") != run_id:
                raise ApiError(401, "the run output token was issued for another run")
            return
        raise ApiError(401, "the run output token was not issued by this server")

    async def output(request: Request) -> Response:
        """The HTTP response a durable endpoint's run ended with, waiting for it to end."""
        run_id = request.path_params["run_id"]
        run_of_token(request.query_params.get("token"), run_id)
        deadline = time.monotonic() + OUTPUT_WAIT_S
        while True:
            run = await engine.store.read(ops.get_run, run_id)
            if run is None:
                raise ApiError(404, f"run {run_id} not found")
            if RunStatus(run.status).is_final:
                break
            if time.monotonic() > deadline:
                return json_response({"status": "running", "message": "run did not end within 5 minutes"})
            await asyncio.sleep(OUTPUT_POLL_S)
        result = run.output
        completed = run.status == RunStatus.COMPLETED.value
        if completed and isinstance(result, dict) and isinstance(result.get("status"), int):
            headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()
                       if str(k).lower() not in _HOP_HEADERS}
            body = result.get("body")
            return Response(body if isinstance(body, str) else "", status_code=result["status"], headers=headers)
        if completed:
            return json_response(result)
        return json_response({"status": run.status, "error": run.error, "reason": run.reason}, status=500)

    async def tee(request: Request) -> Response:
        """A durable endpoint's response stream, forwarded as it arrives to the run's `$stream` subscribers."""
        access.check_api(request)
        channel = request.query_params.get("channel", "")
        if not channel:
            raise ApiError(400, "query parameter 'channel' is required: /v1/realtime/publish/tee?channel=<run id>")
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # never split a character
        try:
            async for piece in request.stream():
                text = decoder.decode(piece, final=not piece)
                if text:
                    await engine.realtime.publish_many([Draft(channel, STREAM_TOPIC, text, kind=RAW_KIND,
                                                              run_id=channel)])
        except BrokerUnavailable as exc:
            log.warning("realtime: stream tee to %r failed: %s", channel, exc)
            raise ApiError(503, str(exc)) from None
        return json_response({"ok": True})

    table = []
    for prefix in PREFIXES:
        table += [
            Route(prefix, new_run, methods=["POST"]),
            Route(prefix + "/{run_id}/steps", steps, methods=["POST"]),
            Route(prefix + "/{run_id}/async", checkpoint_async, methods=["POST"]),
            Route(prefix + "/{run_id}/output", output, methods=["GET"]),
        ]
    return [*table, Route("/v1/realtime/publish/tee", tee, methods=["POST"])]
