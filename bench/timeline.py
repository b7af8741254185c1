"""Where a light-load run's time goes: a timeline of single runs, one at a time.

    .venv/bin/python bench/timeline.py [--runs 100] [--backends both] [--mode start|dev]
                                       [--server-root DIR] [--dump FILE]

Starts the server with tracing hooks patched in from the outside (this file, `--serve`: nothing
in lockgate itself records anything), the bench app (FastAPI + the official SDK), sends one event
at a time and, per run, takes timestamps at: the events API handler, each store write (queued,
taken by a writer thread, its statements, the waits for the server, COMMIT, the caller resumed),
the hand-off to the call, the call's bytes out and back, the settlement, the next call... Prints
per-part medians over the runs and the gaps where nothing traced ran (waiting on the event loop,
a thread hop, a timer). `--server-root` runs another version's `lockgate/` the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# In the server process (`--serve`): patch the hooks in, run `lockgate`, dump the trace on exit.

_trace: list[tuple[int, str, str]] = []


def _mark(label: str, extra: str = "") -> None:
    _trace.append((time.time_ns(), label, extra))


def _install_hooks(dump_path: str) -> None:
    import atexit
    import functools
    import signal
    import threading

    from lockgate.engine import dispatcher as dispatcher_mod, engine as engine_mod, executor as executor_mod
    from lockgate.engine import app_client as app_client_mod, progress as progress_mod
    from lockgate.store import base as base_mod

    def dump(*_: object) -> None:
        with open(dump_path, "w") as out:
            for t, label, extra in list(_trace):
                out.write(f"{t}\t{label}\t{extra}\n")

    atexit.register(dump)
    signal.signal(signal.SIGUSR1, dump)

    def wrap_async(owner: object, name: str, label: str, *, arg_label=None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        async def traced(*args, **kwargs):
            extra = arg_label(*args, **kwargs) if arg_label else ""
            _mark(label + ".enter", extra)
            try:
                return await original(*args, **kwargs)
            finally:
                _mark(label + ".exit", extra)

        setattr(owner, name, traced)

    def wrap_sync(owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def traced(*args, **kwargs):
            _mark(label + ".enter", threading.current_thread().name)
            try:
                return original(*args, **kwargs)
            finally:
                _mark(label + ".exit", threading.current_thread().name)

        setattr(owner, name, traced)

    def fn_name(fn) -> str:
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_name == "run":  # progress.collecting's wrapper
            fn = next((c.cell_contents for c in fn.__closure__ or () if callable(c.cell_contents)), fn)
            code = getattr(fn, "__code__", None)
        if code is not None and code.co_name == "<lambda>":  # name it by what it calls
            wanted = [n for n in code.co_names if n not in ("interpreter", "now_ms", "ops")]
            return wanted[0] if wanted else "<lambda>"
        closure = getattr(fn, "__closure__", None) or ()
        for cell in closure:  # progress.collecting's wrapper: name the function it wraps
            inner = cell.cell_contents
            if callable(inner) and getattr(inner, "__name__", "") not in ("run", ""):
                return getattr(inner, "__qualname__", str(inner))
        return getattr(fn, "__qualname__", str(fn))

    wrap_async(engine_mod.Engine, "ingest", "ingest")
    wrap_async(engine_mod.Engine, "_call_once", "call_once", arg_label=lambda self, job, *a, **k: job.step_id)
    wrap_async(executor_mod.Executor, "call", "app_call")
    wrap_async(app_client_mod.AppHttpClient, "post", "wire")

    original_adopt = dispatcher_mod.Dispatcher.adopt

    def adopt(self, job, state=None):
        _mark("adopt", job.step_id or "")
        return original_adopt(self, job, state)

    dispatcher_mod.Dispatcher.adopt = adopt
    original_wake = dispatcher_mod.Dispatcher.wake

    def wake(self):
        _mark("dispatcher.wake")
        return original_wake(self)

    dispatcher_mod.Dispatcher.wake = wake
    original_lease = dispatcher_mod._lease_batch

    def lease_batch(*args, **kwargs):
        _mark("lease_round.enter")
        try:
            return original_lease(*args, **kwargs)
        finally:
            _mark("lease_round.exit")

    dispatcher_mod._lease_batch = lease_batch

    original_write = base_mod.ThreadedStore.write

    async def write(self, fn, *args):
        name = fn_name(fn)
        if name.endswith("lease_batch"):
            name = "lease_batch"

        def traced_fn(tx, *a):
            _mark("write.fn.enter", name)
            try:
                return fn(tx, *a)
            finally:
                _mark("write.fn.exit", name)

        _mark("write.queued", name)
        try:
            return await original_write(self, traced_fn, *args)
        finally:
            _mark("write.resumed", name)

    base_mod.ThreadedStore.write = write
    original_read = base_mod.ThreadedStore.read

    async def read(self, fn, *args):
        name = getattr(fn, "__qualname__", str(fn))
        _mark("read.enter", name)
        try:
            return await original_read(self, fn, *args)
        finally:
            _mark("read.exit", name)

    base_mod.ThreadedStore.read = read

    original_publish = progress_mod.ProgressPublisher.publish

    def publish(self, notes):
        _mark("progress.publish", str(len(notes)))
        return original_publish(self, notes)

    progress_mod.ProgressPublisher.publish = publish

    try:
        from lockgate.store import postgres as pg_mod
    except ImportError:
        pg_mod = None
    if pg_mod is not None:
        wrap_sync(pg_mod.PostgresStore, "_apply_batch", "batch")
        wrap_sync(pg_mod.PostgresTx, "wait_for_results", "pg.wait")
        wrap_sync(pg_mod.PostgresTx, "end_pipeline", "pg.end_pipeline")
        original_settle = pg_mod.settle_future

        def settle(future, result, exc):
            _mark("future.settled")
            return original_settle(future, result, exc)

        pg_mod.settle_future = settle
        wrap_sync(pg_mod._OwnConnectionLane, "run", "lane")
        original_listen = pg_mod.PostgresStore.listen

        def listen(self, callbacks):
            def traced(channel, callback):
                def run():
                    _mark("notified", channel)
                    callback()
                return run

            return original_listen(self, {c: traced(c, cb) for c, cb in callbacks.items()})

        pg_mod.PostgresStore.listen = listen
        original_commit = pg_mod.psycopg.Connection.commit

        def commit(self):
            _mark("commit.enter")
            try:
                return original_commit(self)
            finally:
                _mark("commit.exit")

        pg_mod.psycopg.Connection.commit = commit
    try:
        from lockgate.store import sqlite as sqlite_mod
    except ImportError:
        sqlite_mod = None
    if sqlite_mod is not None:
        for name in ("_apply_batch", "_apply"):
            if hasattr(sqlite_mod.SQLiteStore, name):
                wrap_sync(sqlite_mod.SQLiteStore, name, "batch")
                break
        if hasattr(sqlite_mod, "settle_future"):
            original_settle_sqlite = sqlite_mod.settle_future

            def settle_sqlite(future, result, exc):
                _mark("future.settled")
                return original_settle_sqlite(future, result, exc)

            sqlite_mod.settle_future = settle_sqlite


def serve(argv: list[str]) -> None:
    dump_path = argv[0]
    sys.argv = ["lockgate", *argv[1:]]
    _install_hooks(dump_path)
    from lockgate.cli import main

    main()


# ---------------------------------------------------------------------------------------------
# The driver: start the stack, send events one at a time, read the trace.


def load_trace(trace_path: Path) -> list[tuple[int, str]]:
    rows = []
    for line in trace_path.read_text().splitlines():
        t, label, extra = (line.split("\t") + ["", ""])[:3]
        rows.append((int(t), f"{label} {extra}".strip()))
    rows.sort()
    return rows


def runs_of(rows: list[tuple[int, str]], sends: list[tuple[int, str]]) -> list[list[tuple[int, str]]]:
    """Each run's trace rows, from the client's send until the next send; its start first."""
    out = []
    for index, (sent_at, _) in enumerate(sends):
        end_at = sends[index + 1][0] if index + 1 < len(sends) else rows[-1][0] + 1
        out.append([(sent_at, "client sends the event")] + [r for r in rows if sent_at <= r[0] < end_at])
    return out


def gaps(run: list[tuple[int, str]]) -> list[tuple[str, float]]:
    """(from → to, ms) for consecutive traced points, the n-th occurrence of a pair numbered."""
    seen: dict[str, int] = {}
    out = []
    for (t0, a), (t1, b) in zip(run, run[1:]):
        key = f"{a} → {b}"
        seen[key] = seen.get(key, 0) + 1
        out.append((f"{key} #{seen[key]}", (t1 - t0) / 1e6))
    return out


def critical_path(run: list[tuple[int, str]]) -> dict[str, float] | None:
    """The run's own path, from the send to its last write resumed, cut into parts (ms, summed
    over the calls and writes of the run)."""
    parts: dict[str, float] = {}

    def find(prefix: str, start: int) -> int:
        for j in range(start, len(run)):
            if run[j][1].startswith(prefix):
                return j
        raise LookupError(prefix)

    def add(name: str, a: int, b: int) -> None:
        parts[name] = parts.get(name, 0.0) + (run[b][0] - run[a][0]) / 1e6

    def write(name: str, start: int, caller: str) -> int:
        queued = find(f"write.queued {name}", start)
        add(f"{caller} → its write queued", start, queued)
        fn_enter = find(f"write.fn.enter {name}", queued)
        batch = max((j for j in range(queued, fn_enter) if run[j][1].startswith("batch.enter")), default=None)
        if batch is not None:
            add("write: queue → writer thread", queued, batch)
            add("write: writer thread → its transaction begins (connection, BEGIN)", batch, fn_enter)
        else:
            add("write: queue → its transaction begins", queued, fn_enter)
        fn_exit = find(f"write.fn.exit {name}", fn_enter)
        add("write: statements (fn, with its waits for the server)", fn_enter, fn_exit)
        done = find("batch.exit", fn_exit)
        commit = next((j for j in range(fn_exit, done) if run[j][1] == "commit.enter"), None)
        if commit is not None:
            add("write: pipeline sync after fn", fn_exit, commit)
            add("write: COMMIT (fsync) and connection back to the pool", commit, done)
        else:
            add("write: COMMIT (fsync)", fn_exit, done)
        settled = find("future.settled", done)
        add("write: writer thread → event loop (call_soon_threadsafe)", done, settled)
        resumed = find(f"write.resumed {name}", settled)
        add("write: future done → caller resumed", settled, resumed)
        parts["writes"] = parts.get("writes", 0) + 1
        return resumed

    try:
        ingest = find("ingest.enter", 0)
        add("client send → events handler (HTTP in)", 0, ingest)
        at = write("ingest_in_tx", ingest, "events handler")
        ingest_exit = find("ingest.exit", at)
        add("event committed → handler returns", at, ingest_exit)
        call = find("call_once.enter", ingest_exit)
        add("handler returns → first call's task runs", ingest_exit, call)
        while True:
            wire_in = find("wire.enter", call)
            add("call task → request out (body, HMAC)", call, wire_in)
            wire_out = find("wire.exit", wire_in)
            add("app call on the wire (out → answer in)", wire_in, wire_out)
            parts["calls"] = parts.get("calls", 0) + 1
            app_exit = find("app_call.exit", wire_out)
            add("answer in → checked and parsed", wire_out, app_exit)
            at = write("settle_call", app_exit, "answer parsed")
            try:
                call_exit = find("call_once.exit", at)
                nxt = find("call_once.enter", call_exit)
            except LookupError:
                break
            if nxt - call_exit > 3 and any(r[1].startswith("write.queued settle_call") for r in run[call_exit:nxt]):
                break
            add("settled → next call starts", at, nxt)
            call = nxt
    except LookupError:
        return None
    parts["TOTAL send → last write resumed"] = (run[at][0] - run[0][0]) / 1e6
    return parts


def print_analysis(rows, sends, latencies, show_run: bool = False) -> None:
    runs = runs_of(rows, sends)
    order = sorted(range(len(latencies)), key=lambda i: latencies[i])
    median_run = runs[order[len(order) // 2]]
    if show_run:
        print_run(median_run, latencies[order[len(order) // 2]])
    paths = [p for p in (critical_path(run) for run in runs) if p]
    print(f"    the run's own path, medians over {len(paths)} runs (ms per run, summed over its writes and calls):")
    for name in paths[0] if paths else []:
        values = [p.get(name, 0.0) for p in paths]
        print(f"      {statistics.median(values):7.3f}  {name}")


def print_run(median_run, latency) -> None:
    print(f"    the median run ({latency:.2f} ms), ms since the send (+ since the previous point):")
    t0 = prev = median_run[0][0]
    for t, label in median_run:
        if (t - t0) / 1e6 > latency + 3:
            break
        print(f"      {(t - t0) / 1e6:8.3f}  (+{(t - prev) / 1e6:6.3f})  {label}")
        prev = t


def steady(server, postgres_uri, auth, args, dump: Path) -> None:
    """Events at a fixed rate; CPU per run of the server and of its database backends."""
    import httpx

    from bench.run import CpuMeter

    async def load(seconds: float) -> int:
        sent = 0
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth) as http:
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                name = "bench/noop" if sent % 2 == 0 else "bench/steps"
                await http.post("/e/bench", json={"name": name, "data": {"i": sent}})
                sent += 1
                await asyncio.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
            await asyncio.sleep(1.0)  # the last runs finish
        return sent

    asyncio.run(load(3.0))  # warm up
    meter = CpuMeter([server.proc.pid], postgres_uri)
    t0 = time.time_ns()
    meter.start()
    spy = None
    if args.profile:
        import subprocess

        spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.proc.pid),
                                "--format", "raw", "--threads", "--rate", "250", "--duration", str(int(args.seconds)),
                                "-o", str(args.profile)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = asyncio.run(load(args.seconds))
    meter.stop()
    if spy is not None:
        spy.wait()
    t1 = time.time_ns()
    print(f"\n{'PostgreSQL' if postgres_uri else 'SQLite'}, {args.rate:g} runs/s for {args.seconds:g} s"
          f" (noop and three steps alternating), server from {args.server_root},"
          f" load average {os.getloadavg()[0]:.1f}{', untraced' if args.no_trace else ''}:")
    print(f"  server CPU {meter.server_ms / runs:.2f} ms/run, database CPU {meter.database_ms / runs:.2f} ms/run")
    if args.no_trace:
        return
    os.kill(server.proc.pid, __import__("signal").SIGUSR1)
    time.sleep(1.0)
    counts: dict[str, int] = {}
    for t, label in load_trace(dump):
        if t0 <= t < t1 and not label.endswith(".exit") and not label.startswith("write.fn"):
            key = label.split(" lockgate-pg-")[0].split(" lockgate-")[0]
            counts[key] = counts.get(key, 0) + 1
    for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        print(f"    {n / runs:7.2f} per run  {key}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        sys.path.insert(0, os.getcwd())
        serve(sys.argv[2:])
        return
    sys.path.insert(0, str(ROOT))
    import httpx

    from bench.run import EVENT_KEY, SIGNING_KEY, api_headers, parse_iso, pct
    from tests.conftest import PYTHON, AppProcess, LockgateProcess, free_port, wait_until

    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--backends", default="both")
    parser.add_argument("--mode", default="start", choices=("dev", "start"))
    parser.add_argument("--server-root", type=Path, default=ROOT)
    parser.add_argument("--poll-s", type=float, default=0.025)
    parser.add_argument("--functions", default="noop,steps")
    parser.add_argument("--show-run", action="store_true", help="print the median run's whole timeline too")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="instead of single runs: events at this steady rate (noop and steps alternating)"
                             " for --seconds; prints server and database CPU per run, and traced work per run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--no-trace", action="store_true", help="the server without the tracing hooks")
    parser.add_argument("--profile", type=Path, default=None,
                        help="with --rate: py-spy's samples of the server (raw, per thread) during the load")
    args = parser.parse_args()
    backends = ["sqlite", "postgres"] if args.backends == "both" else args.backends.split(",")
    for backend in backends:
        postgres_uri = None
        if backend == "postgres":
            from tests import pgtools

            postgres_uri = pgtools.create_database(pgtools.ADMIN_URI)
        tmp = Path(tempfile.mkdtemp(prefix="lockgate-timeline-"))
        dump = tmp / "trace.tsv"
        app_port = free_port()
        app_url = f"http://127.0.0.1:{app_port}/api/inngest"
        if args.mode == "start":
            server_args = ["start", "--signing-key", SIGNING_KEY, "--event-key", EVENT_KEY, "--poll-interval", "30"]
            app_env = {"INNGEST_DEV": "0", "INNGEST_SIGNING_KEY": SIGNING_KEY, "INNGEST_EVENT_KEY": EVENT_KEY}
        else:
            server_args, app_env = ["dev", "--no-discovery", "--no-poll"], {}
        server = LockgateProcess(args=[*server_args, "-u", app_url, "--log-level", "warning"],
                                 data_dir=tmp / "data", log_path=tmp / "lockgate.log", postgres_uri=postgres_uri,
                                 cwd=args.server_root.resolve())
        # `python -m lockgate` with the hooks: LockgateProcess builds the command from PYTHON.
        import tests.conftest as conftest

        conftest.PYTHON = None
        original_popen = conftest.subprocess.Popen

        def popen(cmd, *a, **k):
            if cmd[:3] == [None, "-m", "lockgate"] and args.no_trace:
                cmd = [PYTHON, *cmd[1:]]
            elif cmd[:3] == [None, "-m", "lockgate"]:
                cmd = [PYTHON, str(Path(__file__).resolve()), "--serve", str(dump), *cmd[3:]]
            return original_popen(cmd, *a, **k)

        conftest.subprocess.Popen = popen
        try:
            server.start()
        finally:
            conftest.subprocess.Popen = original_popen
            conftest.PYTHON = PYTHON
        app_env["INNGEST_BASE_URL"] = server.url
        app = AppProcess(module="bench.bench_app", port=app_port, server_url=server.url, ledger=tmp / "ledger",
                         extra_env=app_env).start()
        auth = api_headers(args.mode)
        try:
            wait_until(lambda: httpx.get(server.url + "/v1/apps", headers=auth).json()["data"][0]["functions"],
                       what="sync")
            if args.rate:
                steady(server, postgres_uri, auth, args, dump)
                continue
            results = {}
            for fn in args.functions.split(","):
                sends: list[tuple[int, str]] = []
                latencies = []

                async def light() -> None:
                    async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=auth) as http:
                        for i in range(args.runs + 5):
                            t = time.time_ns()
                            event_id = (await http.post("/e/bench", json={"name": f"bench/{fn}", "data": {"i": i}})
                                        ).json()["ids"][0]
                            while True:
                                runs = (await http.get(f"/v1/events/{event_id}/runs")).json()["data"]
                                if runs and runs[0]["status"] == "Completed":
                                    if i >= 5:  # the first few warm connections and caches up
                                        sends.append((t, event_id))
                                        latencies.append(parse_iso(runs[0]["ended_at"]) * 1000 - t / 1e6)
                                    break
                                await asyncio.sleep(args.poll_s)
                            await asyncio.sleep(0.02)  # the run's trailing work (progress) is done

                asyncio.run(light())
                results[fn] = (list(sends), latencies)
            os.kill(server.proc.pid, __import__("signal").SIGUSR1)
            time.sleep(1.0)
            label = "PostgreSQL" if postgres_uri else "SQLite"
            print(f"\n{label}, lockgate {args.mode}, server from {args.server_root}, {args.runs} runs each,"
                  f" load average {os.getloadavg()[0]:.1f}")
            for fn, (sends, latencies) in results.items():
                print(f"\n  {fn}: event→done p50 {pct(latencies, 50):.2f} ms, p90 {pct(latencies, 90):.2f} ms")
                print_analysis(load_trace(dump), sends, latencies, args.show_run)
        finally:
            app.stop()
            server.stop()
            if postgres_uri:
                pgtools.drop_database(postgres_uri, pgtools.ADMIN_URI)


if __name__ == "__main__":
    main()
