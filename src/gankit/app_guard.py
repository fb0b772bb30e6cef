"""What stands between `gankit serve` and the network: who may log in, which Host names are answered,
and how much of the queue one client may hold.

- A loopback address (127.0.0.0/8, ::1, localhost) is served without a login; any other address only
  with `--auth USER:PASS` (or `--auth auto`: a password generated and printed once), since the app runs
  models on uploads and reads the run folders it was given.
- Every request's Host header must name this server: a loopback name, the `--host` given, this
  machine's names and addresses, or an `--allowed-host`. A web page on another origin that resolves its
  own name to 127.0.0.1 (DNS rebinding) is refused with 400 before Gradio sees the request.
- One client (by address) may hold at most `per_client` queued requests; the queue's total size is
  Gradio's `max_size`.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Callable

from .errors import GankitError

AUTO_USER = "gankit"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(text: str | None) -> tuple[tuple[str, str] | None, bool]:
    """(USER, PASS) from `--auth USER:PASS`, or a generated password for `--auth auto`; the flag says
    whether it was generated (and must be shown once). None without --auth."""
    if not text:
        return None, False
    if text == "auto":
        return (AUTO_USER, secrets.token_urlsafe(18)), True
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise GankitError(f"--auth {text.split(':')[0]}:...: expected USER:PASS (both non-empty) or auto")
    return (user, password), False


def allowed_hosts(host: str, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The Host names this server answers to: loopback names, `host` itself, this machine's names and
    addresses when it listens on all of them (0.0.0.0 or ::), and `extra`; lower case, without port."""
    names = {"localhost", "127.0.0.1", "::1"}
    names.update(h.lower() for h in extra)
    wildcard = host in ("0.0.0.0", "::", "")
    if not wildcard:
        names.add(host.lower().strip("[]"))
    else:
        for name in {socket.gethostname(), socket.getfqdn()}:
            names.add(name.lower())
            try:
                names.update(info[4][0] for info in socket.getaddrinfo(name, None))
            except OSError:
                pass
    return names


def host_of(header: str) -> str:
    """The name in a Host header, without the port; IPv6 literals without their brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: refuses foreign Host headers (400) and a client's queue join beyond
    `per_client` pending requests (429). `queued(client)` counts the requests `client` has waiting."""

    def __init__(self, app, allowed: set[str], per_client: int, queued: Callable[[str], int]):
        self.app, self.allowed, self.per_client, self.queued = app, allowed, per_client, queued

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        host = host_of(headers.get(b"host", b"").decode("latin-1"))
        if host not in self.allowed:
            return await self._refuse(scope, send, 400, f"Host {host!r} is not served here")
        client = (scope.get("client") or ("", 0))[0]
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path", "").endswith("/queue/join")
            and self.queued(client) >= self.per_client
        ):
            return await self._refuse(
                scope, send, 429, f"at most {self.per_client} requests may wait per client; try again soon"
            )
        return await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope, send, status: int, detail: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def queued_per_client(page) -> Callable[[str], int]:
    """How many requests of a client wait in `page`'s Gradio queue (0 when the queue cannot be read)."""

    def count(client: str) -> int:
        queue = getattr(page, "_queue", None)
        per_id = getattr(queue, "event_queue_per_concurrency_id", {}) or {}
        n = 0
        for events in list(per_id.values()):
            for event in list(getattr(events, "queue", [])):
                request = getattr(event, "request", None)
                peer = getattr(getattr(request, "client", None), "host", None)
                n += peer == client
        return n

    return count
