"""Example 3: a streaming LLM answer. A page starts a task, QStash delivers it to a signed webhook,
the webhook streams the model's tokens into a realtime channel, and the page follows it over SSE.

    browser ──POST /tasks──────────► app: task id + a subscription token for channel llm:<task>
    browser ──EventSource──────────► lockgate /v1/realtime/sse?token=…   (subscribed before anything is sent)
    browser ──POST /tasks/<id>/start► app ──qstash publish──► lockgate ──signed POST──► app /webhooks/llm
                                                                   webhook ──realtime publish──► channel

Configuration (environment only; `python -m examples.llm_stream` fills in the dev values):

    APP_URL                     where lockgate reaches this app (the webhook URL QStash signs)
    INNGEST_DEV / INNGEST_BASE_URL, INNGEST_SIGNING_KEY   lockgate's API, for realtime publish and tokens
    REALTIME_URL                where browsers reach lockgate's SSE endpoint (default: the API URL)
    QSTASH_URL, QSTASH_TOKEN    lockgate's QStash API and its token
    QSTASH_CURRENT_SIGNING_KEY, QSTASH_NEXT_SIGNING_KEY   to verify Upstash-Signature on the webhook
    LLM_RETRIES                 QStash retries of a failed answer (default 2)
    LLM_RETRY_DELAY             QStash retry delay expression, in milliseconds (default "1000")

Retries and duplicates: each call of the webhook (each QStash delivery attempt) announces itself
with `status: started` and a fresh delivery id, and tags its tokens with that id and their index in
its answer. The page shows the latest delivery's tokens only, placed by index, and ignores the rest.
So a webhook that fails halfway and is delivered again never shows a token twice, a late token
from an attempt QStash already gave up on (a timeout) is dropped, and a real model's different
second answer replaces the first instead of being spliced onto it at the failed token.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import inngest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from inngest.experimental import realtime
from pydantic import BaseModel, Field, ValidationError
from qstash import AsyncQStash, Receiver
from qstash.errors import SignatureError

from examples.llm_stream import fake_llm

logger = logging.getLogger("llm_stream")

TOPICS = ["tokens", "status", "end", "error"]  # the SSE event names the page listens for
WEBHOOK_PATH = "/webhooks/llm"


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"set {name} (see the top of examples/llm_stream/app.py); "
                           "`python -m examples.llm_stream` sets the values for lockgate dev")
    return value


APP_URL = _required("APP_URL").rstrip("/")
WEBHOOK_URL = APP_URL + WEBHOOK_PATH
RETRIES = int(os.environ.get("LLM_RETRIES", "2"))
RETRY_DELAY = os.environ.get("LLM_RETRY_DELAY", "1000")
# How long one delivery may stream before QStash counts it failed and delivers again (the page then
# ignores whatever the abandoned call still publishes: see the delivery id below).
ANSWER_TIMEOUT = "120s"

# The SDK reads INNGEST_DEV / INNGEST_BASE_URL / INNGEST_SIGNING_KEY: realtime publish and tokens use them.
client = inngest.Inngest(app_id="llm-stream", logger=logger)
REALTIME_URL = (os.environ.get("REALTIME_URL") or os.environ.get("INNGEST_BASE_URL")
                or _required("INNGEST_DEV")).rstrip("/")
qstash = AsyncQStash(_required("QSTASH_TOKEN"), base_url=_required("QSTASH_URL"))
receiver = Receiver(_required("QSTASH_CURRENT_SIGNING_KEY"), _required("QSTASH_NEXT_SIGNING_KEY"))


@dataclass
class Task:
    prompt: str
    message_id: str | None = None  # set once the task is handed to QStash


# Tasks between "created" and "started" (a real app keeps them in its database).
TASKS: dict[str, Task] = {}


def channel_of(task_id: str) -> str:
    return f"llm:{task_id}"


async def publish(task_id: str, topic: str, data: dict) -> None:
    await realtime.publish(client, channel_of(task_id), topic, data)


class NewTask(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)


class Delivery(BaseModel):
    """What the start route publishes and QStash delivers to the webhook."""

    task_id: str
    prompt: str


app = FastAPI(title="llm-stream")


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return (Path(__file__).parent / "page.html").read_text()


async def sse_url(task_id: str) -> str:
    token = await realtime.get_subscription_token(client, channel_of(task_id), TOPICS)
    return f"{REALTIME_URL}/v1/realtime/sse?token={token['key']}"


@app.post("/tasks", status_code=201)
async def create_task(task: NewTask) -> dict:
    """A task and a token for its channel; nothing runs until the page, subscribed, calls start."""
    task_id = uuid.uuid4().hex[:12]
    TASKS[task_id] = Task(prompt=task.prompt)
    return {"task_id": task_id, "channel": channel_of(task_id), "sse_url": await sse_url(task_id)}


@app.post("/tasks/{task_id}/token")
async def renew_token(task_id: str) -> dict:
    """A fresh subscription token for the task's channel: lockgate's expire (an hour by default),
    and the page needs a new one to reconnect to an answer it has followed for longer."""
    if task_id not in TASKS:
        raise HTTPException(404, f"no task {task_id!r}: create it with POST /tasks first")
    return {"task_id": task_id, "sse_url": await sse_url(task_id)}


@app.post("/tasks/{task_id}/start", status_code=202)
async def start_task(task_id: str) -> dict:
    task = TASKS.get(task_id)
    if task is None:
        raise HTTPException(404, f"no task {task_id!r}: create it with POST /tasks first")
    if task.message_id is None:
        await publish(task_id, "status", {"state": "queued"})
        # deduplication_id: a start sent twice (a double click, a retried request) is delivered once
        sent = await qstash.message.publish_json(
            url=WEBHOOK_URL, body={"task_id": task_id, "prompt": task.prompt}, retries=RETRIES,
            retry_delay=RETRY_DELAY, timeout=ANSWER_TIMEOUT, deduplication_id=f"llm-{task_id}")
        task.message_id = sent.message_id
    return {"task_id": task_id, "message_id": task.message_id}


@app.post(WEBHOOK_PATH)
async def llm_webhook(request: Request) -> JSONResponse:
    """QStash's delivery: verify, then stream the model's answer into the task's channel."""
    body = (await request.body()).decode(errors="replace")  # bytes that are not UTF-8 fail the body hash
    signature = request.headers.get("upstash-signature")
    if not signature:
        return JSONResponse({"error": "missing Upstash-Signature header: only QStash may call this webhook"}, 401)
    try:
        # WEBHOOK_URL, not request.url: QStash signs the URL it was given, whatever proxies sit between
        receiver.verify(signature=signature, body=body, url=WEBHOOK_URL)
    except SignatureError as exc:
        logger.warning("refused a webhook call with a bad signature: %s", exc)
        return JSONResponse({"error": f"invalid Upstash-Signature: {exc}"}, 401)

    try:
        task = Delivery.model_validate_json(body)
    except ValidationError as exc:
        return JSONResponse({"error": f"the body is not a task: {exc}"}, 400)
    task_id, prompt = task.task_id, task.prompt
    attempt = int(request.headers.get("upstash-retried", "0"))  # 0 on the first delivery
    # Which call this is: not the attempt number alone, which starts at 0 anew for a message retried
    # from the DLQ or published again.
    this = {"delivery": uuid.uuid4().hex[:10], "attempt": attempt}
    await publish(task_id, "status", {"state": "started", **this})
    index = 0
    try:
        async for token in fake_llm.stream(prompt, attempt=attempt):
            await publish(task_id, "tokens", {**this, "index": index, "text": token})
            index += 1
    except fake_llm.ProviderError as exc:
        if attempt < RETRIES:
            await publish(task_id, "status", {"state": "retrying", **this, "error": str(exc)})
        else:
            await publish(task_id, "error", {**this, "message": f"Gave up after {attempt + 1} attempts: {exc}."})
        # a 5xx makes QStash deliver again (or, after the last retry, move the message to its DLQ)
        return JSONResponse({"error": str(exc)}, 500)
    await publish(task_id, "end", {**this, "tokens": index})
    return JSONResponse({"tokens": index})
