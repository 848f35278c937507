"""`rempart serve --workers 2`: each server process listens on its own socket of the port, so
kept-open connections are spread over both; a worker that dies is replaced; a port already
taken is refused; SIGTERM stops every process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rempart.platform import sequencer_socket
from rempart.settings import Settings

pytestmark = pytest.mark.slow

CONNECTIONS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMPART_")}
    env.update(REMPART_DATABASE_URL=settings.database_url or "", REMPART_DATA_DIR=str(settings.data_dir),
               REMPART_KEYRING_PATH=str(settings.resolved_keyring_path), REMPART_HTTP_PORT=str(port))  # fmt: skip
    return env


def sockets_on(port: int, state: str) -> set[str]:
    """The inodes of the sockets on local `port` in `state` (01 established, 0A listening)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for row in list(handle)[1:]:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                    found.add(fields[9])
    return found


def sockets_of(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def http_workers(server_pid: int, port: int) -> list[int]:
    """The server's child processes listening on `port`."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    listening = sockets_on(port, "0A")
    return [int(pid) for pid in children if sockets_of(int(pid)) & listening]


def wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(proc.stdout.read() if proc.poll() is not None and proc.stdout else "no answer")


@pytest.fixture
def served(settings: Settings) -> Iterator[tuple[subprocess.Popen[str], int]]:
    from rempart.platform import open_platform

    open_platform(settings).close()  # migrated, keyring made
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rempart.cli.main", "serve", "--workers", "2"],
                            env=environment(settings, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 60
        while len(http_workers(proc.pid, port)) < 2:  # the second may still be starting
            assert time.monotonic() < deadline, "two server processes did not start"
            time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def test_kept_open_connections_are_spread_over_the_workers(served: tuple[subprocess.Popen[str], int]) -> None:
    proc, port = served
    workers = http_workers(proc.pid, port)
    assert len(workers) == 2
    connections: list[socket.socket] = []
    try:
        # All opened at once, as a load generator or a pool of practice software does: the
        # kernel completes them before any process accepts one.
        connections = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
        for conn in connections:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for conn in connections:
            assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        established = sockets_on(port, "01")
        counts = {pid: len(sockets_of(pid) & established) for pid in workers}
        assert sum(counts.values()) == CONNECTIONS
        # Spread by a hash: 20 each on average; fewer than 6 on one has odds below one in 10^6.
        assert min(counts.values()) >= 6, counts
    finally:
        for conn in connections:
            conn.close()


def test_a_dead_worker_is_replaced_a_taken_port_refused_and_sigterm_stops_all(
    served: tuple[subprocess.Popen[str], int], settings: Settings
) -> None:
    proc, port = served
    first = http_workers(proc.pid, port)
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (now := http_workers(proc.pid, port)) == first or len(now) < 2:
        assert time.monotonic() < deadline, "the dead worker was not replaced"
        time.sleep(0.3)
    assert first[0] not in now and first[1] in now
    wait_healthy(f"http://127.0.0.1:{port}", proc)

    second = subprocess.run([sys.executable, "-m", "rempart.cli.main", "serve", "--workers", "2"],
                            env=environment(settings, port), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 1
    assert f"127.0.0.1:{port} is already in use" in second.stdout + second.stderr
    audit_socket = sequencer_socket(settings)  # the first server's, untouched by the second
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(str(audit_socket))

    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    for pid in now:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_workers_end_when_their_supervisor_is_killed(served: tuple[subprocess.Popen[str], int]) -> None:
    """Killed outright, the supervisor cannot stop its children: they notice and stop themselves
    (the HTTP workers and the audit sequencer alike), leaving neither the port nor the database held."""
    proc, port = served
    children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(http_workers(proc.pid, port)) == 2 and len(children) >= 3  # the sequencer too
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 30
    while alive := [pid for pid in children if Path(f"/proc/{pid}").exists()
                    and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()]:  # fmt: skip
        assert time.monotonic() < deadline, f"orphaned processes {alive}"
        time.sleep(0.3)
    assert not sockets_on(port, "0A"), "something still listens on the port"


def test_ctrl_c_leaves_the_audit_sequencer_to_be_stopped_last(settings: Settings) -> None:
    """Ctrl-C reaches every process of the terminal's group at once. The workers finish their
    last requests, which need the audit sequencer, so the sequencer ignores SIGINT and
    `rempart serve` stops it once the workers are done."""
    from rempart.platform import open_platform

    open_platform(settings).close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rempart.cli.main", "serve", "--workers", "2"],
                            env=environment(settings, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        deadline = time.monotonic() + 60
        while len(workers := http_workers(proc.pid, port)) < 2:
            assert time.monotonic() < deadline, "two server processes did not start"
            time.sleep(0.2)
        audit_socket = sequencer_socket(settings)
        children = [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        (sequencer,) = [pid for pid in children if sockets_of(pid) & unix_listening(audit_socket)]
        os.kill(sequencer, signal.SIGINT)  # the sequencer's share of a Ctrl-C
        time.sleep(2)
        assert running(sequencer)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(audit_socket))  # still serving
        os.killpg(proc.pid, signal.SIGINT)  # the whole Ctrl-C: everything stops, cleanly
        assert proc.wait(60) == 0
        deadline = time.monotonic() + 30
        while alive := [pid for pid in [*workers, sequencer] if running(pid)]:
            assert time.monotonic() < deadline, f"still running: {alive}"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def unix_listening(path: Path) -> set[str]:
    """The inodes of the Unix sockets bound to `path`."""
    with open("/proc/net/unix") as handle:
        return {row.split()[6] for row in list(handle)[1:] if row.split()[-1] == str(path)}


def running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_workers_that_keep_dying_as_they_start_stop_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker dying young is restarted after a pause that doubles; after a few such deaths in
    a row the supervisor gives up (rempart serve then exits 1) instead of retrying for ever."""
    from rempart.api import serving

    monkeypatch.setattr(serving, "RESTART_PAUSE_S", 0.1)
    monkeypatch.setattr(serving, "GIVE_UP_AFTER", 3)
    port = free_port()
    with socket.socket() as taken:  # a listener outside the port's group: every worker's bind fails
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.monotonic()
        with pytest.raises(serving.WorkersFailing, match="3 times in a row"):
            serving.serve_processes("127.0.0.1", port, 1)
    assert time.monotonic() - started < 60
