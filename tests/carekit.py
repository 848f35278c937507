"""A pharmacy (practice software) and three insured families, for care tests over HTTP."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from rempart.platform import Platform
from rempart.registry import service

from apikit import PracticeSoftware
from feedkit import AMC_A, SCHEDULE_ESSENTIEL, families, write_feed
from registry_helpers import run_import, two_insurers

TODAY = dt.date.today()
MEMBER_BIRTH, TWINS_BIRTH = dt.date(1980, 5, 17), dt.date(2018, 2, 9)  # feedkit.family
# From 1 June 2025 the ESSENTIEL contract also covers optics (a flat every two years, the
# frame capped), consultations at real cost within 100 euros a year, and implants.
RICHER = {
    "code": "ESSENTIEL",
    "rules": [
        *SCHEDULE_ESSENTIEL["rules"],  # type: ignore[misc]
        {"domain": "optical", "basket": "100_sante", "kind": "real_cost"},
        {"domain": "optical", "kind": "flat", "amount": "250.00", "per": "2y"},
        {"domain": "consultation", "kind": "real_cost"},
    ],
    "ceilings": [
        {"domain": "optical", "acts": ["frame"], "amount": "100.00", "per": "2y"},
        {"domain": "consultation", "amount": "100.00", "per": "calendar_year"},
    ],
}


def insured_families(platform: Platform, tmp_path: Path) -> None:
    two_insurers(platform)
    with platform.session() as session:
        service.load_schedule(session, amc_number=AMC_A, data=RICHER, valid_from=dt.date(2025, 6, 1))
        session.commit()
    run_import(platform, write_feed(tmp_path / "a.csv", families(3)), amc=AMC_A)


def pharmacy(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> tuple[Platform, PracticeSoftware]:
    platform, client = portal_client
    insured_families(platform, tmp_path)
    return platform, PracticeSoftware(platform, str(client.base_url))


def card_body(member: str = "M0000001", birth: dt.date = MEMBER_BIRTH, rank: int = 1, **extra: Any) -> dict[str, Any]:
    return {"amc_number": AMC_A, "member_number": member, "birth_date": birth.isoformat(), "birth_rank": rank,
            "care_date": TODAY.isoformat(), "domains": ["pharmacy"], **extra}  # fmt: skip


def engage(software: PracticeSoftware, *domains: str, member: str = "M0000001", care_date: dt.date = TODAY) -> str:
    """A rights check that finds the member covered: its engagement number."""
    body = card_body(member=member, domains=list(domains), care_date=care_date.isoformat())
    answer = software.post("/api/v1/care/eligibility", body)
    assert answer.status_code == 200 and answer.json()["engagement"], answer.text
    return str(answer.json()["engagement"])


def line(domain: str = "pharmacy", act: str = "PHA", day: dt.date = TODAY, price: str = "10.00", br: str = "10.00",
         rate: Any = 65, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"domain": domain, "act": act, "date": day.isoformat(), "price": price, "br": br, "amo_rate": rate, **extra}
