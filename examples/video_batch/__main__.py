"""`python -m examples.video_batch [--poll]`: lockgate dev, the fake provider on 8311, the app on 8310.

--poll starts the app without a callback URL: shots poll the provider with sleeps instead of
waiting for its webhook. Other ports: VIDEO_LOCKGATE_PORT, VIDEO_APP_PORT, VIDEO_PROVIDER_PORT.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from examples import beside_lockgate

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
    print(f"try: curl -X POST {app}/batches -H 'content-type: application/json' "
          """-d '{"user_id": "ada", "shots": [{"prompt": "a fox"}, {"prompt": "a glitch"}]}'""", flush=True)
    # lockgate syncs the app from its sdk_urls as soon as it answers; the batch page (another
    # origin) may follow lockgate's SSE
    beside_lockgate.run(HERE / "lockgate.yaml", "examples.video_batch.app:create_app", app_port, factory=True,
                        server_args=["--port", lockgate_port, "-u", f"{app}/api/inngest", "--cors-origin", app],
                        services=[[sys.executable, "-m", "examples.video_batch.provider", "--port", provider_port]])


if __name__ == "__main__":
    main()
