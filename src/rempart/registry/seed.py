"""`rempart seed`: a deterministic synthetic population loaded through the real import path."""

from __future__ import annotations

import csv
import datetime as dt
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from rempart.platform import Platform
from rempart.registry import service, synthetic
from rempart.registry.importer import ImportOptions, import_beneficiaries
from rempart.registry.models import ImportRecord, Insurer, Professional


@dataclass
class SeedSummary:
    insurers: int = 0
    beneficiaries: int = 0
    canaries: int = 0
    professionals: int = 0
    already_seeded: bool = False


def seed(
    platform: Platform,
    *,
    seed_value: int,
    families: int,
    professionals: int,
    today: dt.date | None = None,
    canary_share: float = 0.002,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> SeedSummary:
    today = today or dt.date.today()
    summary = SeedSummary()
    insurers = synthetic.generate_insurers(seed_value, families)
    wanted = {insurer.amc_number for insurer in insurers}
    with platform.session() as session:
        present = set(session.scalars(select(Insurer.amc_number)))
        done = set(
            session.scalars(
                select(Insurer.amc_number)
                .join(ImportRecord, ImportRecord.insurer_id == Insurer.id)
                .where(ImportRecord.actor == "seed", ImportRecord.status == "applied")
            )
        )
        professionals_done = bool(session.scalar(select(func.count()).select_from(Professional)))
        # Real data, or a complete seed: leave the registry alone. A seed cut short resumes.
        if present - wanted or (done >= wanted and professionals_done):
            summary.already_seeded = True
            return summary
        for insurer in insurers:
            if insurer.amc_number in done:
                continue
            service.register_insurer(
                session,
                platform.keystore,
                amc_number=insurer.amc_number,
                name=insurer.name,
                siren=insurer.siren,
                expected_population=max(1000, insurer.families * 3),
            )
            for contract in insurer.contracts:
                service.load_schedule(
                    session,
                    amc_number=insurer.amc_number,
                    data={**contract.schedule, "label": contract.label},
                    valid_from=dt.date(today.year - 2, 1, 1),
                    responsable=contract.responsable,
                )
            session.commit()
    summary.insurers = len(insurers)

    work_dir = platform.settings.data_dir / "tmp"
    work_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(work_dir, 0o700)
    for stale in work_dir.glob("*.csv"):  # a feed left behind by a seed that was killed
        stale.unlink()
    for insurer in insurers:
        if insurer.amc_number in done:
            continue
        canaries: list[tuple[str, dt.date, int]] = []
        # The feed exists in clear only for the time of its import, in a private folder.
        with tempfile.NamedTemporaryFile(
            "w", dir=work_dir, suffix=".csv", encoding="utf-8", newline="", delete=True
        ) as handle:
            writer = csv.DictWriter(handle, fieldnames=synthetic.FEED_COLUMNS)
            writer.writeheader()
            for row, is_canary in synthetic.generate_feed_rows(
                seed_value, insurer, today=today, canary_share=canary_share
            ):
                writer.writerow(row)
                if is_canary:
                    canaries.append(
                        (
                            row["member_number"],
                            dt.date.fromisoformat(row["birth_date"]),
                            int(row["birth_rank"] or 1),
                        )
                    )
            handle.flush()
            with platform.session() as session, platform.raw_connection() as conn:
                result = import_beneficiaries(
                    conn=conn,
                    session=session,
                    keystore=platform.keystore,
                    path=Path(handle.name),
                    amc_number=insurer.amc_number,
                    options=ImportOptions(actor="seed", today=today, workers=platform.settings.import_workers),
                    report_dir=platform.settings.data_dir / "reports",
                    audit=platform.audit.for_platform("seed"),
                )
        if not result.applied:
            raise RuntimeError(f"seed import for {insurer.amc_number} failed: {result.problems[:3]} {result.fatal}")
        summary.beneficiaries += result.inserted
        with platform.session() as session:
            ids = []
            for member_number, birth_date, rank in canaries:
                found = service.find_by_card(
                    session,
                    platform.keystore,
                    amc_number=insurer.amc_number,
                    member_number=member_number,
                    birth_date=birth_date,
                    birth_rank=rank,
                )
                if found is not None:
                    ids.append(found.id)
            service.flag_canaries(session, beneficiary_ids=ids)
            session.commit()
            summary.canaries += len(ids)
        if on_progress:
            on_progress(insurer.amc_number, result.inserted, len(canaries))

    establishments, pros = synthetic.generate_professionals(seed_value, professionals)
    if professionals_done:
        return summary
    with platform.session() as session:
        service.ensure_platform_keys(session, platform.keystore)
        by_finess = {}
        for establishment in establishments:
            created = service.register_establishment(
                session,
                name=establishment.name,
                kind=establishment.kind,
                finess=establishment.finess,
                siret=establishment.siret,
            )
            by_finess[establishment.finess] = created.id
        for pro in pros:
            service.register_professional(
                session,
                platform.keystore,
                identifier=pro.rpps,
                family_name=pro.family_name,
                first_name=pro.first_name,
                profession=pro.profession,
                specialty=pro.specialty,
                establishment_ids=[by_finess[pro.establishment_finess]],
                iban=pro.iban,
                email=pro.email,
                phone=pro.phone,
            )
        session.commit()
    summary.professionals = len(pros)
    return summary
