"""Several server processes on one port (`rempart serve --workers N`).

Each process listens on a socket of its own, bound with SO_REUSEPORT, and the kernel spreads new
connections over them by a hash of the addresses. With the one socket all processes share (what
uvicorn's own `--workers` does), whichever process wakes first accepts a whole burst: practice
software keeps its connections open, and a burst of 64 was measured landing 85% on one process,
whose core then capped the whole server while the other waited.

Linux lets only processes of the same user join a port's group, and the port is checked free
before the workers start, so a second server cannot quietly share it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from rempart.platform import end_with_parent

log = logging.getLogger("rempart.serve")

# A worker that dies young (before YOUNG_S) is restarted after a pause that doubles each time,
# up to RESTART_PAUSE_MAX_S; after GIVE_UP_AFTER young deaths in a row the server stops, with
# exit status 1, so that a broken configuration is seen (systemd, a container) rather than
# retried for ever. One that ran for a while is restarted after the first pause.
RESTART_PAUSE_S = 1.0
RESTART_PAUSE_MAX_S = 30.0
YOUNG_S = 10.0
GIVE_UP_AFTER = 5


class WorkersFailing(RuntimeError):
    """Server processes kept dying as they started: the server stopped."""


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def port_is_free(host: str, port: int) -> bool:
    try:
        _listening_socket(host, port, reuse_port=False).close()
    except OSError:
        return False
    return True


def _worker(host: str, port: int, parent: int) -> None:
    """One server process: its own socket in the port's group, the app from `worker_app`."""
    import uvicorn

    end_with_parent(parent)
    sock = _listening_socket(host, port, reuse_port=True)
    config = uvicorn.Config("rempart.api.app:worker_app", factory=True, log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


def serve_processes(host: str, port: int, processes: int) -> None:
    """Run `processes` workers until SIGINT or SIGTERM; a worker that dies is replaced, and
    WorkersFailing is raised once they keep dying as they start. The caller checks
    `port_is_free` first, before it opens anything (see `rempart serve`)."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no pool or thread inherited
    stopping = False

    def stop(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> BaseProcess:
        worker = spawn.Process(target=_worker, args=(host, port, os.getpid()), name="rempart-http")
        worker.start()
        return worker

    workers = [start() for _ in range(processes)]
    started = [time.monotonic()] * processes
    young_deaths = [0] * processes
    restart_at: list[float | None] = [None] * processes
    try:
        while not stopping:
            time.sleep(0.2)
            now = time.monotonic()
            for i, worker in enumerate(workers):
                if stopping:
                    break
                if restart_at[i] is None and not worker.is_alive():
                    young_deaths[i] = young_deaths[i] + 1 if now - started[i] < YOUNG_S else 0
                    if young_deaths[i] >= GIVE_UP_AFTER:
                        raise WorkersFailing(f"server processes died {young_deaths[i]} times in a row as they started"
                                             f" (last exit code {worker.exitcode}): stopping")  # fmt: skip
                    pause = min(RESTART_PAUSE_MAX_S, RESTART_PAUSE_S * 2 ** max(0, young_deaths[i] - 1))
                    log.warning("server process %s ended (exit code %s): starting another in %.0f s",
                                worker.pid, worker.exitcode, pause)  # fmt: skip
                    restart_at[i] = now + pause
                restart = restart_at[i]
                if restart is not None and now >= restart:
                    workers[i], started[i], restart_at[i] = start(), now, None
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: uvicorn finishes the requests under way
        deadline = time.monotonic() + 15
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
