"""A dump of the database after `seed` and an import holds none of the names, NIRs, birth
dates, member numbers, IBANs or contacts in clear."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from rempart.db.server import check_server_version, libpq_url, pg_tool
from rempart.platform import Platform
from rempart.registry import synthetic
from rempart.registry.seed import seed

from feedkit import families, write_feed
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration

SEED = 11
TODAY = dt.date(2026, 11, 23)


def test_dump_after_seed_and_import_holds_no_personal_data_in_clear(platform: Platform, tmp_path: Path) -> None:
    summary = seed(platform, seed_value=SEED, families=120, professionals=40, today=TODAY)
    assert summary.beneficiaries > 250 and summary.professionals == 40
    two_insurers(platform)
    extra = families(5, first=900)
    assert run_import(platform, write_feed(tmp_path / "extra.csv", extra)).status == "applied"

    dump = subprocess.run(
        [
            pg_tool("pg_dump", check_server_version(platform.url)),
            "--format=plain",
            "--no-owner",
            libpq_url(platform.url),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "COPY public.beneficiaries" in dump

    # Every personal value the population holds, regenerated from the same seed.
    secrets: set[str] = set()
    clear_dates: set[str] = set()
    feed_rows = list(extra)
    for insurer in synthetic.generate_insurers(SEED, 120):
        feed_rows.extend(row for row, _ in synthetic.generate_feed_rows(SEED, insurer, today=TODAY))
    for row in feed_rows:
        secrets.update(
            row[c]
            for c in (
                "member_number",
                "member_nir",
                "beneficiary_nir",
                "family_name",
                "first_name",
                "birth_name",
                "birth_date",
            )
        )
        clear_dates.update((row["coverage_start"], row["coverage_end"]))
    establishments, professionals = synthetic.generate_professionals(SEED, 40)
    for pro in professionals:
        secrets.update((pro.rpps, pro.family_name, pro.first_name, pro.iban, pro.email, pro.phone))
    # Business data is stored in clear on purpose (insurer, contract and establishment names);
    # coverage and schedule dates are not personal. Values that coincide with those are skipped.
    business = " ".join([e.name for e in establishments] + [i.name for i in synthetic.generate_insurers(SEED, 120)])
    with platform.session() as session:
        clear_dates.update(
            str(d)
            for (d,) in session.execute(
                text(
                    "SELECT start_date FROM coverage_periods UNION SELECT end_date FROM coverage_periods"
                    " UNION SELECT valid_from FROM schedule_versions UNION SELECT valid_to FROM schedule_versions"
                    " UNION SELECT created_at::date FROM beneficiaries"
                )
            )
        )
    checked = 0
    for value in secrets:
        if len(value) < 4 or value in business or value in clear_dates:
            continue
        checked += 1
        assert value not in dump, f"a personal value of length {len(value)} is in clear in the dump"
    assert checked > 500
