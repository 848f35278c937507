"""A real HTTP server for the portal, on loopback, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: FastAPI, port: int) -> Iterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the portal did not start"
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def passkey_session(
    platform: Any,
    role: str,
    *,
    establishment_id: uuid.UUID | None = None,
    insurer_id: uuid.UUID | None = None,
    professional_id: uuid.UUID | None = None,
) -> tuple[dict[str, str], uuid.UUID]:
    """A new account with a session opened the way a passkey login opens one (so with a fresh
    step-up); returns the cookie header to send and the account's id. The ceremony itself is
    covered by the browser tests."""
    from rempart.identity import service
    from rempart.identity.models import Account

    with platform.session() as session:
        account = Account(role=role, establishment_id=establishment_id, insurer_id=insurer_id,
                          professional_id=professional_id)  # fmt: skip
        session.add(account)
        session.flush()
        token = service._open_session(session, platform.settings, account, None, method="passkey").token
        session.commit()
        return {"cookie": f"rempart_session={token}"}, account.id
