"""`python -m examples.video_batch [--poll]`: lockgate dev, the fake provider on 8311, the app on 8310.

--poll starts the app without a callback URL: shots poll the provider with sleeps instead of
waiting for its webhook. Other ports: VIDEO_LOCKGATE_PORT, VIDEO_APP_PORT, VIDEO_PROVIDER_PORT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import uvicorn

HERE = Path(__file__).resolve().parent


def main() -> None:
    lockgate_port = os.environ.get("VIDEO_LOCKGATE_PORT", "8288")
    app_port = int(os.environ.get("VIDEO_APP_PORT", "8310"))
    provider_port = os.environ.get("VIDEO_PROVIDER_PORT", "8311")
    app = f"http://127.0.0.1:{app_port}"
    os.environ.setdefault("INNGEST_DEV", f"http://127.0.0.1:{lockgate_port}")  # the app's SDK, in dev mode
    os.environ.setdefault("VIDEO_PROVIDER_URL", f"http://127.0.0.1:{provider_port}")
    if "--poll" in sys.argv[1:]:
        os.environ["VIDEO_CALLBACK_URL"] = ""
    else:
        os.environ.setdefault("VIDEO_CALLBACK_URL", f"{app}/webhooks/provider")
    children = [
        subprocess.Popen([sys.executable, "-m", "lockgate", "dev", "--config", str(HERE / "lockgate.yaml"),
                          "--port", lockgate_port, "-u", f"{app}/api/inngest", "--cors-origin", app]),
        subprocess.Popen([sys.executable, "-m", "examples.video_batch.provider", "--port", provider_port]),
    ]
    # uvicorn re-raises the SIGTERM it stopped on: turn it into an exit that runs `finally`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        # lockgate syncs the app from its sdk_urls as soon as this answers
        uvicorn.run("examples.video_batch.app:create_app", factory=True, host="127.0.0.1", port=app_port,
                    log_level="info")
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=20)


if __name__ == "__main__":
    main()
