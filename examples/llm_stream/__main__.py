"""`python -m examples.llm_stream`: lockgate dev (with lockgate.yaml) and the streaming app on port 8301."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent
LOCKGATE = "http://127.0.0.1:8288"

# lockgate dev answers with the QStash local dev server's preset token and signing keys.
DEV_ENV = {
    "APP_URL": "http://127.0.0.1:8301",
    "INNGEST_DEV": LOCKGATE,
    "QSTASH_URL": LOCKGATE,
    "QSTASH_TOKEN": "eyJVc2VySUQiOiJkZWZhdWx0VXNlciIsIlBhc3N3b3JkIjoiZGVmYXVsdFBhc3N3b3JkIn0=",
    "QSTASH_CURRENT_SIGNING_KEY": "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r",
    "QSTASH_NEXT_SIGNING_KEY": "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs",
}


def main() -> None:
    for name, value in DEV_ENV.items():
        os.environ.setdefault(name, value)
    server = subprocess.Popen([sys.executable, "-m", "lockgate", "dev", "--config", str(HERE / "lockgate.yaml")])
    # uvicorn re-raises the SIGTERM it stopped on: turn it into an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        print("open http://127.0.0.1:8301/ in a browser", flush=True)
        uvicorn.run("examples.llm_stream.app:app", host="127.0.0.1", port=8301, log_level="info")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
