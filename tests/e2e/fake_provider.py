"""A local stand-in for a model provider or any HTTP API a step asks the server to call.

Records every request; answers by path: `/fail-once/...` fails with 500 on its first request,
`/refuse/...` always answers 401, anything else echoes a chat-completion-like JSON.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeProvider:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._seen: set[str] = set()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                entry = {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in
                                                                                 self.headers.items()},
                         "body": raw.decode()}
                provider.requests.append(entry)
                if self.path.startswith("/refuse"):
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if self.path.startswith("/fail-once") and self.path not in provider._seen:
                    provider._seen.add(self.path)
                    return self._send(500, {"error": {"message": "overloaded"}})
                body = json.loads(raw) if raw else None
                self._send(200, {"id": "cmpl-1", "path": self.path, "echo": body,
                                 "choices": [{"message": {"role": "assistant", "content": "42"}}]},
                           extra={"X-Fake": "yes"})

            do_GET = do_POST = do_PUT = _answer

            def _send(self, status: int, body: dict, extra: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path_prefix: str) -> list[dict]:
        return [r for r in self.requests if r["path"].startswith(path_prefix)]

    def close(self) -> None:
        self.server.shutdown()
