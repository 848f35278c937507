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

RESTART_PAUSE_S = 1.0  # a worker that dies at once is not restarted in a tight loop


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
    """Run `processes` workers until SIGINT or SIGTERM; a worker that dies is replaced. The
    caller checks `port_is_free` first, before it opens anything (see `rempart serve`)."""
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
    try:
        while not stopping:
            time.sleep(0.2)
            for i, worker in enumerate(workers):
                if not worker.is_alive() and not stopping:
                    log.warning("server process %s ended (exit code %s): starting another", worker.pid, worker.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    if not stopping:
                        workers[i] = start()
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
