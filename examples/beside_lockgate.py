"""What each example's one command does: `lockgate dev` with the example's config, and the app beside it."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import uvicorn


def run(config: Path, app: str, port: int, *, server_args: Sequence[str] = (),
        services: Sequence[Sequence[str]] = (), factory: bool = False) -> None:
    """Serve `app` ("module:attribute"; with factory, a function that builds it) on 127.0.0.1:port
    until stopped; lockgate dev (config plus server_args) and each of `services` (commands, such as
    a fake provider the app talks to) stop with it."""
    children = [subprocess.Popen([sys.executable, "-m", "lockgate", "dev", "--config", str(config), *server_args])]
    children += [subprocess.Popen(list(command)) for command in services]
    # uvicorn re-raises the SIGTERM it stopped on: turn it into an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", factory=factory)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=20)
