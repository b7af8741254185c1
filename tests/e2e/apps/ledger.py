"""An append-only side-effect ledger shared by test apps and tests (one JSON line per effect)."""

from __future__ import annotations

import json
import os
import time
import uuid


def record(kind: str, **fields) -> str:
    """Append one effect; returns a unique token identifying this execution."""
    token = uuid.uuid4().hex
    line = json.dumps({"kind": kind, "token": token, "at": time.time(), **fields})
    fd = os.open(os.environ["LEDGER_PATH"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
    return token
