"""`python -m examples.fastapi_app`: lockgate dev (with lockgate.yaml) and the shop app on port 8300."""

from __future__ import annotations

import os
from pathlib import Path

from examples import beside_lockgate

HERE = Path(__file__).resolve().parent


def main() -> None:
    os.environ.setdefault("INNGEST_DEV", "http://127.0.0.1:8288")  # the app's SDK, in dev mode
    # lockgate syncs the app from its sdk_urls as soon as it answers
    beside_lockgate.run(HERE / "lockgate.yaml", "examples.fastapi_app.app:app", 8300)


if __name__ == "__main__":
    main()
