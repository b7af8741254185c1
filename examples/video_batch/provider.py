"""A fake video-generation provider: a small HTTP service that is slow, sometimes fails, and whose
models each want their parameters in a different shape, like the real ones.

    POST   /v1/videos        submit a job → 201 {"id": "job_…", "status": "queued"}
    GET    /v1/videos/{id}   the job: queued | running | succeeded (video_url) | failed (error) | cancelled
    DELETE /v1/videos/{id}   cancel it
    GET    /v1/videos        every job (to look at)

Models and the body each one takes (anything else is refused with 400):

    reel-1    {"model", "prompt", "duration_s": 1..60, "aspect": "16:9" | "9:16" | "1:1"}
    frame-2   {"model", "prompt", "frames": 24..720, "size": "1280x720" | "720x1280" | "1024x1024"}

Both take an optional "callback_url" (the finished job is POSTed there, signed with
X-Provider-Signature = hex HMAC-SHA256 of the body under the shared webhook secret) and "metadata".
A repeated submit with the same Idempotency-Key header answers the job the first one created.

Behaviour, on purpose:
- every submit takes `submit_ms` to answer and a render `render_ms`;
- `overload_rate` of submits answer 503 and `failure_rate` of renders fail, at random;
- words in a prompt make it deterministic, for demos and tests: "forbidden" is refused by the
  content policy (422, permanent), "busy" answers 503 to its first two submits, "lost" starts the
  job but answers 504 (as if the answer were lost: a retry with the same Idempotency-Key gets the
  job), "glitch" fails its render,
  "stall" renders forever (until cancelled).

Run it alone: `python -m examples.video_batch.provider --port 8311` (`--time-scale 0.1`, or
VIDEO_PROVIDER_TIME_SCALE=0.1, makes it ten times faster).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

logger = logging.getLogger("fake-provider")

MODELS: dict[str, dict[str, Any]] = {
    "reel-1": {"duration_s": range(1, 61), "aspect": ("16:9", "9:16", "1:1")},
    "frame-2": {"frames": range(24, 721), "size": ("1280x720", "720x1280", "1024x1024")},
}


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class ProviderSettings:
    submit_ms: tuple[int, int] = (300, 1500)  # slow to accept a job
    render_ms: tuple[int, int] = (3000, 15000)
    overload_rate: float = 0.1
    failure_rate: float = 0.1
    webhook_secret: str = "dev-webhook-secret"
    base_url: str = "http://127.0.0.1:8311"  # where the rendered videos would be served


@dataclass
class FakeProvider:
    """The provider's state; tests hold it to look inside and to pause it."""

    settings: ProviderSettings = field(default_factory=ProviderSettings)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    submits: list[dict[str, Any]] = field(default_factory=list)  # every submit: user, answer, start/end
    in_flight: Counter = field(default_factory=Counter)  # submits being answered now, per user
    hold_submits: bool = False  # while True, submits are received but not answered
    hold_renders: bool = False  # while True, renders do not finish
    rng: random.Random = field(default_factory=random.Random)
    by_key: dict[str, str] = field(default_factory=dict)  # Idempotency-Key → job id
    _busy_seen: Counter = field(default_factory=Counter)
    _tasks: set = field(default_factory=set)

    def _ms(self, bounds: tuple[int, int]) -> float:
        return self.rng.uniform(*bounds) / 1000

    async def submit(self, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
        user = str((body.get("metadata") or {}).get("user_id", ""))
        record = {"user": user, "prompt": body.get("prompt"), "started": time.monotonic(), "status": None}
        self.submits.append(record)
        self.in_flight[user] += 1
        record["in_flight_at_start"] = self.in_flight[user]
        try:
            await asyncio.sleep(self._ms(self.settings.submit_ms))
            while self.hold_submits:
                await asyncio.sleep(0.01)
            if key and key in self.by_key:  # a retry of a submit whose answer was lost: same job
                status, answer = 200, {"id": self.by_key[key], "status": self.jobs[self.by_key[key]]["status"]}
            else:
                status, answer = self._accept(body)
                if key and status == 201:
                    self.by_key[key] = answer["id"]
                if status == 201 and "lost" in str(body.get("prompt")):  # the job runs, the answer is lost
                    status, answer = 504, {"error": {"type": "gateway_timeout", "message": "upstream timed out"}}
        finally:
            self.in_flight[user] -= 1
            record["ended"] = time.monotonic()
        record["status"] = status
        return status, answer

    def _accept(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model = body.get("model")
        if model not in MODELS:
            return 404, {"error": {"type": "unknown_model", "message": f"no model {model!r}; try {sorted(MODELS)}"}}
        shape = MODELS[model]
        expected = {"model", "prompt", *shape}
        given = set(body) - {"callback_url", "metadata"}
        if given != expected:
            return 400, {"error": {"type": "invalid_parameters",
                                   "message": f"{model} takes {sorted(expected)}, got {sorted(given)}"}}
        for name, allowed in shape.items():
            if body[name] not in allowed:
                return 400, {"error": {"type": "invalid_parameters",
                                       "message": f"{name}={body[name]!r} is out of range"}}
        prompt = str(body["prompt"])
        if "forbidden" in prompt:
            return 422, {"error": {"type": "content_policy", "message": "the prompt breaks the content policy"}}
        if "busy" in prompt:
            self._busy_seen[prompt] += 1
            if self._busy_seen[prompt] <= 2:
                return 503, {"error": {"type": "overloaded", "message": "too many jobs, try again"}}
        elif self.rng.random() < self.settings.overload_rate:
            return 503, {"error": {"type": "overloaded", "message": "too many jobs, try again"}}
        job_id = "job_" + uuid.uuid4().hex[:16]
        job = {"id": job_id, "model": model, "prompt": prompt, "status": "queued", "video_url": None, "error": None,
               "callback_url": body.get("callback_url"), "metadata": body.get("metadata") or {}, "callbacks": []}
        self.jobs[job_id] = job
        task = asyncio.get_running_loop().create_task(self._render(job))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)
        return 201, {"id": job_id, "status": "queued"}

    async def _render(self, job: dict[str, Any]) -> None:
        job["status"] = "running"
        await asyncio.sleep(self._ms(self.settings.render_ms))
        while self.hold_renders or "stall" in job["prompt"]:
            if job["status"] == "cancelled":
                return
            await asyncio.sleep(0.01)
        if job["status"] == "cancelled":
            return
        if "glitch" in job["prompt"] or self.rng.random() < self.settings.failure_rate:
            job.update(status="failed", error="render failed: the decoder ran out of memory")
        else:
            job.update(status="succeeded", video_url=f"{self.settings.base_url}/files/{job['id']}.mp4")
        if job["callback_url"]:
            await self._call_back(job)

    async def _call_back(self, job: dict[str, Any]) -> None:
        body = json.dumps(public(job)).encode()
        headers = {"Content-Type": "application/json",
                   "X-Provider-Signature": sign(self.settings.webhook_secret, body)}
        async with httpx.AsyncClient(timeout=10) as http:
            for attempt in range(5):  # like real providers, retry a webhook that was not taken
                try:
                    answer = await http.post(job["callback_url"], content=body, headers=headers)
                    job["callbacks"].append(answer.status_code)
                    if answer.status_code < 300:
                        return
                except httpx.HTTPError as exc:
                    job["callbacks"].append(repr(exc))
                await asyncio.sleep(0.2 * 2**attempt)
        logger.warning("gave up calling back %s for %s", job["callback_url"], job["id"])

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job and job["status"] in ("queued", "running"):
            job["status"] = "cancelled"
        return job


def public(job: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a job (the callback body too)."""
    return {"id": job["id"], "model": job["model"], "status": job["status"], "video_url": job["video_url"],
            "error": job["error"], "metadata": job["metadata"]}


def create_provider(provider: FakeProvider | None = None) -> FastAPI:
    provider = provider or FakeProvider()
    api = FastAPI(title="fake video provider")
    api.state.provider = provider

    @api.post("/v1/videos")
    async def submit(request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        status, answer = await provider.submit(body, request.headers.get("idempotency-key"))
        return JSONResponse(answer, status_code=status)

    @api.get("/v1/videos")
    async def list_jobs() -> dict:
        return {"data": [public(j) for j in provider.jobs.values()]}

    @api.get("/v1/videos/{job_id}")
    async def get_job(job_id: str) -> dict:
        if job_id not in provider.jobs:
            raise HTTPException(404, f"no job {job_id}")
        return public(provider.jobs[job_id])

    @api.delete("/v1/videos/{job_id}")
    async def cancel_job(job_id: str) -> dict:
        job = provider.cancel(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return public(job)

    return api


def scaled(bounds: tuple[int, int], factor: float) -> tuple[int, int]:
    return round(bounds[0] * factor), round(bounds[1] * factor)


def main() -> None:
    parser = argparse.ArgumentParser(description="the fake video provider of examples/video_batch")
    parser.add_argument("--port", type=int, default=8311)
    parser.add_argument("--webhook-secret", default=os.environ.get("VIDEO_WEBHOOK_SECRET", "dev-webhook-secret"))
    parser.add_argument("--time-scale", type=float, default=float(os.environ.get("VIDEO_PROVIDER_TIME_SCALE", "1")),
                        help="multiplies every delay (0.01: a hundred times faster)")
    args = parser.parse_args()
    import uvicorn

    settings = ProviderSettings(webhook_secret=args.webhook_secret, base_url=f"http://127.0.0.1:{args.port}")
    settings.submit_ms = scaled(settings.submit_ms, args.time_scale)
    settings.render_ms = scaled(settings.render_ms, args.time_scale)
    uvicorn.run(create_provider(FakeProvider(settings)), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
