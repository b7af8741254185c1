"""Requests the server makes on a step's behalf: `step.ai.infer` (op `AIGateway`) and JS `step.fetch`
(op `Gateway`). The SDK hands over the request in the op's `opts`; the answer becomes the step's output.
They go through the engine's HTTP client, so the outbound policy (lockgate/outbound.py) applies.

AI requests follow the SDK adapters' `format`: the server adds the provider's auth header for the
step's `auth_key` (OpenAI-compatible `openai-chat`: bearer token; `anthropic`: `x-api-key`;
`gemini`: the key travels in the URL, else `x-goog-api-key`; `azure-openai`: `api-key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from lockgate.outbound import credentials_problem

AI_OP = "AIGateway"
FETCH_OP = "Gateway"
OPS = (AI_OP, FETCH_OP)
MAX_ERROR_BODY = 2000
ANTHROPIC_VERSION = "2023-06-01"


class StepRequestError(ValueError):
    """The step's request cannot be made as given; the message names the field."""


@dataclass(slots=True)
class StepRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


@dataclass(slots=True)
class StepRequestResult:
    output: Any = None  # the step's data when ok
    error: dict[str, Any] | None = None  # the step's error otherwise
    retriable: bool = True


def build_request(op: str, opts: Any) -> StepRequest:
    if not isinstance(opts, dict):
        raise StepRequestError("the step's opts must be an object")
    url = opts.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise StepRequestError("opts.url must be an absolute http(s) URL")
    problem = credentials_problem(url)
    if problem:
        raise StepRequestError(f"opts.url: {problem}")
    raw_headers = opts.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise StepRequestError("opts.headers must be an object")
    headers = {str(k): str(v) for k, v in raw_headers.items()}
    if op == FETCH_OP:
        body = opts.get("body")
        if body is not None and not isinstance(body, str):
            raise StepRequestError("opts.body of step.fetch must be a string")
        return StepRequest(str(opts.get("method") or "GET").upper(), url, headers,
                               body.encode() if body is not None else None)
    if "body" not in opts:
        raise StepRequestError("opts.body (the model request) is required")
    lowered = {k.lower() for k in headers}
    if "content-type" not in lowered:
        headers["Content-Type"] = "application/json"
    key = opts.get("auth_key") or ""
    fmt = str(opts.get("format") or "openai-chat")
    if key:
        if fmt == "anthropic":
            headers.setdefault("x-api-key", key)
            if "anthropic-version" not in lowered:
                headers["anthropic-version"] = ANTHROPIC_VERSION
        elif fmt == "gemini":
            if "key=" not in url and "x-goog-api-key" not in lowered:
                headers["x-goog-api-key"] = key
        elif fmt == "azure-openai":
            headers.setdefault("api-key", key)
        elif "authorization" not in lowered:
            headers["Authorization"] = f"Bearer {key}"
    return StepRequest("POST", url, headers, orjson.dumps(opts["body"]))


def ai_result(status: int, body: bytes) -> StepRequestResult:
    """A provider's answer: its JSON on 2xx; otherwise an error (a 4xx other than 408/429 will not
    change on retry)."""
    if 200 <= status < 300:
        try:
            return StepRequestResult(output=orjson.loads(body))
        except orjson.JSONDecodeError:
            return StepRequestResult(error=_error(f"the model provider answered HTTP {status} with a body that is not"
                                               f" JSON: {_text(body)}"), retriable=False)
    retriable = status >= 500 or status in (408, 429)
    return StepRequestResult(error=_error(f"the model provider answered HTTP {status}: {_text(body)}"),
                          retriable=retriable)


def fetch_result(status: int, headers: dict[str, str], body: bytes) -> StepRequestResult:
    """`step.fetch` returns every answer as a Response (the SDK reads `status_code`, `headers`, `body`)."""
    return StepRequestResult(output={"status_code": status, "headers": headers,
                                  "body": body.decode("utf-8", errors="replace")})


def unreachable(url: str, why: str) -> StepRequestResult:
    return StepRequestResult(error=_error(f"could not reach {url}: {why}"), retriable=True)


def _error(message: str) -> dict[str, str]:
    return {"name": "Error", "message": message}


def _text(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    return text if len(text) <= MAX_ERROR_BODY else text[:MAX_ERROR_BODY] + "…"
