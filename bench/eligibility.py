"""Benchmark: authenticated rights checks over HTTP, against the framework + database ceiling.

    python bench/eligibility.py                 # 1,000,000 beneficiaries
    python bench/eligibility.py --quick         # 20,000 beneficiaries, short steps, under a minute or so

What runs, in one go:
* an embedded PostgreSQL (or REMPART_DATABASE_URL, in a fresh database) loaded with N
  beneficiaries of one synthetic insurer through the real import;
* establishments, professionals and their practice software (API clients with DPoP keys), as
  many as the per-professional quotas need for the rates driven (the guard stays on);
* the real server (`rempart serve`, REMPART_HTTP_WORKERS processes, default 2) in a subprocess;
* a load generator in another process: an asyncio HTTP/1.1 client over keep-alive connections,
  open loop (each request has its scheduled time; latency counts from it, so a slow server is
  not hidden by a slow generator). The requests, DPoP proofs included, are prepared beforehand.

Measured, with the same generator: rights checks at increasing rates (their maximum sustained
rate, then p50/p99 at half of it), the bare `/bench/ceiling` endpoint (one indexed SELECT, no
authentication, no audit) at increasing rates, and the latencies of the no-oracle paths (a hit,
an unknown person, identifiers that do not belong together, a wrong birth date) side by side.
Also the CPU each request costs (server processes, database, generator; from /proc) for checks
at half their maximum and for the ceiling at that same rate: on a machine whose speed wanders,
a steadier comparison than the two maxima. The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import importlib
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OKPKey

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
feeds = importlib.import_module("import")  # bench/import.py: the synthetic feed and the database

from rempart.db.base import utcnow  # noqa: E402
from rempart.identity import apiclients, service  # noqa: E402
from rempart.identity.models import Account  # noqa: E402
from rempart.platform import open_platform  # noqa: E402
from rempart.registry import service as registry  # noqa: E402
from rempart.registry.identifiers import make_finess, make_rpps  # noqa: E402
from rempart.registry.importer import ImportOptions, import_beneficiaries  # noqa: E402
from rempart.settings import Settings  # noqa: E402

PATH = "/api/v1/care/eligibility"
HTTP = httpx.Client(timeout=30)  # one client: a new one per call would build a TLS context each time
CONNECTIONS = 64


# -- the load generator (its own process) -----------------------------------------------------


async def _drive(host: str, port: int, requests: list[bytes], rate: float) -> list[tuple[float, int]]:
    """Send `requests` open loop at `rate` per second; (latency in s, status) of each, in the
    order of `requests` (not of the answers: the no-oracle paths are told apart by position)."""
    queue: asyncio.Queue[tuple[int, float, bytes] | None] = asyncio.Queue()
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(requests)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (job := await queue.get()) is not None:
            index, scheduled, raw = job
            writer.write(raw)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            results[index] = (time.perf_counter() - scheduled, status)
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    start = time.perf_counter() + 0.05
    for i, raw in enumerate(requests):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((i, scheduled, raw))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return results


def _generator(pipe: Any, host: str, port: int) -> None:
    while (job := pipe.recv()) is not None:
        requests, rate = job
        started = time.perf_counter()
        results = asyncio.run(_drive(host, port, requests, rate))
        pipe.send((results, time.perf_counter() - started))


# -- preparing requests ---------------------------------------------------------------------------


class Software:
    """One establishment's practice software acting for one of its professionals."""

    def __init__(self, client_id: uuid.UUID, client_key: OKPKey, rpps: str) -> None:
        self.client_id, self.client_key, self.rpps = client_id, client_key, rpps
        self.dpop_key = OKPKey.generate_key("Ed25519")
        self.token = ""

    def proof(self, method: str, url: str, token: str | None = None) -> str:
        claims: dict[str, Any] = {"htm": method, "htu": url, "iat": int(time.time()), "jti": uuid.uuid4().hex}
        if token:
            import base64
            import hashlib

            digest = hashlib.sha256(token.encode()).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        header = {"alg": "Ed25519", "typ": "dpop+jwt", "jwk": self.dpop_key.as_dict(private=False)}
        return jwt.encode(header, claims, self.dpop_key, algorithms=["Ed25519"])

    def login(self, base: str, origin: str) -> None:
        token_url = f"{origin}/oauth/token"
        now = int(time.time())
        claims = {"iss": str(self.client_id), "sub": str(self.client_id), "aud": token_url, "iat": now,
                  "exp": now + 60, "jti": uuid.uuid4().hex}  # fmt: skip
        assertion = jwt.encode({"alg": "Ed25519"}, claims, self.client_key, algorithms=["Ed25519"])
        form = {"grant_type": "client_credentials", "client_assertion_type": apiclients.CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion, "scope": "eligibility"}  # fmt: skip
        answer = HTTP.post(f"{base}/oauth/token", data=form, headers={"DPoP": self.proof("POST", token_url)})
        answer.raise_for_status()
        self.token = answer.json()["access_token"]


def check_request(software: Software, origin: str, host: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    proof = software.proof("POST", origin + PATH, software.token)
    head = (f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nAuthorization: DPoP {software.token}\r\n"
            f"DPoP: {proof}\r\nX-Acting-RPPS: {software.rpps}\r\n\r\n")  # fmt: skip
    return head.encode() + payload


def ceiling_request(host: str) -> bytes:
    return f"GET /bench/ceiling HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


# -- setting up the platform ---------------------------------------------------------------------


def population(folder: Path, settings: Settings, count: int, seed: int) -> list[dict[str, str]]:
    """Import `count` beneficiaries of one synthetic insurer; return the rows covered today."""
    feed = folder / "feed.csv"
    insurer, _ = feeds.make_feed(feed, count, seed)
    platform = open_platform(settings)
    today = dt.date.today()
    with platform.session() as session:
        registry.register_insurer(session, platform.keystore, amc_number=insurer.amc_number, name=insurer.name,
                                  siren=insurer.siren, expected_population=count)  # fmt: skip
        for contract in insurer.contracts:
            registry.load_schedule(session, amc_number=insurer.amc_number, data=contract.schedule,
                                   valid_from=dt.date(today.year - 2, 1, 1))  # fmt: skip
        session.commit()
    options = ImportOptions(mode="full", actor="bench", today=today, chunk_rows=settings.import_chunk_rows,
                            workers=settings.import_workers)  # fmt: skip
    started = time.perf_counter()
    with platform.session() as session, platform.raw_connection() as conn:
        import_beneficiaries(conn=conn, session=session, keystore=platform.keystore, amc_number=insurer.amc_number,
                             path=feed, options=options, report_dir=folder,
                             audit=platform.audit.for_platform("bench"))  # fmt: skip
    print(f"imported {count} beneficiaries in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    platform.close()
    covered = []
    with feed.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            start, end = row["coverage_start"], row["coverage_end"]
            if start <= today.isoformat() and (not end or end >= today.isoformat()):
                covered.append({**row, "amc_number": insurer.amc_number})
            if len(covered) >= 20_000:
                break
    return covered


def practices(settings: Settings, count: int) -> list[Software]:
    """`count` establishments, each with one professional and its practice software."""
    platform = open_platform(settings, run_migrations=False)
    made = []
    with platform.session() as session:
        for i in range(count):
            place = registry.register_establishment(session, name=f"Pharmacie {i}", kind="pharmacy",
                                                    finess=make_finess(f"{75000000 + i:08d}"))  # fmt: skip
            rpps = make_rpps(f"{1000000000 + i:010d}")
            registry.register_professional(session, platform.keystore, identifier=rpps, family_name="Martin",
                                           first_name="Paul", profession="pharmacist", specialty=None,
                                           establishment_ids=[place.id])  # fmt: skip
            admin = Account(role="establishment_admin", establishment_id=place.id)
            session.add(admin)
            session.flush()
            actor = service.CurrentUser(admin.id, admin.role, None, place.id, None, utcnow(), utcnow(), b"")
            key = OKPKey.generate_key("Ed25519")
            client_id = apiclients.register_client(
                session, actor=actor, establishment_id=place.id, public_jwk=key.as_dict(private=False),
                scopes=["eligibility"],
            )  # fmt: skip
            made.append(Software(client_id, key, rpps))
        session.commit()
    platform.close()
    return made


# -- measuring -----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000 if ordered else float("nan")


class Run:
    def __init__(self, pipe: Any, seconds: float) -> None:
        self.pipe, self.seconds = pipe, seconds

    def step(self, requests: list[bytes], rate: float) -> tuple[float, list[float], dict[int, int]]:
        """Completed 2xx per second, their latencies, and the statuses seen."""
        self.pipe.send((requests, rate))
        results, elapsed = self.pipe.recv()
        statuses: dict[int, int] = {}
        for _, status in results:
            statuses[status] = statuses.get(status, 0) + 1
        good = [latency for latency, status in results if 200 <= status < 300]
        return len(good) / elapsed, good, statuses


def _processes() -> dict[int, tuple[int, str, float]]:
    """Every process's parent, command and CPU seconds so far (user + system), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry)] = (int(fields[1]), command, (int(fields[11]) + int(fields[12])) / ticks)
    return found


def cpu_by_part(server: int, folder: Path, generator: int) -> dict[str, float]:
    """CPU seconds so far of the server's processes (its workers and audit sequencer), of the
    database's (the postmaster started on `folder` and its backends) and of the load generator."""
    processes = _processes()

    def tree(roots: set[int]) -> set[int]:
        members, grew = set(roots), True
        while grew:
            more = {pid for pid, (parent, _, _) in processes.items() if parent in members} - members
            members |= more
            grew = bool(more)
        return members

    postmaster = {pid for pid, (_, command, _) in processes.items() if "postgres" in command and str(folder) in command}
    parts = {"server": tree({server}), "database": tree(postmaster), "generator": tree({generator})}
    return {part: sum(processes[pid][2] for pid in pids if pid in processes) for part, pids in parts.items()}


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request, by part, between two readings of `cpu_by_part`."""
    return {part: round((after[part] - before[part]) * 1000 / max(1, requests), 2) for part in before}


def ramp(run: Run, make: Any, rates: list[int], label: str) -> float:
    """Offer increasing rates; the best sustained (2xx per second) rate found."""
    best = 0.0
    for rate in rates:
        requests = make(int(rate * run.seconds))
        achieved, latencies, statuses = run.step(requests, rate)
        print(f"  {label} offered {rate}/s: {achieved:.0f}/s, p50 {percentile(latencies, 0.5):.1f} ms,"
              f" p99 {percentile(latencies, 0.99):.1f} ms, statuses {statuses}", file=sys.stderr)  # fmt: skip
        best = max(best, achieved)
        if achieved < 0.85 * rate or percentile(latencies, 0.99) > 2000:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beneficiaries", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="20,000 beneficiaries, 2-second steps")
    parser.add_argument("--seconds", type=float, default=None, help="length of each rate step (default 5, quick 2)")
    parser.add_argument("--workers", type=int, default=2, help="server processes")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    count = 20_000 if args.quick else args.beneficiaries
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    # Steps of a quarter more each (50/s to ~8,000/s), for checks and ceiling alike: the
    # maximum found is within 25% of the true one, not within a factor of two.
    rates = [round(50 * 1.25**step) for step in range(24)]

    folder = Path(tempfile.mkdtemp(prefix="rempart-bench-eligibility-"))
    url = feeds.database_url(folder)
    port = int(os.environ.get("REMPART_BENCH_PORT", "8765"))
    origin, host = f"http://localhost:{port}", f"localhost:{port}"
    settings = Settings(data_dir=folder / "data", database_url=url, http_port=port, import_workers=2)
    identities = population(folder, settings, count, args.seed)
    # A professional may make 300 API calls a minute (the guard): enough of them for 4,000/s.
    pool = practices(settings, 900 if not args.quick else 400)

    env = {**os.environ, "REMPART_DATA_DIR": str(settings.data_dir), "REMPART_DATABASE_URL": url,
           "REMPART_HTTP_PORT": str(port), "REMPART_HTTP_WORKERS": str(args.workers),
           "REMPART_BENCH_ENDPOINTS": "true"}  # fmt: skip
    server = subprocess.Popen([sys.executable, "-m", "rempart.cli.main", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    parent, child = multiprocessing.Pipe()
    generator = multiprocessing.Process(target=_generator, args=(child, "127.0.0.1", port), daemon=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the server did not start: {server.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.5)
        generator.start()
        rng = random.Random(args.seed)
        today = dt.date.today().isoformat()

        def body(row: dict[str, str], **change: Any) -> dict[str, Any]:
            return {"amc_number": row["amc_number"], "member_number": row["member_number"],
                    "birth_date": row["birth_date"], "birth_rank": int(row["birth_rank"] or 1), "care_date": today,
                    "domains": ["pharmacy"], **change}  # fmt: skip

        turn = 0

        def requests_of(bodies: list[dict[str, Any]]) -> list[bytes]:
            nonlocal turn
            turn += 1
            if turn % 15 == 0:  # tokens last five minutes: renew them now and then
                for software in pool:
                    software.login(f"http://127.0.0.1:{port}", origin)
            return [check_request(pool[i % len(pool)], origin, host, b) for i, b in enumerate(bodies)]

        def hits(n: int) -> list[bytes]:
            return requests_of([body(rng.choice(identities)) for _ in range(n)])

        run = Run(parent, seconds)
        for software in pool:
            software.login(f"http://127.0.0.1:{port}", origin)
        run.step(hits(200), 100)  # warm up
        print("rights checks:", file=sys.stderr)
        best = ramp(run, hits, rates, "checks")
        # The ramp ended in overload: let the server finish what it still owes (the audit's last
        # batches, the database's writes) before measuring latency at half the rate.
        time.sleep(3)
        assert generator.pid is not None
        half = hits(int(best / 2 * seconds * 2))
        before = cpu_by_part(server.pid, folder, generator.pid)
        _, latencies, _ = run.step(half, best / 2)
        check_cpu = cpu_per_request(before, cpu_by_part(server.pid, folder, generator.pid), len(half))
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        print(f"  at half the maximum ({best / 2:.0f}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr)

        print("ceiling (/bench/ceiling):", file=sys.stderr)
        ceiling = ramp(run, lambda n: [ceiling_request(host)] * n, rates, "ceiling")
        # CPU per request at the same rate for both: steadier across runs than the maxima (whose
        # steps are a quarter apart and which the machine's other loads move).
        time.sleep(3)
        same = [ceiling_request(host)] * len(half)
        before = cpu_by_part(server.pid, folder, generator.pid)
        run.step(same, best / 2)
        ceiling_cpu = cpu_per_request(before, cpu_by_part(server.pid, folder, generator.pid), len(same))
        print(f"CPU per request at {best / 2:.0f}/s (ms): check {check_cpu}, ceiling {ceiling_cpu}", file=sys.stderr)

        # The no-oracle paths, interleaved at a moderate rate so they share the conditions.
        kinds = ["hit", "unknown person", "identifiers not together", "wrong birth date"]
        mixed: list[tuple[str, dict[str, Any]]] = []
        calm = max(5.0, best / 4)  # a quarter of the maximum: the paths' own cost, not queueing
        for _ in range(int(calm * seconds * 4)):
            a, b = rng.choice(identities), rng.choice(identities)
            kind = rng.choice(kinds)
            if kind == "hit":
                mixed.append((kind, body(a)))
            elif kind == "unknown person":
                mixed.append((kind, body(a, member_number=f"Z{rng.randrange(10**9):09d}")))
            elif kind == "identifiers not together":
                mixed.append((kind, body(a, birth_date=b["birth_date"], birth_rank=int(b["birth_rank"] or 1))))
            else:
                born = dt.date.fromisoformat(a["birth_date"]) + dt.timedelta(days=1)
                mixed.append((kind, body(a, birth_date=born.isoformat())))
        parent.send((requests_of([b for _, b in mixed]), calm))
        results, _ = parent.recv()
        print("no-oracle paths (ms)        p50     p90     p99    mean   count", file=sys.stderr)
        by_kind: dict[str, list[float]] = {k: [] for k in kinds}
        for (kind, _), (latency, status) in zip(mixed, results, strict=True):
            if 200 <= status < 300:
                by_kind[kind].append(latency)
        for kind in kinds:
            values = by_kind[kind]
            mean = statistics.fmean(values) * 1000 if values else float("nan")
            print(f"  {kind:26s} {percentile(values, 0.5):7.1f} {percentile(values, 0.9):7.1f}"
                  f" {percentile(values, 0.99):7.1f} {mean:7.1f} {len(values):7d}", file=sys.stderr)  # fmt: skip
    finally:
        parent.send(None)
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps({
        "bench": "eligibility", "beneficiaries": count, "checks_per_s": round(best), "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1), "ceiling_per_s": round(ceiling),
        "ratio": round(best / ceiling, 2) if ceiling else None,
        "workers": args.workers,
        "check_cpu_ms": check_cpu, "ceiling_cpu_ms": ceiling_cpu,
        "cpu_ratio": round((ceiling_cpu["server"] + ceiling_cpu["database"])
                           / max(1e-9, check_cpu["server"] + check_cpu["database"]), 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
