"""A scripted stand-in for Torn's API on 127.0.0.1, for tests and benchmarks.

Each key gets a script: a list of answers served in order, one per request, after which the
key answers with its default profile. An answer is one of:

- ``"ok"``: the key's default profile (see :func:`profile_for`);
- a fixture file name from ``sentinel_kit/testing/torn/`` (realistic Torn bodies, see its
  README: JSON errors as HTTP 200; Cloudflare pages as 502, or 403 with
  ``cf-mitigated: challenge``);
- an :class:`Answer` with an explicit status, body, headers and delay.

The server counts requests per key and keeps the time of every request, so tests can check
"requested exactly once" and "never more than N in any rolling 60 s".
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FIXTURES = Path(__file__).parent / "torn"


def profile_for(key: str) -> tuple[int, str]:
    """Return the (player id, name) the fake server reports for a key by default."""
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    player_id = 1_000_000 + digest % 8_000_000
    return player_id, f"Player{player_id}"


@dataclass(frozen=True)
class Answer:
    """One scripted HTTP answer."""

    status: int = 200
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    #: Hang up without answering (a connection error for the client).
    drop: bool = False


def fixture_answer(name: str, *, delay: float = 0.0) -> Answer:
    """Return the answer Torn would give for a fixture file."""
    body = (FIXTURES / name).read_bytes()
    if name.endswith(".json"):
        return Answer(200, body, {"Content-Type": "application/json"}, delay)
    if "403" in name:
        headers = {"Content-Type": "text/html; charset=UTF-8", "cf-mitigated": "challenge"}
        return Answer(403, body, headers, delay)
    return Answer(502, body, {"Content-Type": "text/html; charset=UTF-8"}, delay)


def ok_answer(key: str, *, delay: float = 0.0) -> Answer:
    """Return a v2 ``/user/basic`` success for the key's default profile."""
    player_id, name = profile_for(key)
    payload = {
        "profile": {
            "id": player_id,
            "name": name,
            "level": 10,
            "gender": "Female",
            "status": {
                "description": "Okay",
                "details": None,
                "state": "Okay",
                "color": "green",
                "until": None,
            },
        }
    }
    return Answer(200, json.dumps(payload), {"Content-Type": "application/json"}, delay)


class FakeTorn:
    """The server's state: scripts per key, request log. Start it with :meth:`start`."""

    def __init__(self, *, latency: float = 0.0) -> None:
        self.latency = latency
        self.scripts: dict[str, list[Answer | str]] = {}
        self.requests: list[tuple[float, str]] = []
        self.per_key: dict[str, int] = defaultdict(int)
        self.paths: list[str] = []
        self.headers_seen: list[dict[str, str]] = []
        self._lock = threading.Lock()
        # Set by stop(): answers held by a delay are released at once, so a test that holds
        # requests for 30 s leaves no handler thread sleeping after the server stopped.
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting --------------------------------------------------------------------------

    def script(self, key: str, *answers: Answer | str) -> None:
        """Queue answers for ``key``; after them it answers with its default profile."""
        self.scripts.setdefault(key, []).extend(answers)

    def always(self, key: str, answer: Answer | str, times: int = 1000) -> None:
        """Give ``key`` the same answer for its next ``times`` requests."""
        self.script(key, *([answer] * times))

    def count(self, key: str) -> int:
        """Requests received for ``key``."""
        with self._lock:
            return self.per_key[key]

    def max_in_window(self, window: float = 60.0) -> int:
        """The most requests seen in any rolling ``window`` seconds."""
        with self._lock:
            times = sorted(t for t, _ in self.requests)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _next_answer(self, key: str) -> Answer:
        with self._lock:
            self.per_key[key] += 1
            queue = self.scripts.get(key)
            item: Answer | str = queue.pop(0) if queue else "ok"
        if isinstance(item, Answer):
            return item
        if item == "ok":
            return ok_answer(key, delay=self.latency)
        return fixture_answer(item, delay=self.latency)

    # -- serving ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The v2 base URL to pass as ``--torn-url``."""
        if self._server is None:
            raise RuntimeError("the fake Torn is not serving: call start() or use `with`")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v2"

    def start(self) -> FakeTorn:
        """Serve on an ephemeral loopback port in a background thread."""
        fake = self
        self._stopping.clear()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: without this, delayed ACKs add
            # 40 ms to every answer.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                auth = self.headers.get("Authorization", "")
                key = auth[len("ApiKey ") :] if auth.startswith("ApiKey ") else ""
                key = key or parse_qs(parts.query).get("key", [""])[0]
                with fake._lock:
                    fake.requests.append((time.monotonic(), key))
                    fake.paths.append(self.path)
                    fake.headers_seen.append(dict(self.headers))
                if parts.path.rstrip("/") != "/v2/user/basic":
                    self._send(
                        Answer(404, b'{"error": "not found"}', {"Content-Type": "application/json"})
                    )
                    return
                answer = fake._next_answer(key)
                if answer.delay and fake._stopping.wait(answer.delay):
                    answer = Answer(drop=True)  # stopped while holding: hang up
                if answer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(answer)

            def _send(self, answer: Answer) -> None:
                body = answer.body.encode() if isinstance(answer.body, str) else answer.body
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; answers still held by a delay hang up at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeTorn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(latency: float = 0.0) -> Iterator[FakeTorn]:
    """Generator for a pytest fixture: a started server, stopped afterwards."""
    with FakeTorn(latency=latency) as fake:
        yield fake
