"""App health: what `/v1/apps` says about each app, and the fix in words.

An app's `error` is set when a sync fails, when a call to it fails at the transport level
(refused, timed out, bad signature) and when the periodic check cannot reach it or gets an
error status (401: the signing keys differ); a later successful sync, call or check clears it. Changes are logged once per transition ("unreachable",
"recovered"), not once per failed call.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from lockgate.models import now_ms
from lockgate.protocol.text import first_line
from lockgate.store import operations as ops
from lockgate.store.base import Store

log = logging.getLogger("lockgate.apps")


def unreachable_text(url: str, exc: BaseException) -> str:
    parts = urlsplit(url)
    cause = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    return (f"could not reach the app at {url} ({cause}). Is it running, and on port {parts.port or 80}?"
            " Fix the URL with -u/--sdk-url, or start the app")


def refused_functions_text(url: str, message: str) -> str:
    """lockgate refused an app's function configs at /fn/register: which one, why, and the fix."""
    return (f"lockgate refused the functions of the app at {url}: {message}. Fix that function's"
            " configuration in the app and restart it (it syncs again by itself)")


def refused_sync_text(url: str, status: int, body: str, *, own_url: str | None, signed: bool) -> str:
    """Why an app answered our sync PUT with an error, and what to change."""
    if own_url and _same_server(url, own_url):
        return (f"{url} is this lockgate server, not an app: give -u/--sdk-url the address and port your app"
                " listens on (lockgate's own port cannot serve an app)")
    text = f"the app at {url} refused the sync with HTTP {status}: {body.strip()[:300]}"
    lowered = body.lower()
    if status == 401 or "signature" in lowered or "signing key" in lowered:
        if signed:
            return text + (". Its signing key differs from this server's: give the app the same"
                           " INNGEST_SIGNING_KEY as lockgate's --signing-key")
        return text + (". The app runs in cloud mode and wants signed requests: start it with INNGEST_DEV=1"
                       " for `lockgate dev`, or use `lockgate start --signing-key` with the app's key")
    refusal = _own_refusal(body)
    if refusal and refusal.startswith("sync refused: "):
        return refusal  # the trust probe's verdict (an app in dev mode, another key): it names its fix
    if refusal:
        # The SDK reached /fn/register and relays lockgate's own 4xx: a function's configuration is refused.
        return refused_functions_text(url, refusal)
    if "expected dev server" in lowered:
        # The Python SDK in dev mode refuses a sync that carries a signature (from `lockgate start`).
        return text + (". The app runs in dev mode, and `lockgate start` is a production server that signs"
                       " its requests: start the app with INNGEST_DEV=0 and the same INNGEST_SIGNING_KEY as"
                       " lockgate's --signing-key (Python: not with is_production=False), or use `lockgate dev`")
    if "expected cloud" in lowered:
        return text + (". The app runs in cloud mode, and `lockgate dev` does not sign its requests: start the"
                       " app with INNGEST_DEV=1, or use `lockgate start --signing-key` with the app's key")
    if own_url:
        # The SDK registers by calling back to its configured server; when that is not us it fails.
        return text + (f". If the app could not reach lockgate to register, point it here: start it with"
                       f" INNGEST_DEV={own_url} (or INNGEST_BASE_URL={own_url})")
    return text


_LOCAL_NAMES = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def _same_server(url: str, own_url: str) -> bool:
    """Whether an app URL points at lockgate's own listener (a local name on lockgate's port)."""
    try:
        app, own = urlsplit(url), urlsplit(own_url)
        app_port = app.port or (443 if app.scheme == "https" else 80)
        own_port = own.port or 80
    except ValueError:
        return False
    same_host = app.hostname == own.hostname or {app.hostname, own.hostname} <= _LOCAL_NAMES
    return same_host and app_port == own_port


def _own_refusal(body: str) -> str | None:
    """The message of a lockgate error body (`{"error": ..., "status": 4xx}`) an SDK passed on, if it is one."""
    try:
        found = json.loads(body)
    except ValueError:
        return None
    if isinstance(found, dict) and isinstance(found.get("error"), str) and isinstance(found.get("status"), int) \
            and found["status"] == 400:
        return found["error"]
    return None


def refused_check_text(url: str, status: int, body: str, *, signed: bool) -> str:
    """Why an app answered the periodic GET with an error, and what to change."""
    if status == 401 and signed:
        return (f"signing key mismatch: the app refused lockgate's signature (401) at {url}. Give the app the"
                " same INNGEST_SIGNING_KEY as lockgate's --signing-key")
    line = first_line(body, 300)
    text = f"the app at {url} answered the health check with HTTP {status}" + (f": {line}" if line else "")
    if status == 401:
        return text + (". The app runs in cloud mode and wants signed requests: start it with INNGEST_DEV=1"
                       " for `lockgate dev`, or use `lockgate start --signing-key` with the app's key")
    return text


def bad_call_text(url: str, message: str) -> str:
    return f"calls to the app at {url} are failing: {message}"


class AppHealth:
    """Keeps the apps' `error` column in step with what we see, logging each change once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._failing: dict[str, str] = {}  # url -> the last error recorded for it

    def is_failing(self, url: str) -> bool:
        return url in self._failing

    async def failed(self, url: str, error: str, *, app: str | None = None) -> None:
        if self._failing.get(url) == error:
            return  # already recorded: no write and no log line per failed call
        first = url not in self._failing
        self._failing[url] = error
        await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=error, at=now_ms()))
        if first:
            log.warning("app unreachable or refusing: %s", error, extra={"app": app, "url": url})

    async def recovered(self, url: str, *, app: str | None = None, record: bool = True) -> None:
        """A call or sync worked. `record=False` when the caller's own write already cleared the error."""
        if url not in self._failing:
            return
        del self._failing[url]
        if record:
            await self.store.write(lambda tx: ops.set_app_error(tx, url=url, error=None, at=now_ms()))
        log.info("app recovered: %s answers again", url, extra={"app": app, "url": url})
