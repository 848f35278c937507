"""Rights checks over the REST door, as practice software makes them: what is accepted, what is
answered, what is never answered, and what the audit log and the guard keep."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from rempart.audit import events as ev
from rempart.care.card import Card
from rempart.care.models import Engagement, RightsCheck
from rempart.db.base import utcnow
from rempart.guard import decide, ratelimit
from rempart.guard.ratelimit import Limit
from rempart.platform import Platform
from rempart.registry import service as registry
from rempart.registry.models import Beneficiary

from apikit import PracticeSoftware, proof
from carekit import MEMBER_BIRTH, TODAY, TWINS_BIRTH, card_body, pharmacy
from feedkit import AMC_A, AMC_B, person_nir
from registry_helpers import two_insurers

pytestmark = pytest.mark.integration

PATH = "/api/v1/care/eligibility"


@pytest.fixture(name="pharmacy")
def pharmacy_fixture(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> tuple[Platform, PracticeSoftware]:
    return pharmacy(portal_client, tmp_path)


def clear_of_the_hours_turn() -> None:
    """Wait, if need be, so that the hour's misses window does not turn during a test."""
    now = utcnow()
    if now.minute == 59 and now.second > 45:
        time.sleep(61 - now.second)


def beneficiary_ids(platform: Platform) -> set[str]:
    with platform.session() as session:
        return {str(i) for i in session.scalars(select(Beneficiary.id))}


def test_a_card_gets_coverage_guarantee_and_an_engagement(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    answer = software.post(PATH, card_body(domains=["pharmacy", "hospital", "dental"]))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["outcome"] == "covered" and body["guarantee"] == "ESSENTIEL"
    assert body["valid_from"] == "2025-01-01" and body["valid_to"] is None
    assert body["engagement"].startswith("E") and len(body["engagement"]) == 20
    by_domain = {d["domain"]: d for d in body["domains"]}
    assert by_domain["pharmacy"]["covered"] and by_domain["pharmacy"]["levels"] == [
        {"kind": "br_percent_incl", "percent": "100", "amount": None, "per": None, "acts": None, "amo_rates": None,
         "basket": None, "plus_flat": None, "remaining": None}
    ]  # fmt: skip
    assert by_domain["hospital"]["covered"] and by_domain["hospital"]["prior_agreement_required"]
    assert by_domain["dental"] == {"domain": "dental", "covered": False, "reason": "no_guarantee",
                                    "prior_agreement_required": True, "levels": [], "ceilings": []}  # fmt: skip
    # Minimal: no NIR, no name, no family member, no internal id of anyone.
    member_nir = person_nir(1, MEMBER_BIRTH, 1)
    for secret in (member_nir, "Lefebvre", "Julien", "Camille", "M0000001", *beneficiary_ids(platform)):
        assert secret not in answer.text
    with platform.session() as session:
        engagement = session.get_one(Engagement, body["engagement"])
        assert engagement.domains == ["pharmacy", "hospital"] and engagement.care_date == TODAY
        assert session.get_one(RightsCheck, engagement.check_id).outcome == "covered"


def test_a_nir_or_a_scanned_card_identify_too(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    by_nir = software.post(PATH, {"amc_number": AMC_A, "nir": person_nir(1, MEMBER_BIRTH, 2),
                                  "birth_date": MEMBER_BIRTH.isoformat(), "care_date": TODAY.isoformat(),
                                  "domains": ["pharmacy"]})  # fmt: skip
    assert by_nir.json()["outcome"] == "covered", by_nir.text
    card = Card(AMC_A, ("TP",), "01", "M0000003", dt.date(TODAY.year, 1, 1), dt.date(TODAY.year, 12, 31))
    scanned = {"card_2d": card.payload(), "birth_date": TWINS_BIRTH.isoformat(), "birth_rank": 2,
               "care_date": TODAY.isoformat(), "domains": ["pharmacy"]}  # fmt: skip
    assert software.post(PATH, scanned).json()["outcome"] == "covered"
    expired = Card(AMC_A, ("TP",), "01", "M0000003", dt.date(2020, 1, 1), dt.date(2020, 12, 31))
    refused = software.post(PATH, {**scanned, "card_2d": expired.payload()})
    assert refused.status_code == 422 and refused.json()["field"] == "card_2d"


def test_no_oracle_every_miss_answers_the_same(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    misses = {
        "unknown person": card_body(member="M0999999"),
        # the member number of one family, the birth date and rank of nobody in it
        "identifiers that do not belong together": card_body(member="M0000002", birth=MEMBER_BIRTH, rank=2),
        "wrong birth date": card_body(birth=dt.date(1980, 5, 18)),
        "wrong rank of birth": card_body(birth=TWINS_BIRTH, rank=3),
        "NIR of someone else": {"amc_number": AMC_A, "nir": person_nir(1, MEMBER_BIRTH, 1),
                                "birth_date": TWINS_BIRTH.isoformat(), "care_date": TODAY.isoformat(),
                                "domains": ["pharmacy"]},
        "a beneficiary of another insurer": {**card_body(), "amc_number": AMC_B},
    }  # fmt: skip
    answers = {name: software.post(PATH, body) for name, body in misses.items()}
    shapes = {name: (a.status_code, {k: v for k, v in a.json().items() if k not in ("reference", "amc_number")})
              for name, a in answers.items()}  # fmt: skip
    expected = (200, {"outcome": "not_found", "care_date": TODAY.isoformat(), "guarantee": None, "valid_from": None,
                      "valid_to": None, "engagement": None, "engagement_valid_until": None, "domains": []})  # fmt: skip
    assert shapes == dict.fromkeys(misses, expected)
    assert len({a.json()["reference"] for a in answers.values()}) == len(misses)  # each check has its reference
    assert set(answers["wrong birth date"].headers) == set(answers["unknown person"].headers)


def test_only_an_identified_beneficiary_is_told_not_covered(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    before = card_body(care_date="2024-12-31")  # coverage starts on 2025-01-01
    answer = software.post(PATH, before).json()
    assert answer["outcome"] == "not_covered" and answer["engagement"] is None
    assert answer["domains"] == [{"domain": "pharmacy", "covered": False, "reason": "no_coverage_on_date",
                                  "prior_agreement_required": False, "levels": [], "ceilings": []}]  # fmt: skip
    with platform.session() as session:
        assert session.scalar(select(RightsCheck.outcome).where(RightsCheck.id == answer["reference"])) == "not_covered"


def test_every_check_is_audited_hit_or_miss(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    hit = software.post(PATH, card_body())
    miss = software.post(PATH, card_body(member="M0999999"))
    platform.audit.log.sync()
    with platform.session() as session:
        bodies = [ev.decode(bytes(b)) for b in session.execute(text("SELECT body FROM audit.events")).scalars()]
    by_request = {d["request"]: d for d in bodies}
    hit_event, miss_event = by_request[hit.headers["x-request-id"]], by_request[miss.headers["x-request-id"]]
    assert hit_event["subject"] in beneficiary_ids(platform) and hit_event["fields"] == sorted(
        ["coverage", "guarantee", "validity", "engagement"]
    )
    assert hit_event["api_client"] == str(software.client_id)
    assert hit_event["acting_professional"] == str(software.professional_id)
    assert hit_event["establishment"] == str(software.establishment_id) and hit_event["role"] == "practice-software"
    assert hit_event["detail"] == {"check": hit.json()["reference"], "outcome": "covered"}
    assert miss_event["subject"] is None and miss_event["reason"] == "not_found"
    assert miss_event["detail"] == {"check": miss.json()["reference"]}
    for event in (hit_event, miss_event):
        assert event["network"] is not None and "127.0.0.1" not in json.dumps(event)


def test_with_the_audit_log_down_nothing_is_answered(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    with platform.session() as session:
        session.execute(text("ALTER TABLE audit.head RENAME TO head_gone"))
        session.commit()
    try:
        answer = software.post(PATH, card_body())
        assert answer.status_code == 503 and "engagement" not in answer.text
    finally:
        with platform.session() as session:
            session.execute(text("ALTER TABLE audit.head_gone RENAME TO head"))
            session.commit()
    with platform.session() as session:
        assert session.scalar(select(Engagement.number)) is None  # nothing half-done either


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"domains": ["astrology"]}, "domains"),
        ({"domains": ["pharmacy", "pharmacy"]}, "domains"),
        ({"domains": []}, "domains"),
        ({"care_date": (TODAY + dt.timedelta(days=40)).isoformat()}, "care_date"),
        ({"care_date": "2019-01-01"}, "care_date"),
        ({"birth_date": (TODAY + dt.timedelta(days=1)).isoformat()}, "birth_date"),
        ({"birth_date": "17/05/1980"}, "birth_date"),
        ({"amc_number": "99999999"}, "amc_number"),
        ({"amc_number": "12AB"}, "amc_number"),
        ({"birth_rank": 0}, "birth_rank"),
        ({"nir": "180057505600147"}, "identification"),
        ({"member_number": "M-00*1"}, "member_number"),
        ({"card_2d": "RMP1|123|x"}, "card_2d.card"),
        ({"surname": "Lefebvre"}, "surname"),
    ],
)
def test_bad_input_is_refused_with_the_field_and_changes_nothing(
    pharmacy: tuple[Platform, PracticeSoftware], change: dict[str, Any], field: str
) -> None:
    platform, software = pharmacy
    body = {**card_body(), **change}
    if field == "card_2d.card":
        body.pop("member_number")
    answer = software.post(PATH, body)
    assert answer.status_code == 422, answer.text
    refused = answer.json()
    fields = [refused["field"]] if "field" in refused else [p["field"] for p in refused["problems"]]
    assert any(f == field or f.startswith(f"{field}.") for f in fields), refused
    for value in body.values():  # never echoed back
        if isinstance(value, str) and len(value) > 5 and value not in ("pharmacy",):
            assert value not in answer.text
    with platform.session() as session:
        assert session.scalar(select(RightsCheck.id)) is None


def test_a_nir_given_with_a_wrong_key_is_refused_without_echo(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    nir = person_nir(1, MEMBER_BIRTH, 1)
    broken = nir[:-2] + f"{(int(nir[-2:]) + 1) % 97:02d}"
    answer = software.post(PATH, {"amc_number": AMC_A, "nir": broken, "birth_date": MEMBER_BIRTH.isoformat(),
                                  "care_date": TODAY.isoformat(), "domains": ["pharmacy"]})  # fmt: skip
    assert answer.status_code == 422 and answer.json()["field"] == "nir" and broken not in answer.text


def test_an_oversized_body_is_refused(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    answer = software.post(PATH, {**card_body(), "padding": "x" * 300_000})
    assert answer.status_code == 413


def test_the_guard_stops_a_caller_who_keeps_missing(
    pharmacy: tuple[Platform, PracticeSoftware], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, software = pharmacy
    monkeypatch.setattr(decide, "RIGHTS_MISSES", Limit("rights-misses", 3, dt.timedelta(hours=1)))
    for number in range(3):
        assert software.post(PATH, card_body(member=f"M09{number:05d}")).json()["outcome"] == "not_found"
    stopped = software.post(PATH, card_body())  # even a real card, once the misses are spent
    assert stopped.status_code == 429 and int(stopped.headers["retry-after"]) > 0
    assert "engagement" not in stopped.text


def test_checks_in_flight_together_cannot_pass_the_misses_quota(
    pharmacy: tuple[Platform, PracticeSoftware], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker fires misses at once: each admitted check holds one of the hour's misses
    while it looks up, so with two left, two of six simultaneous checks go through and four are
    refused, and a check that finds someone gives its miss back."""
    platform, software = pharmacy
    clear_of_the_hours_turn()
    monkeypatch.setattr(decide, "RIGHTS_MISSES", Limit("rights-misses", 3, dt.timedelta(hours=1)))
    assert software.post(PATH, card_body(member="M07000000")).json()["outcome"] == "not_found"
    assert software.post(PATH, card_body()).json()["outcome"] == "covered"  # takes one, gives it back
    release = threading.Event()
    looking_up = registry.identify

    def held(*args: Any, **kwargs: Any) -> Any:  # keeps the admitted checks in flight together
        release.wait(10)
        return looking_up(*args, **kwargs)

    monkeypatch.setattr(registry, "identify", held)
    with ThreadPoolExecutor(6) as pool:
        sent = [pool.submit(software.post, PATH, card_body(member=f"M07{n:06d}")) for n in range(1, 7)]
        time.sleep(1.5)  # all six arrive and are admitted or refused before any looks up
        release.set()
        statuses = sorted(future.result().status_code for future in sent)
    assert statuses == [200, 200, 429, 429, 429, 429]
    key, start = ratelimit.window(decide.RIGHTS_MISSES, f"professional:{software.professional_id}", utcnow())
    with platform.session() as session:
        misses = session.execute(text("SELECT hits FROM rate_counters WHERE key = :key AND window_start = :start"),
                                 {"key": key, "start": start}).scalar_one()  # fmt: skip
    assert misses == 3


def test_the_guard_counts_every_check_against_the_daily_quota(
    pharmacy: tuple[Platform, PracticeSoftware], monkeypatch: pytest.MonkeyPatch
) -> None:
    platform, software = pharmacy
    clear_of_the_hours_turn()
    monkeypatch.setattr(decide, "RIGHTS_CHECKS", Limit("rights-checks", 2, dt.timedelta(days=1)))
    assert software.post(PATH, card_body()).json()["outcome"] == "covered"
    assert software.post(PATH, card_body(member="M0999999")).json()["outcome"] == "not_found"  # a miss counts too
    for _ in range(3):
        stopped = software.post(PATH, card_body())
        assert stopped.status_code == 429 and "engagement" not in stopped.text
    # Refused for the day, the retries gave back the misses they reserved: one miss, the real one.
    key, start = ratelimit.window(decide.RIGHTS_MISSES, f"professional:{software.professional_id}", utcnow())
    with platform.session() as session:
        misses = session.execute(text("SELECT hits FROM rate_counters WHERE key = :key AND window_start = :start"),
                                 {"key": key, "start": start}).scalar_one()  # fmt: skip
    assert misses == 1


def test_a_check_refused_for_its_misses_counts_nowhere(
    pharmacy: tuple[Platform, PracticeSoftware], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocked for an hour of misses is not also blocked for the day: the refused attempts do
    not spend the daily checks."""
    platform, software = pharmacy
    monkeypatch.setattr(decide, "RIGHTS_MISSES", Limit("rights-misses", 2, dt.timedelta(hours=1)))
    for number in range(2):
        assert software.post(PATH, card_body(member=f"M08{number:05d}")).json()["outcome"] == "not_found"
    for _ in range(3):
        assert software.post(PATH, card_body()).status_code == 429
    key, start = ratelimit.window(decide.RIGHTS_CHECKS, f"professional:{software.professional_id}", utcnow())
    with platform.session() as session:
        counted = session.execute(
            text("SELECT hits FROM rate_counters WHERE key = :key AND window_start = :start"),
            {"key": key, "start": start},
        ).scalar_one()
    assert counted == 2


def api_calls_counted(platform: Platform, software: PracticeSoftware, since: dt.datetime) -> int:
    """The client's API calls counted in the minute windows from `since` to now."""
    windows = {ratelimit.window(ratelimit.API_CLIENT, f"client:{software.client_id}", when)
               for when in (since, utcnow())}  # fmt: skip
    with platform.session() as session:
        return sum(
            session.execute(text("SELECT hits FROM rate_counters WHERE key = :key AND window_start = :start"),
                            {"key": key, "start": start}).scalar_one_or_none() or 0
            for key, start in windows
        )  # fmt: skip


def test_a_call_its_use_case_refuses_still_spends_its_proof_and_counts_once(
    pharmacy: tuple[Platform, PracticeSoftware], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authenticating commits the proof's jti and the API's counts before the use case runs: a
    refused input or a guard's 429 still spent the proof, and each call counts once."""
    platform, software = pharmacy
    since = utcnow()
    url = f"{software.origin}{PATH}"
    headers = {"Authorization": f"DPoP {software.token}", "X-Acting-RPPS": software.rpps,
               "DPoP": proof(software.dpop_key, "POST", url, software.token)}  # fmt: skip
    future = card_body(care_date=(TODAY + dt.timedelta(days=400)).isoformat())
    refused = httpx.post(f"{software.base}{PATH}", json=future, headers=headers)
    assert refused.status_code == 422 and refused.json()["field"] == "care_date"
    replayed = httpx.post(f"{software.base}{PATH}", json=card_body(), headers=headers)
    assert replayed.status_code == 401 and "invalid_dpop_proof" in replayed.text
    assert api_calls_counted(platform, software, since) == 1  # the refused call, once; a replay counts nowhere
    assert software.post(PATH, card_body()).json()["outcome"] == "covered"
    monkeypatch.setattr(decide, "RIGHTS_MISSES", Limit("rights-misses", 0, dt.timedelta(hours=1)))
    assert software.post(PATH, card_body()).status_code == 429  # refused by the guard, after its commit
    assert api_calls_counted(platform, software, since) == 3


def test_a_token_without_the_scope_is_refused(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> None:
    platform, client = portal_client
    two_insurers(platform)
    software = PracticeSoftware(platform, str(client.base_url), scopes=("invoices",))
    answer = software.post(PATH, card_body())
    assert answer.status_code == 403 and "eligibility" in answer.text
