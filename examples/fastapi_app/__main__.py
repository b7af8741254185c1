"""`python -m examples.fastapi_app`: lockgate dev (with lockgate.yaml) and the shop app on port 8300."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent


def main() -> None:
    os.environ.setdefault("INNGEST_DEV", "http://127.0.0.1:8288")  # the app's SDK, in dev mode
    server = subprocess.Popen([sys.executable, "-m", "lockgate", "dev", "--config", str(HERE / "lockgate.yaml")])
    # uvicorn re-raises the SIGTERM it stopped on: turn it into an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        # lockgate syncs the app from its sdk_urls as soon as this answers
        uvicorn.run("examples.fastapi_app.app:app", host="127.0.0.1", port=8300, log_level="info")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
