"""Benchmark: importing an insurer feed vs a plain COPY of the same rows.

    python bench/import.py            # 1,000,000 rows
    python bench/import.py --quick    # 50,000 rows, well under a minute

Runs against the embedded PostgreSQL in a temporary folder (or REMPART_DATABASE_URL, in a
fresh database). Both measurements run in the same process, one after the other, on the
same file, so their ratio is meaningful on a noisy machine. The last line printed is JSON:
{"bench": "import", "rows": N, "rows_per_s": ..., "copy_rows_per_s": ..., "ratio": ..., "bytes_per_beneficiary": ...}
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from rempart.db.server import libpq_url, sqlalchemy_url, start_embedded
from rempart.platform import open_platform
from rempart.registry import service, synthetic
from rempart.registry.importer import ImportOptions, import_beneficiaries
from rempart.settings import Settings

TODAY = dt.date(2026, 11, 23)


def make_feed(path: Path, rows: int, seed: int) -> tuple[synthetic.SyntheticInsurer, int]:
    """A feed of exactly `rows` rows for one synthetic insurer."""
    insurer = synthetic.generate_insurers(seed, max(rows // 2, 10))[0]
    written = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=synthetic.FEED_COLUMNS)
        writer.writeheader()
        round_no = 0
        while written < rows:
            for row, _canary in synthetic.generate_feed_rows(seed + round_no, insurer, today=TODAY):
                writer.writerow(row)
                written += 1
                if written >= rows:
                    break
            round_no += 1
    return insurer, written


def database_url(folder: Path) -> str:
    """A fresh database for a benchmark whose files live in `folder` (a temporary folder, gone
    when the benchmark ends, embedded server and all: a run at 1 M rows leaves gigabytes)."""
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # runs after the server's own cleanup
    configured = os.environ.get("REMPART_DATABASE_URL")
    base = sqlalchemy_url(configured) if configured else start_embedded(folder / "pg", delete_on_exit=True)
    name = f"rempart_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    head, _, query = base.partition("?")
    return head.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")


def plain_copy(url: str, feed: Path) -> float:
    """The baseline: the same rows, unvalidated and unencrypted, COPYed into an equivalent table."""
    columns = ", ".join(synthetic.FEED_COLUMNS)
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute(
            "CREATE TABLE plain_beneficiaries (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
            " member_number text, member_nir text, beneficiary_nir text, family_name text, first_name text,"
            " birth_name text, birth_date date, birth_rank smallint, relationship text, contract text,"
            " coverage_start date, coverage_end date)"
        )
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY plain_beneficiaries ({columns}) FROM STDIN (FORMAT csv, HEADER)") as copy,
            feed.open("rb") as handle,
        ):
            while block := handle.read(1 << 20):
                copy.write(block)
        conn.commit()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 rows")
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rows = 50_000 if args.quick else args.rows

    folder = Path(tempfile.mkdtemp(prefix="rempart-bench-"))
    feed = folder / "feed.csv"
    t0 = time.perf_counter()
    insurer, written = make_feed(feed, rows, args.seed)
    print(
        f"generated {written} rows ({feed.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )

    url = database_url(folder)
    settings = Settings(
        database_url=url, data_dir=folder / "data", import_workers=args.workers, import_chunk_rows=args.chunk
    )
    platform = open_platform(settings)
    with platform.session() as session:
        service.register_insurer(
            session,
            platform.keystore,
            amc_number=insurer.amc_number,
            name=insurer.name,
            siren=insurer.siren,
            expected_population=rows,
        )
        for contract in insurer.contracts:
            service.load_schedule(
                session, amc_number=insurer.amc_number, data=contract.schedule, valid_from=dt.date(2020, 1, 1)
            )
        session.commit()

    started = time.perf_counter()
    with platform.session() as session, platform.raw_connection() as conn:
        result = import_beneficiaries(
            conn=conn,
            session=session,
            keystore=platform.keystore,
            path=feed,
            amc_number=insurer.amc_number,
            options=ImportOptions(today=TODAY, workers=args.workers, chunk_rows=args.chunk, actor="bench"),
            report_dir=folder / "reports",
            audit=platform.audit.for_platform("bench"),
        )
    import_s = time.perf_counter() - started
    if result.status != "applied":
        print(f"import {result.status}: {result.problems[:5]} {result.fatal}", file=sys.stderr)
        sys.exit(1)
    with psycopg.connect(libpq_url(url)) as conn:
        size = conn.execute(
            "SELECT pg_total_relation_size('members') + pg_total_relation_size('beneficiaries')"
            " + pg_total_relation_size('coverage_periods')"
        ).fetchone()
    assert size is not None
    copy_s = plain_copy(url, feed)
    platform.close()

    figures = {
        "bench": "import",
        "rows": written,
        "rows_per_s": round(written / import_s),
        "copy_rows_per_s": round(written / copy_s),
        "ratio": round(copy_s / import_s, 3),
        "bytes_per_beneficiary": round(int(size[0]) / max(result.inserted, 1)),
    }
    print(f"import {import_s:.1f}s ({result.inserted} beneficiaries), plain COPY {copy_s:.1f}s", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
