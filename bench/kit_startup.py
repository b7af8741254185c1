"""How long the pytest kit (lockgate.testing) costs a test session.

    .venv/bin/python bench/kit_startup.py [--repeat 5]

1. start-up of the `lockgate_server` fixture: `lockgate dev --in-memory` on a free port until it
   listens (what a session pays once);
2. wall time of `pytest tests/examples/test_fastapi_app.py` with the kit starting its own server,
   against the same tests pointed at a server started beforehand (LOCKGATE_TEST_SERVER).
Medians of --repeat runs, all in one run on one machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lockgate.testing import LockgateServer  # noqa: E402

TESTS = "tests/examples/test_fastapi_app.py"


def fixture_start_up() -> float:
    started = time.perf_counter()
    server = LockgateServer().start()
    elapsed = time.perf_counter() - started
    server.stop()
    return elapsed


def pytest_wall(env: dict[str, str]) -> float:
    started = time.perf_counter()
    # one backend round (the repository's tests run the examples on PostgreSQL too): one server each way
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backends", "sqlite", TESTS],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the example's tests failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INNGEST_", "LOCKGATE_TEST_SERVER"))}

    starts = [fixture_start_up() for _ in range(args.repeat)]
    with_kit = [pytest_wall(env) for _ in range(args.repeat)]
    external = LockgateServer().start()
    try:
        with_external = [pytest_wall({**env, "LOCKGATE_TEST_SERVER": external.url}) for _ in range(args.repeat)]
    finally:
        external.stop()

    start, kit, ext = (statistics.median(x) for x in (starts, with_kit, with_external))
    print(f"lockgate_server fixture start-up (median of {args.repeat}): {start * 1000:.0f} ms "
          f"(min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f})")
    print(f"pytest {TESTS}, kit starts the server:     {kit:.2f} s")
    print(f"pytest {TESTS}, server started beforehand: {ext:.2f} s")
    print(f"ratio kit / separate server: {kit / ext:.2f} (the kit's extra: {kit - ext:.2f} s)")


if __name__ == "__main__":
    main()
