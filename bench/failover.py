"""Takeover time: how soon the calls a killed replica held resume on its peer.

    .venv/bin/python bench/failover.py [--runs 40] [--call-s 8]

Two `lockgate start` replicas on a fresh PostgreSQL database and the signed production test
app (tests/e2e/apps/prod_app.py). --runs events go to replica b, each a step that takes
--call-s seconds, so b holds all their calls; b is killed with kill -9 while they are in
flight. Takeover time = when the app sees each call again (from replica a) minus the kill.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import pct  # noqa: E402
from tests import pgtools  # noqa: E402
from tests.conftest import Api, free_port, wait_until  # noqa: E402
from tests.e2e.test_failover import replica, slow_runs, starts_by_run  # noqa: E402
from tests.e2e.test_production import SIGNING_KEY, prod_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--call-s", type=float, default=8.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lockgate-failover-"))
    uri = pgtools.create_database()
    app_port = free_port()
    app_url = f"http://127.0.0.1:{app_port}/api/inngest"
    a = replica(tmp, app_url, "a", postgres_uri=uri).start()
    b = replica(tmp, app_url, "b", postgres_uri=uri).start()
    app = prod_app(tmp, app_port, a.url).start()
    try:
        api_a, api_b = Api(a.url, SIGNING_KEY), Api(b.url, SIGNING_KEY)
        wait_until(lambda: api_a.functions() and api_b.functions(), what="both replicas to see the app")
        runs = [api_a.wait_for_runs(e)[0]["run_id"] for e in slow_runs(api_b, args.runs, args.call_s)]
        wait_until(lambda: set(runs) <= set(starts_by_run(app)), timeout=60, what="every call in flight on b")
        killed_at = time.time()
        b.kill9()
        for run_id in runs:
            api_a.wait_for_end(run_id, timeout=120)
        starts = starts_by_run(app)
        takeover = [(min(t for t in starts[r] if t > killed_at) - killed_at) * 1000 for r in runs]
        line = next((ln for ln in a.log_path.read_text().splitlines() if "unresponsive for" in ln), "(no log line)")
        print(f"{args.runs} calls held by the killed replica; takeover (kill -9 → call sent again by its peer):")
        print(f"p50 {pct(takeover, 50):.0f} ms, p99 {pct(takeover, 99):.0f} ms, max {max(takeover):.0f} ms")
        print(f"peer's log: {line.strip()}")
    finally:
        app.stop()
        a.stop()
        b.stop()
        pgtools.drop_database(uri)


if __name__ == "__main__":
    main()
