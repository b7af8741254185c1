"""Example 2: a batch of long video renders on a slow, flaky provider, settled exactly once.

    POST /batches                 a user's N shots → 202 at once: batch id, progress stream URL
    GET  /batches/{id}            shots, ledger lines and totals
    GET  /batches/{id}/watch      a page that follows the batch live (lockgate's realtime SSE)
    POST /webhooks/provider       the provider's callback; becomes the event `video/render.finished`

Functions (served at /api/inngest):

    render-shot     one shot: submit (provider errors retry, a refusal fails at once), then wait
                    for the webhook event, or poll with sleeps when no callback URL is set; gives
                    up after 30 minutes. Concurrency: a few provider slots, at most 2 per user.
    render-shot-failure (on_failure)  a shot that failed for good is recorded as failed.
    settle-batch    once every shot has ended: charge the successes, refund the failures.
    clean-up-stale  every 10 minutes: shots still pending long after they should have ended.

Configuration (environment; `create_app(Settings(...))` in tests):

    INNGEST_DEV / INNGEST_BASE_URL / keys   as in example 1: the SDK reads them
    VIDEO_PROVIDER_URL    the provider (default http://127.0.0.1:8311)
    VIDEO_CALLBACK_URL    where the provider should POST results (this app's /webhooks/provider);
                          empty: no webhooks, the shots poll
    VIDEO_WEBHOOK_SECRET  the provider signs its callbacks with it
    VIDEO_DB              the app's SQLite file (default .video-batch.db)
    VIDEO_PROVIDER_SLOTS  provider jobs submitted at once, all users (default 4)
    VIDEO_PER_USER        of which one user may take (default 2)
    VIDEO_CHAOS_SETTLE    1: each settlement's first attempt fails after writing the ledger, as if
                          its answer were lost; the retry must not charge again
"""

from __future__ import annotations

import datetime
import hmac
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
import inngest
import inngest.fast_api
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from inngest.experimental import realtime
from pydantic import BaseModel, Field

from examples.video_batch.provider import sign
from examples.video_batch.store import Store

logger = logging.getLogger("video-batch")

SHOT_REQUESTED = "video/shot.requested"
RENDER_FINISHED = "video/render.finished"  # the provider's webhook, as an event
BATCH_ENDED = "video/batch.ended"

FINISH_WITHIN = datetime.timedelta(minutes=30)  # a shot with no result by then fails (and is refunded)
WEBHOOK_SLICE = datetime.timedelta(minutes=5)  # between webhook waits the shot asks the provider once
RUN_TIMEOUT = datetime.timedelta(minutes=40)  # the hard stop for a run (30 minutes plus submit retries)
STALE_AFTER = datetime.timedelta(minutes=45)  # pending this long: its run is gone (cancelled, lost)

PRICE_CENTS_PER_SECOND = {"reel-1": 5, "frame-2": 3}
ASPECTS = {"landscape": "16:9", "portrait": "9:16", "square": "1:1"}
SIZES = {"landscape": "1280x720", "portrait": "720x1280", "square": "1024x1024"}
ENDED_JOB = ("succeeded", "failed", "cancelled")  # the provider's final job states
WATCH_PAGE = (Path(__file__).parent / "watch.html").read_text()
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # job ids go into a wait expression: keep them plain


def poll_delays(total: datetime.timedelta = FINISH_WITHIN) -> list[int]:
    """Seconds between polls: 5, 10, 20, 40, then every minute, adding up to `total`."""
    delays, left, delay = [], int(total.total_seconds()), 5
    while left > 0:
        delays.append(min(delay, left))
        left -= delays[-1]
        delay = min(delay * 2, 60)
    return delays


@dataclass
class Settings:
    provider_url: str = field(default_factory=lambda: os.environ.get("VIDEO_PROVIDER_URL", "http://127.0.0.1:8311"))
    callback_url: str = field(default_factory=lambda: os.environ.get("VIDEO_CALLBACK_URL", ""))
    webhook_secret: str = field(default_factory=lambda: os.environ.get("VIDEO_WEBHOOK_SECRET", "dev-webhook-secret"))
    db_path: str = field(default_factory=lambda: os.environ.get("VIDEO_DB", ".video-batch.db"))
    provider_slots: int = field(default_factory=lambda: int(os.environ.get("VIDEO_PROVIDER_SLOTS", "4")))
    per_user: int = field(default_factory=lambda: int(os.environ.get("VIDEO_PER_USER", "2")))
    chaos_settle: bool = field(default_factory=lambda: os.environ.get("VIDEO_CHAOS_SETTLE", "0") == "1")
    app_id: str = field(default_factory=lambda: os.environ.get("APP_ID", "video-batch"))


def lockgate_url() -> str:
    """Where lockgate's APIs are, for the progress stream URL handed to users (the SDK's own setting)."""
    dev = os.environ.get("INNGEST_DEV", "")
    if dev.startswith("http"):
        return dev.rstrip("/")
    return os.environ.get("INNGEST_BASE_URL", "http://127.0.0.1:8288").rstrip("/")


def provider_body(shot: dict[str, Any]) -> dict[str, Any]:
    """The one place that knows each model's parameter shape."""
    if shot["model"] == "reel-1":
        params = {"duration_s": shot["seconds"], "aspect": ASPECTS[shot["orientation"]]}
    else:  # frame-2 counts frames at 24 fps and wants a pixel size
        params = {"frames": shot["seconds"] * 24, "size": SIZES[shot["orientation"]]}
    return {"model": shot["model"], "prompt": shot["prompt"], **params}


class ProviderUnavailable(Exception):
    """A transient provider error: the step is retried."""


class ShotIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)
    model: Literal["reel-1", "frame-2"] = "reel-1"
    seconds: int = Field(default=8, ge=1, le=60)
    orientation: Literal["landscape", "portrait", "square"] = "landscape"


class BatchIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=100)
    shots: list[ShotIn] = Field(min_length=1, max_length=100)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app, its functions and its store. `uvicorn --factory examples.video_batch.app:create_app`."""
    settings = settings or Settings()
    store = Store(settings.db_path)
    # No mode or URL in code: the SDK reads INNGEST_DEV / INNGEST_BASE_URL / keys from the environment.
    client = inngest.Inngest(app_id=settings.app_id, logger=logger)

    async def publish(batch_id: str, data: dict[str, Any]) -> None:
        """Progress is best effort: a realtime hiccup must not fail (and so repeat) a render."""
        try:
            await realtime.publish(client, f"video-batch:{batch_id}", "progress", data)
        except Exception as exc:
            logger.warning("could not publish progress of batch %s: %s", batch_id, exc)

    async def provider(method: str, path: str, body: dict | None = None, key: str | None = None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(base_url=settings.provider_url, timeout=60) as http:
                answer = await http.request(method, path, json=body, headers={"Idempotency-Key": key} if key else None)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"provider unreachable: {exc!r}") from exc
        if answer.status_code == 429 or answer.status_code >= 500:
            raise ProviderUnavailable(f"provider answered {answer.status_code}: {answer.text[:300]}")
        if answer.status_code >= 400:  # refused for good: retrying cannot help
            raise inngest.NonRetriableError(f"provider refused the job ({answer.status_code}): {answer.text[:300]}")
        return answer.json()

    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Best effort: the provider may have finished or forgotten the job; the shot fails regardless."""
        try:
            return {"cancelled": True, "job": await provider("DELETE", f"/v1/videos/{job_id}")}
        except (ProviderUnavailable, inngest.NonRetriableError) as exc:
            return {"cancelled": False, "error": str(exc)}

    async def end_shot(ctx: inngest.Context, shot: dict[str, Any], status: str, **detail: Any) -> dict[str, Any]:
        """Record the shot's end; the shot that ends its batch last sends the batch's end."""

        async def record() -> dict[str, Any]:
            ended = store.end_shot(shot["shot_id"], status, **detail)
            if ended["changed"]:
                await publish(shot["batch_id"], {"type": f"shot.{status}", "shot_id": shot["shot_id"],
                                                 "remaining": ended["remaining"], **detail})
            return ended

        ended = await ctx.step.run(f"record-{status}", record)
        if ended["remaining"] == 0:
            # sent by every late ender alike (e.g. a step retried): settlement is idempotent
            await ctx.step.send_event("batch-ended", inngest.Event(name=BATCH_ENDED,
                                                                   data={"batch_id": shot["batch_id"]}))
        return ended

    async def wait_for_webhook(ctx: inngest.Context, job_id: str) -> dict[str, Any] | None:
        # A wait only sees events sent after it started, and a fast provider may call back before
        # that: so the 30 minutes are waited in slices, asking the provider once after each.
        for i in range(int(FINISH_WITHIN / WEBHOOK_SLICE)):
            event = await ctx.step.wait_for_event(f"webhook-{i}", event=RENDER_FINISHED,
                                                  if_exp=f"async.data.id == '{job_id}'", timeout=WEBHOOK_SLICE)
            if event is not None:
                return dict(event.data)
            job = await ctx.step.run(f"check-{i}", provider, "GET", f"/v1/videos/{job_id}")
            if job["status"] in ENDED_JOB:
                return job
        return None

    async def poll(ctx: inngest.Context, job_id: str) -> dict[str, Any] | None:
        for i, seconds in enumerate(poll_delays()):
            await ctx.step.sleep(f"poll-wait-{i}", datetime.timedelta(seconds=seconds))
            job = await ctx.step.run(f"poll-{i}", provider, "GET", f"/v1/videos/{job_id}")
            if job["status"] in ENDED_JOB:
                return job
        return None

    async def shot_failed(ctx: inngest.Context) -> None:
        """A render-shot run failed for good (a refusal, retries used up, no result in time)."""
        shot = ctx.event.data["event"]["data"]
        error = (ctx.event.data.get("error") or {}).get("message") or "failed"
        await end_shot(ctx, shot, "failed", error=error)

    @client.create_function(
        fn_id="render-shot", trigger=inngest.TriggerEvent(event=SHOT_REQUESTED), retries=3, on_failure=shot_failed,
        # A few provider slots in all, and at most `per_user` of them for one user: a user's
        # 100-shot batch queues behind itself, not in front of everyone else.
        concurrency=[inngest.Concurrency(limit=settings.provider_slots),
                     inngest.Concurrency(limit=settings.per_user, key="event.data.user_id")],
        # The hard stop if a run overruns its 30 minutes (e.g. long retries); the clean-up settles it.
        timeouts=inngest.Timeouts(finish=RUN_TIMEOUT),
    )
    async def render_shot(ctx: inngest.Context) -> dict[str, Any]:
        shot = ctx.event.data

        async def submit() -> dict[str, Any]:
            body = {**provider_body(shot), "metadata": {"user_id": shot["user_id"], "shot_id": shot["shot_id"]}}
            if shot.get("callback_url"):
                body["callback_url"] = shot["callback_url"]
            # A submit whose answer was lost (a crash, a timeout) is retried: the key makes the
            # provider answer the job it already started instead of rendering (and billing) twice.
            job = await provider("POST", "/v1/videos", body, key=shot["shot_id"])
            if not JOB_ID.match(str(job.get("id", ""))):
                raise inngest.NonRetriableError(f"the provider answered an unusable job id: {job!r}")
            store.set_job(shot["shot_id"], job["id"])
            await publish(shot["batch_id"], {"type": "shot.submitted", "shot_id": shot["shot_id"], "job_id": job["id"]})
            return job

        job = await ctx.step.run("submit", submit)
        wait = wait_for_webhook if shot.get("callback_url") else poll
        result = await wait(ctx, job["id"])
        if result is None:
            await ctx.step.run("cancel-job", cancel_job, job["id"])
            raise inngest.NonRetriableError(f"no result from the provider within {FINISH_WITHIN.seconds // 60} minutes")
        if result["status"] != "succeeded":  # failed, or cancelled (by the clean-up, say)
            why = result.get("error") or result["status"]
            raise inngest.NonRetriableError(f"the provider could not render it: {why}")
        await end_shot(ctx, shot, "succeeded", video_url=result["video_url"])
        return {"shot_id": shot["shot_id"], "job_id": job["id"], "video_url": result["video_url"]}

    @client.create_function(fn_id="settle-batch", trigger=inngest.TriggerEvent(event=BATCH_ENDED), retries=3)
    async def settle_batch(ctx: inngest.Context) -> dict[str, Any]:
        batch_id = ctx.event.data["batch_id"]

        async def settle() -> dict[str, Any]:
            totals = store.settle(batch_id)  # idempotent: the ledger keys refuse a second line
            if settings.chaos_settle and ctx.attempt == 0:
                raise RuntimeError("VIDEO_CHAOS_SETTLE: the ledger was written but this answer is lost")
            await publish(batch_id, {"type": "batch.settled", **totals})
            return totals

        return await ctx.step.run("settle", settle)

    @client.create_function(
        fn_id="clean-up-stale",
        # The cron, and by hand: `POST /v1/functions/video-batch-clean-up-stale/invoke` with
        # {"data": {"older_than_seconds": N}} (the dashboard's Invoke button does the same).
        trigger=inngest.TriggerCron(cron="*/10 * * * *"),
    )
    async def clean_up_stale(ctx: inngest.Context) -> dict[str, Any]:
        older_than = float(ctx.event.data.get("older_than_seconds", STALE_AFTER.total_seconds()))
        cutoff = await ctx.step.run("cutoff", lambda: time.time() - older_than)  # recorded: replays agree
        stale = await ctx.step.run("find-stale", store.stale_shots, cutoff)
        for shot in stale:
            if shot["job_id"]:
                await ctx.step.run(f"cancel-{shot['id']}", cancel_job, shot["job_id"])
            await end_shot(ctx, {"shot_id": shot["id"], "batch_id": shot["batch_id"]}, "failed",
                           error=f"stale: no result after {older_than:.0f} s")
        return {"expired": [s["id"] for s in stale]}

    functions = [render_shot, settle_batch, clean_up_stale]
    app = FastAPI(title="video batch")
    app.state.settings, app.state.store, app.state.client = settings, store, client

    @app.post("/batches", status_code=202)
    async def create_batch(batch: BatchIn) -> dict[str, Any]:
        batch_id = "b_" + uuid.uuid4().hex[:12]
        shots = [{**s.model_dump(), "shot_id": f"{batch_id}-{i}", "batch_id": batch_id, "user_id": batch.user_id,
                  "price_cents": PRICE_CENTS_PER_SECOND[s.model] * s.seconds,
                  # per batch, so a config change never strands shots that are already waiting
                  "callback_url": settings.callback_url or None}
                 for i, s in enumerate(batch.shots)]
        store.create_batch(batch_id, batch.user_id, shots)
        # If this send fails, the shots stay pending and the clean-up refunds them.
        event_ids = await client.send([inngest.Event(name=SHOT_REQUESTED, data=s, id=s["shot_id"]) for s in shots])
        return {"batch_id": batch_id, "shots": [s["shot_id"] for s in shots], "event_ids": event_ids,
                "status_url": f"/batches/{batch_id}", "watch_url": f"/batches/{batch_id}/watch",
                "progress_url": await progress_url(batch_id)}

    async def progress_url(batch_id: str) -> str:
        """lockgate's SSE stream of the batch's progress channel, with a token that allows only it."""
        token = await realtime.get_subscription_token(client, f"video-batch:{batch_id}", ["progress"])
        return f"{lockgate_url()}/v1/realtime/sse?token={quote(str(token['key']))}"

    def batch_or_404(batch_id: str) -> dict[str, Any]:
        found = store.batch(batch_id)
        if found is None:
            raise HTTPException(404, f"no batch {batch_id}")
        return found

    @app.get("/batches/{batch_id}")
    async def get_batch(batch_id: str) -> dict[str, Any]:
        return batch_or_404(batch_id)

    @app.get("/batches/{batch_id}/watch", response_class=HTMLResponse)
    async def watch_batch(batch_id: str) -> str:
        """A page that follows the batch live (the browser talks to lockgate's SSE: allow this origin
        with lockgate's `cors_origins`, as lockgate.yaml does)."""
        found = json.dumps(batch_or_404(batch_id)).replace("</", "<\\/")  # safe inside <script>
        page = WATCH_PAGE.replace("__PROGRESS_URL__", json.dumps(await progress_url(batch_id)), 1)
        return page.replace("__BATCH__", found, 1)  # last, and once: prompts may hold any text

    @app.post("/webhooks/provider")
    async def provider_webhook(request: Request) -> dict[str, Any]:
        body = await request.body()
        expected = sign(settings.webhook_secret, body)
        if not hmac.compare_digest(expected, request.headers.get("x-provider-signature", "")):
            raise HTTPException(401, "bad or missing X-Provider-Signature")
        try:
            job = json.loads(body)
            job_id, status = job["id"], job["status"]
        except (ValueError, KeyError, TypeError):
            raise HTTPException(400, "expected a JSON job with id and status") from None
        # A repeated callback is harmless: the wait it would resume has already resumed. The id
        # names the callback, so lockgate starts no second run for it should a function listen.
        ids = await client.send(inngest.Event(name=RENDER_FINISHED, data=job, id=f"render-{job_id}-{status}"))
        return {"event_ids": ids}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "functions": len(functions)}

    inngest.fast_api.serve(app, client, functions)  # at /api/inngest
    return app
