"""`python -m examples.llm_stream`: lockgate dev (with lockgate.yaml) and the streaming app on port 8301."""

from __future__ import annotations

import os
from pathlib import Path

from examples import beside_lockgate

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
    print("open http://127.0.0.1:8301/ in a browser", flush=True)
    beside_lockgate.run(HERE / "lockgate.yaml", "examples.llm_stream.app:app", 8301)


if __name__ == "__main__":
    main()
