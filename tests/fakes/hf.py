"""A fake Hugging Face Hub on 127.0.0.1: the three answers the controller's client reads
(service/library/hub.py), with huggingface.co's status codes and ``X-Error-Code`` headers.

    GET /api/whoami-v2                      200 {"name"} | 401
    GET /api/models/<org>/<repo>/auth-check 200 | 401 RepoNotFound (no/bad token) | 403 GatedRepo
    GET /<org>/<repo>/resolve/main/<file>   the file's bytes | 401/403 as above | 404

``tokens`` maps a token to its account name; ``accepted`` is the set of (token, repo) pairs whose
licence was accepted; gated repos are :data:`GATED`. Point ``HF_ENDPOINT`` at :attr:`FakeHub.url`.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GATED = {"black-forest-labs/FLUX.1-dev"}
REPOS = GATED | {"comfyanonymous/flux_text_encoders"}


class FakeHub:
    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.accepted: set[tuple[str, str]] = set()
        self.downloads: list[str] = []
        self.url = ""
        self._server: ThreadingHTTPServer | None = None

    def user(self, token: str, name: str = "tester", accept: bool = True) -> str:
        self.tokens[token] = name
        if accept:
            self.accepted.update((token, r) for r in GATED)
        return token

    def file_bytes(self, repo: str, name: str) -> bytes:
        return f"weights of {repo}/{name}".encode()

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes = b"", code: str = "", kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                if code:
                    self.send_header("X-Error-Code", code)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                auth = self.headers.get("Authorization", "")
                token = auth[7:] if auth.startswith("Bearer ") else ""
                known = token in hub.tokens
                if self.path == "/api/whoami-v2":
                    if not known:
                        return self._send(401, b'{"error": "Invalid credentials in Authorization header"}')
                    return self._send(200, json.dumps({"name": hub.tokens[token], "type": "user"}).encode())
                m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/auth-check", self.path) or \
                    re.fullmatch(r"/([^/]+/[^/]+)/resolve/main/([^/]+)", self.path)
                if not m or m.group(1) not in REPOS:
                    return self._send(404, b'{"error": "Repository not found"}', "RepoNotFound")
                repo = m.group(1)
                if repo in GATED and not known:
                    return self._send(401, b'{"error": "Access to this repo is restricted"}', "RepoNotFound")
                if repo in GATED and (token, repo) not in hub.accepted:
                    return self._send(403, b'{"error": "Access to model is restricted"}', "GatedRepo")
                if self.path.endswith("/auth-check"):
                    return self._send(200, b"{}")
                hub.downloads.append(f"{repo}/{m.group(2)}")
                return self._send(200, hub.file_bytes(repo, m.group(2)), kind="application/octet-stream")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
