"""`make demo` in miniature: `rempart serve --demo` on a fresh data dir with the embedded
PostgreSQL answers /healthz, and Ctrl-C stops the server and the database cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_health_on_a_fresh_data_dir_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMPART_")}
    env.update(REMPART_DATA_DIR=str(tmp_path / "var"), REMPART_HTTP_PORT=str(port))
    rempart = Path(sys.executable).with_name("rempart")
    proc = subprocess.Popen(
        [str(rempart), "serve", "--demo", "--families", "40", "--professionals", "20"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                status = response.status_code
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        assert status == 200, proc.stdout.read() if proc.poll() is not None and proc.stdout else status
        assert response.json() == {"status": "ok", "database": "ok"}
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert "Rempart" in home.text
        assert "default-src 'none'" in home.headers["content-security-policy"]
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert f"http://localhost:{port}" in output
    # Invitation links for the four demo accounts, each a fragment-borne single-use token.
    links = [line for line in output.splitlines() if f"http://localhost:{port}/enrol#" in line]
    assert len(links) == 4, output
    assert any("pharmacien" in line for line in links) and any("sécurité" in line for line in links)
    pgdata = tmp_path / "var" / "pg"
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists(), "the embedded PostgreSQL is still running"
    # The keyring sits outside the database folder, private.
    keyring = tmp_path / "var" / "keys" / "keyring.json"
    assert keyring.exists() and oct(keyring.stat().st_mode & 0o777) == "0o600"
