"""What each example's one command does: `lockgate dev` with the example's config, and the app beside it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import uvicorn


def run(config: Path, app: str, port: int) -> None:
    """Serve `app` ("module:attribute") on 127.0.0.1:port until stopped; lockgate dev stops with it."""
    server = subprocess.Popen([sys.executable, "-m", "lockgate", "dev", "--config", str(config)])
    # uvicorn re-raises the SIGTERM it stopped on: turn it into an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")
    finally:
        server.terminate()
        server.wait(timeout=20)
