"""`lockgate doctor`: check a setup end to end and say in plain words what to fix.

Checks the port, the database, and every app (named with -u or already synced): that it
answers, how many functions it serves against how many lockgate knows, and whether it
holds the same signing key.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from lockgate.engine.endpoints import FRAMEWORK as ENDPOINT_FRAMEWORK
from lockgate.engine.sync import CONNECT_APP_SCHEME
from lockgate.protocol.signing import hashed_signing_key, sign_body, validate_signing_key
from lockgate.settings import Settings


@dataclass
class Report:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (status, text)

    def ok(self, text: str) -> None:
        self.lines.append(("ok", text))

    def warn(self, text: str) -> None:
        self.lines.append(("warn", text))

    def problem(self, text: str) -> None:
        self.lines.append(("FAIL", text))

    @property
    def problems(self) -> int:
        return sum(1 for status, _ in self.lines if status == "FAIL")

    @property
    def warnings(self) -> int:
        return sum(1 for status, _ in self.lines if status == "warn")

    def summary(self) -> str:
        """The last line: what was found, never "no problems" while there are warnings."""
        def count(n: int, word: str) -> str:
            return f"{n} {word}" if n == 1 else f"{n} {word}s"
        if self.problems:
            tail = f" and {count(self.warnings, 'warning')}" if self.warnings else ""
            return f"{count(self.problems, 'problem')}{tail} found."
        if self.warnings:
            return f"{count(self.warnings, 'warning')}, no errors: see the warn lines above."
        return "No problems found."


def _http(url: str, *, method: str = "GET", headers: dict | None = None, timeout: float = 5.0):
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def check_keys(settings: Settings, report: Report) -> None:
    for label, key in (("signing key", settings.signing_key), ("fallback signing key", settings.signing_key_fallback)):
        if not key:
            continue
        try:
            validate_signing_key(key)
            report.ok(f"{label} is well formed")
        except ValueError as exc:
            report.problem(f"{label}: {exc}. Fix it in --signing-key / INNGEST_SIGNING_KEY")


def check_port(settings: Settings, report: Report) -> str | None:
    """Returns the server URL when a lockgate server answers on the configured port."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    url = f"http://{host}:{settings.port}"
    try:
        with socket.create_connection((host, settings.port), timeout=2):
            pass
    except OSError:
        report.warn(f"nothing listens on {host}:{settings.port}: start the server with `lockgate start` "
                    f"(or `lockgate dev`), or pass the port it uses with --port")
        return None
    try:
        status, headers, _ = _http(url + "/health")
    except (OSError, urllib.error.URLError):
        status, headers = 0, {}
    kind = {k.lower(): v for k, v in headers.items()}.get("x-inngest-server-kind")
    if status != 200 or not kind:
        report.problem(f"port {settings.port} is taken by something that is not lockgate: stop it or choose "
                       f"another port with --port")
        return None
    report.ok(f"lockgate ({kind} mode) answers on {url}")
    return url


def check_database(settings: Settings, report: Report) -> list[tuple[str, int]]:
    """Returns (app url, function count) for the apps the database knows."""
    query = ("SELECT a.url AS url, (SELECT COUNT(*) FROM functions f WHERE f.app_name = a.name AND f.archived = 0)"
             f" AS n FROM apps a WHERE COALESCE(a.framework, '') <> '{ENDPOINT_FRAMEWORK}' ORDER BY a.name")
    if settings.postgres_uri:
        import psycopg

        try:
            with psycopg.connect(settings.postgres_uri, connect_timeout=5) as conn:
                exists = conn.execute("SELECT to_regclass('apps') IS NOT NULL").fetchone()[0]
                if not exists:
                    report.warn("the PostgreSQL database is reachable but empty: lockgate creates its tables on "
                                "first start")
                    return []
                rows = conn.execute(query).fetchall()
        except psycopg.Error as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            report.problem(f"cannot reach PostgreSQL ({first_line}): check --postgres-uri / "
                           f"LOCKGATE_POSTGRES_URI, and that the server runs and accepts this user")
            return []
        report.ok("PostgreSQL is reachable and holds lockgate's tables")
        return [(url, n) for url, n in rows]
    if settings.in_memory:
        report.ok("in-memory store: nothing to check on disk")
        return []
    path = os.path.join(settings.data_dir, "lockgate.db")
    if not os.path.exists(path):
        report.warn(f"no SQLite store at {path} yet: it is created on first start")
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        report.problem(f"the SQLite store at {path} cannot be read ({exc}): check its permissions, or move it "
                       f"away to start afresh")
        return []
    report.ok(f"SQLite store at {path} is readable")
    return [(url, n) for url, n in rows]


def check_app(url: str, known_functions: int | None, settings: Settings, report: Report) -> None:
    headers = {"X-Inngest-Server-Kind": "cloud" if settings.signing_key else "dev"}
    if settings.signing_key:
        headers["X-Inngest-Signature"] = sign_body(b"", settings.signing_key)
    try:
        status, _, body = _http(url, headers=headers)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        report.problem(f"app {url} does not answer ({reason}): is it running, and is this its serve URL "
                       f"(usually ending in /api/inngest)?")
        return
    if status == 401 and settings.signing_key:
        report.problem(f"app {url} rejects our signature: its INNGEST_SIGNING_KEY differs from lockgate's "
                       f"--signing-key; give both the same key")
        return
    try:
        info = json.loads(body)
    except ValueError:
        info = None
    if status != 200 or not isinstance(info, dict) or "function_count" not in info:
        report.problem(f"app {url} answered HTTP {status} without SDK details: check the URL points at the SDK's "
                       f"serve endpoint")
        return
    count = info["function_count"]
    report.ok(f"app {url} answers and serves {count} function(s)")
    if settings.signing_key:
        if info.get("mode") == "dev":
            report.problem(f"app {url} runs in dev mode: set INNGEST_DEV=0 (and INNGEST_SIGNING_KEY) in the app")
        elif info.get("authentication_succeeded"):
            ours = hashed_signing_key(settings.signing_key)
            if info.get("signing_key_hash", "").split("-")[-1] in (ours, ""):
                report.ok(f"app {url} holds the same signing key")
            else:
                report.ok(f"app {url} accepts our key as its fallback: finish the key rotation on the app")
    if known_functions is not None and known_functions != count:
        report.problem(f"app {url} serves {count} function(s) but lockgate has {known_functions} synced: "
                       f"re-sync it (`curl -X PUT {url}`), or look at the app's error in /v1/apps")


def check_server(url: str, settings: Settings, report: Report) -> dict[str, int] | None:
    """Ask the running server about its store, keys and apps. Returns {app url: synced function
    count}, or None when the server would not tell (its API wants the signing key)."""
    headers = {"Authorization": f"Bearer {settings.signing_key}"} if settings.signing_key else {}
    try:
        status, _, body = _http(url + "/v1/server", headers=headers)
        if status == 401:
            report.warn("the server guards its API: pass its key with --signing-key (or INNGEST_SIGNING_KEY) so"
                        " doctor can read its store and apps")
            return None
        if status == 404:  # an older lockgate: fall back to reading the store directly
            return None
        info = json.loads(body)["data"]
        _, _, body = _http(url + "/v1/apps", headers=headers)
        apps = json.loads(body)["data"]
    except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
        report.warn(f"the server on {url} did not describe itself ({exc}); checking local files instead")
        return None
    report.ok(f"the server's store: {info['store']}")
    if settings.signing_key and info.get("signing_key_fingerprint"):
        ours = hashed_signing_key(settings.signing_key)[:12]
        if ours != info["signing_key_fingerprint"]:
            report.problem("the --signing-key given to doctor differs from the running server's: apps must hold"
                           " the server's key")
    for app in apps:
        if app.get("error"):
            report.problem(f"app {app['name']} ({app['url']}): {app['error']}")
    if not apps:
        report.warn("the server has no app synced yet: start your app pointed at it and name it with -u")
    # A durable endpoint's app is only the origin its requests came from: nothing to call.
    return {app["url"]: len(app["functions"]) for app in apps if app.get("framework") != ENDPOINT_FRAMEWORK}


def check_realtime(settings: Settings, server: str | None, report: Report) -> None:
    """Redis (when configured) must answer; the running server says whether its broker is healthy."""
    if settings.redis_uri:
        import redis

        from lockgate.realtime.redis_streams import redact

        try:
            redis.Redis.from_url(settings.redis_uri, socket_connect_timeout=3, socket_timeout=3).ping()
        except redis.RedisError as exc:
            report.problem(f"cannot reach Redis at {redact(settings.redis_uri)} ({exc.__class__.__name__}): realtime "
                           "publishing fails until it is back; check --redis-uri / LOCKGATE_REDIS_URI")
        else:
            report.ok(f"Redis at {redact(settings.redis_uri)} answers (realtime messages)")
    if server is None:
        return
    try:
        _, _, body = _http(server + "/health")
        realtime = json.loads(body).get("realtime") or {}
    except (OSError, urllib.error.URLError, ValueError, AttributeError):
        return
    if realtime.get("problem"):
        report.problem(f"the server's realtime broker ({realtime.get('backend')}) reports: {realtime['problem']}")
    elif realtime.get("backend"):
        report.ok(f"the server's realtime broker ({realtime['backend']}) is healthy")


def check_autovacuum(settings: Settings, report: Report) -> None:
    """Say who vacuums lockgate's tables when PostgreSQL's autovacuum is off (housekeeping does)."""
    import psycopg

    try:
        with psycopg.connect(settings.postgres_uri, connect_timeout=5) as conn:
            off = conn.execute("SELECT current_setting('autovacuum') = 'off'").fetchone()[0]
    except psycopg.Error:
        return  # check_database or the server has said why PostgreSQL cannot be reached
    if off:
        report.ok("PostgreSQL's autovacuum is off: lockgate's housekeeping vacuums and analyzes its own tables "
                  "(counted in GET /v1/retention); nothing does for other tables in this database")


def run(settings: Settings) -> Report:
    report = Report()
    check_keys(settings, report)
    server = check_port(settings, report)
    # A running server knows its own store and apps; local files are only a guess.
    known = check_server(server, settings, report) if server else None
    if known is None:
        known = dict(check_database(settings, report))
    if settings.postgres_uri:
        check_autovacuum(settings, report)
    check_realtime(settings, server, report)
    urls = list(dict.fromkeys([*settings.sdk_urls, *known]))
    if not urls and not server:
        report.warn("no apps to check: pass their serve URLs with -u")
    for url in urls:
        if url.startswith(CONNECT_APP_SCHEME):  # its workers dial in: nothing to call; /v1/apps lists them
            report.ok(f"app {url.removeprefix(CONNECT_APP_SCHEME)} is served by Connect workers ({known.get(url)}"
                      " function(s) synced)")
            continue
        check_app(url, known.get(url), settings, report)
    return report
