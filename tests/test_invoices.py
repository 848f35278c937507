"""Prior agreements and invoices over the REST door: amounts, states, idempotency, duplicates,
ceilings under concurrency, refusals that change nothing, and the audit of every state."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from rempart.audit import events as ev
from rempart.care.models import Consumption, Engagement, Invoice, InvoiceEvent
from rempart.platform import Platform

from apikit import PracticeSoftware, proof
from carekit import TODAY, card_body, engage, line, pharmacy

pytestmark = pytest.mark.integration

INVOICES, AGREEMENTS = "/api/v1/care/invoices", "/api/v1/care/agreements"


@pytest.fixture(name="pharmacy")
def pharmacy_fixture(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> tuple[Platform, PracticeSoftware]:
    return pharmacy(portal_client, tmp_path)


def invoice(software: PracticeSoftware, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return software.post(INVOICES, body, **{"Idempotency-Key": key or uuid.uuid4().hex})


def test_an_invoice_is_accepted_with_its_amounts_and_replayed_not_doubled(
    pharmacy: tuple[Platform, PracticeSoftware],
) -> None:
    platform, software = pharmacy
    body = {"engagement": engage(software, "pharmacy"), "lines": [line(), line(act="PHB", price="1.30", br="1.30")]}
    first = invoice(software, body, key="order-1")
    assert first.status_code == 201, first.text
    sent = first.json()
    assert sent["state"] == "accepted" and sent["reason"] is None
    assert [(ln["amo"], ln["amc"], ln["patient"]) for ln in sent["lines"]] == [("6.50", "3.50", "0.00"),
                                                                              ("0.85", "0.45", "0.00")]  # fmt: skip
    assert (sent["price_total"], sent["amo_total"], sent["amc_total"], sent["patient_total"]) == (
        "11.30", "7.35", "3.95", "0.00")  # fmt: skip
    again = invoice(software, body, key="order-1")
    assert again.status_code == 200 and again.json() == sent  # the same invoice, not a second one
    other = invoice(software, {**body, "lines": [line(act="PHC")]}, key="order-1")
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 1
        states = session.scalars(select(InvoiceEvent.state).order_by(InvoiceEvent.id)).all()
        assert states == ["received", "accepted"]


def test_a_proof_spent_on_a_replayed_invoice_cannot_be_replayed(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    """Answering an Idempotency-Key already used rolls the use case's transaction back: the
    proof's jti and the API's counts must have been committed before, or the same proof would
    fetch the invoice again and again, uncounted."""
    _, software = pharmacy
    body = {"engagement": engage(software, "pharmacy"), "lines": [line()]}
    assert invoice(software, body, key="order-9").status_code == 201
    url = f"{software.origin}{INVOICES}"
    headers = {"Authorization": f"DPoP {software.token}", "X-Acting-RPPS": software.rpps, "Idempotency-Key": "order-9",
               "DPoP": proof(software.dpop_key, "POST", url, software.token)}  # fmt: skip
    statuses = [httpx.post(f"{software.base}{INVOICES}", json=body, headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 401, 401]


def test_the_same_act_twice_is_a_duplicate_until_cancelled(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    _, software = pharmacy
    body = {"engagement": engage(software, "pharmacy"), "lines": [line()]}
    first = invoice(software, body).json()
    duplicate = invoice(software, body).json()  # another key: a second invoice for the same act and day
    assert duplicate["state"] == "rejected" and duplicate["reason"] == "duplicate" and duplicate["reason_text"]
    assert duplicate["amc_total"] == "0.00"
    cancelled = software.post(f"{INVOICES}/{first['id']}/cancel", {})
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert software.post(f"{INVOICES}/{first['id']}/cancel", {}).status_code == 422  # already cancelled
    assert invoice(software, body).json()["state"] == "accepted"
    listed = software.get(INVOICES).json()
    assert [i["state"] for i in listed] == ["accepted", "rejected", "cancelled"]
    assert [i["state"] for i in software.get(INVOICES, state="cancelled").json()] == ["cancelled"]


def test_optics_need_an_agreement_which_reserves_then_pays(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    engagement = engage(software, "optical")
    glasses = [line("optical", "frame", price="150.00", br="0.05", rate=60),
               line("optical", "lens", price="200.00", br="0.05", rate=60)]  # fmt: skip
    without = invoice(software, {"engagement": engagement, "lines": glasses}).json()
    assert without["state"] == "rejected" and without["reason"] == "agreement_required"

    agreed = software.post(AGREEMENTS, {"engagement": engagement, "lines": glasses})
    assert agreed.status_code == 201, agreed.text
    agreement = agreed.json()
    assert agreement["number"].startswith("A") and agreement["state"] == "granted"
    assert [ln["amc"] for ln in agreement["lines"]] == ["100.00", "150.00"]  # the frame capped, the flat shared
    assert dt.date.fromisoformat(agreement["expires_on"]) > TODAY
    # Reserved: a second quote meanwhile finds the flat spent.
    second = software.post(AGREEMENTS, {"engagement": engagement, "lines": glasses[1:]}).json()
    assert second["lines"][0]["amc"] == "0.00"
    assert software.post(f"{AGREEMENTS}/{second['number']}/cancel", {}).status_code == 204

    paid = invoice(software, {"engagement": engagement, "agreement": agreement["number"], "lines": glasses}).json()
    assert paid["state"] == "accepted" and paid["amc_total"] == "250.00" and paid["agreement"] == agreement["number"]
    reused = invoice(software, {"engagement": engagement, "agreement": agreement["number"],
                                "lines": [line("optical", "lens", day=TODAY - dt.timedelta(days=1),
                                               price="200.00", br="0.05", rate=60)]}).json()  # fmt: skip
    assert reused["state"] == "rejected" and reused["reason"] == "agreement_invalid"
    with platform.session() as session:  # the reservation gave way to the invoice's consumption
        rows = session.execute(select(Consumption.source, Consumption.state, func.sum(Consumption.amount))
                               .group_by(Consumption.source, Consumption.state)).all()  # fmt: skip
        assert sorted(rows) == [
            ("agreement", "released", Decimal("250.00")),
            ("invoice", "consumed", Decimal("250.00")),
        ]


def test_concurrent_invoices_never_exceed_a_ceiling(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    engagement = engage(software, "consultation")
    bodies = [{"engagement": engagement, "lines": [line("consultation", f"CS{i}", price="80.00", br="0.00", rate=0)]}
              for i in range(6)]  # fmt: skip
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda body: invoice(software, body), bodies))
    assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
    paid = sorted(Decimal(a.json()["amc_total"]) for a in answers)
    assert sum(paid) == Decimal("100.00")  # the yearly ceiling, exactly: 80 + 20, then nothing
    assert paid[-2:] == [Decimal("20.00"), Decimal("80.00")]
    with platform.session() as session:
        consumed = session.scalar(select(func.sum(Consumption.amount)).where(Consumption.state == "consumed"))
        assert consumed == Decimal("100.00")


def test_rejections_say_why(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    engagement = engage(software, "pharmacy")
    before = invoice(software, {"engagement": engagement, "lines": [line(day=dt.date(2024, 12, 15))]}).json()
    assert before["state"] == "rejected" and before["reason"] == "no_coverage_on_date"
    dental = invoice(software, {"engagement": engagement, "lines": [line("consultation", "CS")]}).json()
    assert dental["reason"] == "domain_not_engaged"
    with platform.session() as session:
        session.execute(update(Engagement).values(valid_until=TODAY - dt.timedelta(days=1)))
        session.commit()
    expired = invoice(software, {"engagement": engagement, "lines": [line(act="PHX")]}).json()
    assert expired["reason"] == "engagement_expired"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"price": "10.001"}, "lines[0].price"),
        ({"price": "-1.00"}, "lines[0].price"),
        ({"br": "abc"}, "lines.0.br"),
        ({"amo_rate": 120}, "lines[0].amo_rate"),
        ({"amo_deductible": "50.00"}, "lines[0].amo_deductible"),
        ({"price": "1.00"}, "lines[0].price"),  # below what the mandatory scheme pays
        ({"date": (TODAY + dt.timedelta(days=3)).isoformat()}, "lines[0].date"),
        ({"domain": "astrology"}, "lines[0].domain"),
        ({"act": "PHA; DROP TABLE"}, "lines[0].act"),
        ({"basket": "premium"}, "lines[0].basket"),
        ({"colour": "red"}, "lines.0.colour"),
        ({"price": "1e30"}, "lines[0].price"),  # beyond Decimal's precision: refused, not a 500
        ({"price": "0.52", "br": "1.05", "amo_rate": 50}, "lines[0].price"),  # 0.525 rounds up: 0.53 > 0.52
    ],
)
def test_bad_lines_are_refused_by_field_and_change_nothing(
    pharmacy: tuple[Platform, PracticeSoftware], change: dict[str, Any], field: str
) -> None:
    platform, software = pharmacy
    answer = invoice(software, {"engagement": engage(software, "pharmacy"), "lines": [{**line(), **change}]})
    assert answer.status_code == 422, answer.text
    refused = answer.json()
    fields = [refused["field"]] if "field" in refused else [p["field"] for p in refused["problems"]]
    assert field in fields, refused
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 0


def test_an_engagement_proves_nothing_elsewhere(
    pharmacy: tuple[Platform, PracticeSoftware], portal_client: tuple[Platform, httpx.Client]
) -> None:
    platform, software = pharmacy
    engagement = engage(software, "pharmacy")
    other = PracticeSoftware(platform, str(portal_client[1].base_url), finess_body="69000002", rpps_body="1000777000")
    for attempt in (engagement, "E0000-0000-0000-0000"):
        refused = invoice(other, {"engagement": attempt, "lines": [line()]})
        assert refused.status_code == 422 and refused.json() == {
            "error": "invalid_request", "field": "engagement",
            "reason": "unknown, or not issued to this establishment"}  # fmt: skip
    missing_key = other.post(INVOICES, {"engagement": engagement, "lines": [line()]})
    assert missing_key.status_code == 422


def test_a_number_that_rempart_never_issues_is_refused_before_any_lookup(
    pharmacy: tuple[Platform, PracticeSoftware],
) -> None:
    """A NUL character (which PostgreSQL text cannot hold) or any other stray character in an
    engagement or agreement number: a 422 naming the field, never a 500."""
    platform, software = pharmacy
    engagement = engage(software, "optical")
    for bad in ("E0000\u00000000", "E0000 0000;--", "é"):
        refused = invoice(software, {"engagement": bad, "lines": [line()]})
        assert refused.status_code == 422 and refused.json()["field"] == "engagement", refused.text
        quoted = invoice(software, {"engagement": engagement, "agreement": bad, "lines": [line("optical", "frame")]})
        assert quoted.status_code == 422 and quoted.json()["field"] == "agreement", quoted.text
    cancel = software.post(f"{AGREEMENTS}/A_0000/cancel", {})
    assert cancel.status_code == 422 and cancel.json()["field"] == "agreement", cancel.text
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 0


def test_every_state_change_is_audited_with_its_write(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    sent = invoice(software, {"engagement": engage(software, "pharmacy"), "lines": [line()]})
    cancelled = software.post(f"{INVOICES}/{sent.json()['id']}/cancel", {})
    platform.audit.log.sync()
    with platform.session() as session:
        bodies = [
            ev.decode(bytes(b)) for b in session.execute(text("SELECT body FROM audit.events ORDER BY seq")).scalars()
        ]
    mine = [(d["action"], d["detail"].get("state"), d["subject"] is not None) for d in bodies
            if d["request"] in (sent.headers["x-request-id"], cancelled.headers["x-request-id"])]  # fmt: skip
    assert mine == [("invoice.received", "received", True), ("invoice.accepted", "accepted", True),
                    ("invoice.cancelled", "cancelled", True)]  # fmt: skip
    # The log cannot take the write: nothing is written, and the caller is told (503).
    with platform.session() as session:
        session.execute(text("ALTER TABLE audit.pending RENAME TO pending_gone"))
        session.commit()
    try:
        refused = invoice(software, {"engagement": engage_without_log(platform, software), "lines": [line(act="PHZ")]})
        assert refused.status_code == 503
    finally:
        with platform.session() as session:
            session.execute(text("ALTER TABLE audit.pending_gone RENAME TO pending"))
            session.commit()
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Invoice)) == 1


def engage_without_log(platform: Platform, software: PracticeSoftware) -> str:
    """The engagement already made (a rights check needs the log too)."""
    with platform.session() as session:
        return str(session.scalars(select(Engagement.number)).first())


def test_a_lapsed_reservation_counts_no_more(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    engagement = engage(software, "optical")
    frame = [line("optical", "frame", price="150.00", br="0.05", rate=60)]
    assert software.post(AGREEMENTS, {"engagement": engagement, "lines": frame}).status_code == 201

    def optical_remaining() -> str:
        answer = software.post("/api/v1/care/eligibility", card_body(domains=["optical"])).json()
        flat = [lv for lv in answer["domains"][0]["levels"] if lv["kind"] == "flat"]
        return str(flat[0]["remaining"])

    assert optical_remaining() == "150.00"  # 250 less the 100 the frame holds
    with platform.session() as session:
        session.execute(update(Consumption).values(reserved_until=TODAY - dt.timedelta(days=1)))
        session.commit()
    assert optical_remaining() == "250.00"


def test_an_agreement_pays_once_and_no_more_than_agreed(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    engagement = engage(software, "optical", "pharmacy")
    quote = [line("optical", "lens", price="100.00", br="0.05", rate=60)]
    agreement = software.post(AGREEMENTS, {"engagement": engagement, "lines": quote}).json()
    assert agreement["amc_total"] == "99.97"
    # Four invoices at once on the one agreement: one is paid, the others find it used.
    lenses = [[line("optical", f"lens{i}", price="200.00", br="0.05", rate=60)] for i in range(4)]
    bodies = [{"engagement": engagement, "agreement": agreement["number"], "lines": lens} for lens in lenses]
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = [a.json() for a in pool.map(lambda body: invoice(software, body), bodies)]
    accepted = [a for a in answers if a["state"] == "accepted"]
    assert len(accepted) == 1 and {a["reason"] for a in answers if a["state"] == "rejected"} == {"agreement_invalid"}
    # The dearer lens is paid what was agreed, not what the flat would have allowed.
    assert accepted[0]["amc_total"] == "99.97" and accepted[0]["patient_total"] == "100.00"

    other = software.post(AGREEMENTS, {"engagement": engagement, "lines": quote}).json()
    unrelated = invoice(software, {"engagement": engagement, "agreement": other["number"], "lines": [line()]}).json()
    assert unrelated["state"] == "rejected" and unrelated["reason"] == "agreement_invalid"
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Invoice).where(Invoice.state == "accepted")) == 1


def test_a_replay_is_audited_like_any_disclosure(pharmacy: tuple[Platform, PracticeSoftware]) -> None:
    platform, software = pharmacy
    body = {"engagement": engage(software, "pharmacy"), "lines": [line()]}
    invoice(software, body, key="once")
    again = invoice(software, body, key="once")
    assert again.status_code == 200
    platform.audit.log.sync()
    with platform.session() as session:
        bodies = [ev.decode(bytes(b)) for b in session.execute(text("SELECT body FROM audit.events")).scalars()]
    replayed = [d for d in bodies if d["request"] == again.headers["x-request-id"]]
    assert [(d["action"], d["subject"] is not None) for d in replayed] == [("invoice.replay", True)]
