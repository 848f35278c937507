"""Helpers for tests that need insurers, contracts and imports."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from rempart.platform import Platform
from rempart.registry import service
from rempart.registry.importer import ImportOptions, ImportResult, import_beneficiaries
from rempart.registry.models import Beneficiary, CoveragePeriod, Member

from feedkit import AMC_A, AMC_B, SCHEDULE_CONFORT, SCHEDULE_ESSENTIEL, SIREN_A, SIREN_B

TODAY = dt.date(2026, 11, 23)


def two_insurers(platform: Platform) -> None:
    with platform.session() as session:
        service.register_insurer(
            session,
            platform.keystore,
            amc_number=AMC_A,
            name="Mutuelle A",
            siren=SIREN_A,
            expected_population=10_000,
        )
        service.register_insurer(
            session,
            platform.keystore,
            amc_number=AMC_B,
            name="Mutuelle B",
            siren=SIREN_B,
            expected_population=10_000,
        )
        for amc in (AMC_A, AMC_B):
            service.load_schedule(session, amc_number=amc, data=SCHEDULE_ESSENTIEL, valid_from=dt.date(2025, 1, 1))
        service.load_schedule(
            session,
            amc_number=AMC_B,
            data={**SCHEDULE_CONFORT, "code": "BONLEVEL"},
            valid_from=dt.date(2025, 1, 1),
        )
        session.commit()


def run_import(platform: Platform, path: Path, amc: str = AMC_A, **options: Any) -> ImportResult:
    opts = ImportOptions(
        today=TODAY,
        chunk_rows=platform.settings.import_chunk_rows,
        workers=platform.settings.import_workers,
        **options,
    )
    with platform.session() as session, platform.raw_connection() as conn:
        return import_beneficiaries(
            conn=conn,
            session=session,
            keystore=platform.keystore,
            path=path,
            amc_number=amc,
            options=opts,
            report_dir=platform.settings.data_dir / "reports",
            audit=platform.audit.for_platform("import"),
        )


def counts(platform: Platform) -> tuple[int, int, int]:
    with platform.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Member)) or 0,
            session.scalar(select(func.count()).select_from(Beneficiary)) or 0,
            session.scalar(select(func.count()).select_from(CoveragePeriod)) or 0,
        )


def snapshot(platform: Platform) -> list[Any]:
    """Every registry row, ciphertext included: equal snapshots mean nothing changed."""
    with platform.session() as session:
        return [
            session.execute(text(f"SELECT * FROM {table} ORDER BY id")).all()
            for table in ("members", "beneficiaries", "coverage_periods")
        ]


def person_nir_for(sex: int, birth: dt.date, order: int) -> str:
    from rempart.registry.identifiers import make_nir

    return make_nir(sex, birth, "69", "123", order)
