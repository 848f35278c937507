"""Benchmark: audit appends with group commit vs one commit per event; verification; the
breach-scoping window query.

    python bench/audit.py            # 1,000,000 events
    python bench/audit.py --quick    # 50,000 events, under a minute

Runs against the embedded PostgreSQL in a temporary folder (or REMPART_DATABASE_URL, in a
fresh database). In the same run:
* `appends_per_s`: 32 writers, each building an event (address sealed, prefix hashed,
  canonical bytes) and waiting until it is durable, as `rempart serve --workers` runs them:
  threads of several server processes (`--processes`, 2 by default), every read committed
  by the audit sequencer process;
* `in_process_appends_per_s`: the same 32 writers as threads of one process, through its own
  group committer (what a single-process server does), on a share of the events;
* `handoff_ceiling_per_s`: the same 32 threads parking and being released by a thread doing
  nothing else: what CPython's thread hand-off alone allows, with no event and no commit;
* `naive_appends_per_s`: the same 32 writers, each event sequenced and committed in its own
  transaction (the same append code with a batch of one) — on a share of the events;
* `verify_events_per_s`: `rempart audit verify` over every event;
* `window_query_s`: "what did this account see?" for one account over one week, measured when
  the log holds a tenth of the events and when it holds all of them (how it grows).
Events carry times spread over the last week and come from 2,000 accounts. The last line
printed is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import multiprocessing
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from rempart.audit import events as ev
from rempart.audit import queries
from rempart.audit import service as audit
from rempart.audit.log import Record, append_batch, columns
from rempart.audit.verify import verify
from rempart.db.server import libpq_url
from rempart.platform import Platform, open_platform, serve_audit_sequencer
from rempart.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
database_url = importlib.import_module("import").database_url  # bench/import.py: a fresh bench database

WRITERS = 32
ACCOUNTS = 2_000


class Population:
    """Accounts with an establishment and an address each; events over the last week."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.accounts = [
            (uuid.UUID(int=rng.getrandbits(128)), uuid.UUID(int=rng.getrandbits(128)),
             f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}")
            for _ in range(ACCOUNTS)
        ]  # fmt: skip
        self.now = dt.datetime.now(dt.UTC)

    def event(self, auditor: audit.Auditor, rng: random.Random) -> ev.AuditEvent:
        account, establishment, ip = self.accounts[rng.randrange(ACCOUNTS)]
        actor = ev.Actor(account_id=account, role="professional", establishment_id=establishment)
        context = audit.RequestContext(actor, ip=ip, request_id=uuid.uuid4().hex)
        # Spread over the past week, as a week of traffic would be.
        at = self.now - dt.timedelta(seconds=rng.uniform(0, 7 * 86400))
        return auditor.event(context, "rights.check", purpose="tiers-payant", subject=(ev.BENEFICIARY, uuid.uuid4()),
                             fields=("coverage", "birth_date"), at=at)  # fmt: skip


def run_writers(count: int, work: callable) -> float:  # type: ignore[valid-type]
    """`count` events split over WRITERS threads; each calls `work(rng)` once per event."""
    per_writer = [count // WRITERS + (1 if i < count % WRITERS else 0) for i in range(WRITERS)]
    barrier = threading.Barrier(WRITERS + 1)
    errors: list[BaseException] = []

    def writer(index: int) -> None:
        rng = random.Random(index)
        barrier.wait()
        try:
            for _ in range(per_writer[index]):
                work(rng)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


def group_appends(platform: Platform, population: Population, count: int) -> float:
    return run_writers(count, lambda rng: platform.audit.disclosed([population.event(platform.audit, rng)]))


def sequencer_main(data_dir: str, url: str, path: str) -> None:
    """The sequencer process (what `rempart serve --workers` starts)."""
    with contextlib.suppress(KeyboardInterrupt):
        serve_audit_sequencer(Settings(data_dir=Path(data_dir), database_url=url), Path(path))


def writer_process(data_dir: str, url: str, path: str, seed: int, index: int, count: int, threads: int,
                   barrier: Any, results: Any) -> None:  # fmt: skip
    """One server process's share of the writers, appending through the sequencer."""
    settings = Settings(data_dir=Path(data_dir), database_url=url, audit_sequencer=Path(path))
    platform = open_platform(settings, run_migrations=False)
    population = Population(seed)
    per_thread = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    errors: list[BaseException] = []

    def writer(slot: int) -> None:
        rng = random.Random(index * 1000 + slot)
        try:
            for _ in range(per_thread[slot]):
                platform.audit.disclosed([population.event(platform.audit, rng)])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(slot,)) for slot in range(threads)]
    barrier.wait()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    platform.close()
    results.put(repr(errors[0]) if errors else None)


class SequencedWriters:
    """The sequencer process and `processes` writer processes sharing WRITERS threads."""

    def __init__(self, folder: Path, url: str, processes: int, seed: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.args = (str(folder / "data"), url)
        self.path = folder / "audit.sock"
        self.processes = processes
        self.seed = seed
        self.sequencer = self.context.Process(target=sequencer_main, args=(*self.args, str(self.path)), daemon=True)
        self.sequencer.start()
        while not self.path.exists():
            if not self.sequencer.is_alive():
                raise RuntimeError("the sequencer did not start")
            time.sleep(0.05)
        time.sleep(0.2)  # bound, then listening

    def run(self, count: int) -> float:
        threads = [WRITERS // self.processes + (1 if i < WRITERS % self.processes else 0)
                   for i in range(self.processes)]  # fmt: skip
        shares = [count * t // WRITERS for t in threads]
        shares[0] += count - sum(shares)
        barrier, results = self.context.Barrier(self.processes + 1), self.context.Queue()
        children = []
        for i in range(self.processes):
            share = (*self.args, str(self.path), self.seed, i, shares[i], threads[i], barrier, results)
            children.append(self.context.Process(target=writer_process, args=share))
        for child in children:
            child.start()
        barrier.wait()
        started = time.perf_counter()
        outcomes = [results.get() for _ in children]
        elapsed = time.perf_counter() - started
        for child in children:
            child.join()
        if any(outcomes):
            raise RuntimeError(f"a writer failed: {next(o for o in outcomes if o)}")
        return elapsed

    def stop(self) -> None:
        self.sequencer.terminate()
        self.sequencer.join(timeout=10)


def naive_appends(platform: Platform, population: Population, count: int) -> float:
    local = threading.local()

    def one(rng: random.Random) -> None:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(libpq_url(platform.url))
        event = population.event(platform.audit, rng)
        append_batch(local.conn, [columns(Record.of(event))], lock=True)

    return run_writers(count, one)


def handoff_ceiling(count: int) -> float:
    """The interpreter's own ceiling for this shape of work: the same 32 writer threads, each
    parking until a committer thread (which does no I/O and builds nothing) releases its batch.
    Every append pays at least this hand-off; the rest is building events and the commit."""
    condition = threading.Condition()
    queue: list[threading.Lock] = []
    stopping = False

    def committer() -> None:
        nonlocal queue
        while True:
            with condition:
                while not queue and not stopping:
                    condition.wait(0.1)
                if stopping and not queue:
                    return
                batch, queue = queue, []
            for parked in batch:
                parked.release()

    def park(_: random.Random) -> None:
        parked = threading.Lock()
        parked.acquire()
        with condition:
            queue.append(parked)
            condition.notify()
        parked.acquire()

    thread = threading.Thread(target=committer)
    thread.start()
    seconds = run_writers(count, park)
    with condition:
        stopping = True
        condition.notify()
    thread.join()
    return count / seconds


def window_query(platform: Platform, population: Population) -> float:
    account = population.accounts[7][0]
    window = queries.Window(population.now - dt.timedelta(days=7), population.now + dt.timedelta(seconds=1),
                            accounts=(account,))  # fmt: skip
    with platform.session() as session:
        started = time.perf_counter()
        seen = queries.subjects_seen(session, window)
        elapsed = time.perf_counter() - started
    print(f"  window query: {len(seen)} subjects for one account in {elapsed:.3f} s", file=sys.stderr)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 events")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--processes", type=int, default=2, help="server processes sharing the 32 writers")
    parser.add_argument(
        "--grow", type=int, default=0,
        help="afterwards, bulk-load up to this many events (batches of 5,000) and time the window query again",
    )  # fmt: skip
    args = parser.parse_args()
    events = 50_000 if args.quick else args.events

    folder = Path(tempfile.mkdtemp(prefix="rempart-bench-audit-"))
    url = database_url(folder)
    platform = open_platform(Settings(data_dir=folder / "data", database_url=url))
    population = Population(args.seed)

    in_process_events = max(5_000, events // 20)
    naive_events = max(2_000, events // 50)
    sequenced = SequencedWriters(folder, url, args.processes, args.seed)
    tenth = events // 10
    seconds = sequenced.run(tenth)
    window_small = window_query(platform, population)
    seconds += sequenced.run(events - tenth - in_process_events - naive_events)
    sequenced.stop()
    appends_per_s = (events - in_process_events - naive_events) / seconds
    print(f"sequencer: {events - in_process_events - naive_events} events in {seconds:.1f} s "
          f"({args.processes} writer processes)", file=sys.stderr)  # fmt: skip

    platform.audit.log.start()
    in_process_s = group_appends(platform, population, in_process_events)
    in_process_per_s = in_process_events / in_process_s
    per_commit = in_process_events / max(platform.audit.log.batches, 1)
    print(f"in-process committer: {in_process_events} events in {in_process_s:.1f} s, {per_commit:.1f} per commit",
          file=sys.stderr)  # fmt: skip

    ceiling_per_s = handoff_ceiling(min(events, 200_000))
    print(f"hand-off ceiling (32 threads, no I/O, no work): {ceiling_per_s:.0f}/s", file=sys.stderr)

    naive_s = naive_appends(platform, population, naive_events)
    naive_per_s = naive_events / naive_s
    print(f"naive: {naive_events} events in {naive_s:.1f} s", file=sys.stderr)

    window_full = window_query(platform, population)
    platform.checkpoint()
    with platform.session() as session:
        key = audit.verifier_key(session, platform.keystore, platform.settings.audit_log_origin)
    with psycopg.connect(libpq_url(platform.url)) as conn:
        report = verify(conn, key, connect=lambda: psycopg.connect(libpq_url(platform.url)))
    if not report.ok:
        print(f"verify found problems: {report.findings[:3]}", file=sys.stderr)
        sys.exit(1)
    total = report.events
    print(f"verify: {total} events in {report.seconds:.1f} s", file=sys.stderr)
    grown: dict[str, float] = {}
    if args.grow > total:  # how the window query grows (the appends here are not timed)
        rng = random.Random(args.seed + 1)
        with psycopg.connect(libpq_url(platform.url)) as conn:
            while total < args.grow:
                size = min(5_000, args.grow - total)
                append_batch(conn, [columns(Record.of(population.event(platform.audit, rng))) for _ in range(size)],
                             lock=True)  # fmt: skip
                total += size
        grown = {"grown_to": total, "window_query_s_grown": round(window_query(platform, population), 4)}
    platform.close()
    print(json.dumps({
        "bench": "audit", "events": report.events, "appends_per_s": round(appends_per_s),
        "naive_appends_per_s": round(naive_per_s), "ratio": round(appends_per_s / naive_per_s, 1),
        "in_process_appends_per_s": round(in_process_per_s), "writer_processes": args.processes,
        "handoff_ceiling_per_s": round(ceiling_per_s),
        "verify_events_per_s": round(report.events / report.seconds), "window_query_s": round(window_full, 4),
        "window_query_s_at_tenth": round(window_small, 4), **grown,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
