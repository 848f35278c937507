"""Every HTTP route is classified: it returns someone's personal data, or it does not (and why).
Each route that does is exercised: its answer's request id must be in the audit log with the
subject it disclosed, and with the log down it answers 503 with nothing in it. A route added
without being classified here fails the first test.

ASVS 5.0 V16 (security logging): V16.2 every access to sensitive data logged; V16.5 fail
closed when the log cannot record."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select, text

from rempart.api.app import create_app
from rempart.audit import events as ev
from rempart.audit import service as audit
from rempart.care import fhir
from rempart.platform import Platform
from rempart.registry import service as registry
from rempart.registry.models import Beneficiary

from apikit import PracticeSoftware
from feedkit import AMC_A, families, write_feed
from portal_server import passkey_session
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration

# Routes that return a person's data (a beneficiary's or a professional's, or what the log
# knows about them).
PERSONAL = {
    ("POST", "/audit/subject"),  # the accesses to one person's data (Article 15)
    ("GET", "/api/v1/audit/proofs/inclusion"),  # an audit event, which names its subject by id
    ("POST", "/api/v1/care/eligibility"),  # a beneficiary's coverage and guarantee
    ("POST", "/fhir/r4/CoverageEligibilityRequest/$submit"),  # the same, in FHIR
    ("POST", "/care/rights"),  # the same, in the portal
}
# Routes that write about a person: their events are staged in the write's own transaction
# (the write and its event commit together, or neither does); tested where the use case is.
AUDITED_WRITES = {
    ("POST", "/api/v1/care/agreements"): "test_invoices",
    ("POST", "/api/v1/care/agreements/{number}/cancel"): "test_invoices",
    ("POST", "/api/v1/care/invoices"): "test_invoices::test_every_state_change_is_audited_with_its_write",
    ("POST", "/api/v1/care/invoices/{invoice_id}/cancel"): "test_invoices::test_every_state_change_is_audited...",
    ("POST", "/fhir/r4/Claim/$submit"): "the agreement and invoice use cases above, in FHIR (test_fhir)",
    ("POST", "/care/agreements"): "the agreement use case, in the portal (test_care_portal)",
    ("POST", "/care/invoices"): "the invoice use case, in the portal (test_care_portal)",
    ("POST", "/care/invoices/{invoice_id}/cancel"): "the cancellation use case, in the portal",
}
# Everything else, with the reason it discloses nobody's data.
NOT_PERSONAL = {
    ("GET", "/"): "static home page",
    ("GET", "/healthz"): "health check",
    ("GET", "/login"): "page without data",
    ("GET", "/enrol"): "page without data",
    ("GET", "/recover"): "page without data",
    ("GET", "/audit/subject"): "the empty form",
    ("POST", "/auth/register/options"): "WebAuthn options for an invitation",
    ("POST", "/auth/register/verify"): "creates a session",
    ("POST", "/auth/login/options"): "WebAuthn options",
    ("POST", "/auth/login/verify"): "creates a session",
    ("POST", "/auth/logout"): "ends a session",
    ("POST", "/auth/step-up/options"): "WebAuthn options",
    ("POST", "/auth/step-up/verify"): "confirms a session",
    ("POST", "/auth/recover/options"): "WebAuthn options for a recovery code",
    ("POST", "/auth/recover/verify"): "creates a session",
    ("GET", "/auth/psc/start"): "redirect to the identity provider",
    ("GET", "/auth/psc/callback"): "creates a session",
    ("POST", "/account/passkeys/options"): "the caller's own account",
    ("POST", "/account/passkeys/verify"): "the caller's own account",
    ("POST", "/account/passkeys/{passkey_id}/revoke"): "the caller's own account",
    ("POST", "/account/sessions/{session_id}/revoke"): "the caller's own account",
    ("POST", "/account/sessions/revoke"): "the caller's own account",
    ("POST", "/account/recovery-codes"): "the caller's own account",
    ("GET", "/account"): "the caller's own account",
    ("GET", "/account/establishment"): "establishment names (business data)",
    ("POST", "/account/establishment/{establishment_id}"): "the caller's own session",
    ("POST", "/account/invitations"): "returns an invitation link only",
    ("GET", "/account/api-clients"): "practice software keys (business data)",
    ("POST", "/account/api-clients"): "returns a client id",
    ("POST", "/account/api-clients/{client_id}/revoke"): "revocation",
    ("GET", "/security/events"): "account ids and event kinds",
    ("POST", "/oauth/token"): "an access token",
    ("GET", "/api/v1/whoami"): "echoes the caller's own client and the RPPS it sent",
    ("GET", "/api/v1/audit/checkpoint"): "a tree size and root",
    ("GET", "/api/v1/audit/checkpoints"): "tree sizes and roots",
    ("GET", "/api/v1/audit/key"): "a public key",
    ("GET", "/api/v1/audit/proofs/consistency"): "hashes only",
    ("GET", "/api/v1/care/invoices"): "the establishment's own invoices: states and amounts, nobody's identity",
    ("GET", "/care/invoices"): "the same list, in the portal, and an empty form",
    ("GET", "/care"): "the empty rights check form",
    ("GET", "/care/agreements/new"): "the empty quote form",
}
FRAMEWORK = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/static"}


def routes(app: FastAPI) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()

    def walk(entries: Any) -> None:
        for route in entries:
            if hasattr(route, "original_router"):  # an included router
                walk(route.original_router.routes)
            elif isinstance(route, APIRoute):
                found.update((method, route.path) for method in route.methods)
            elif getattr(route, "path", None) not in FRAMEWORK:
                raise AssertionError(f"unclassified route {route!r}")

    walk(app.router.routes)
    return found


def test_every_route_is_classified(platform: Platform) -> None:
    present = routes(create_app(platform))
    classified = [PERSONAL, set(AUDITED_WRITES), set(NOT_PERSONAL)]
    assert sum(len(group) for group in classified) == len(set().union(*classified)), "classified twice"
    assert present == set().union(*classified), (present - set().union(*classified), "unclassified")


def events_of_request(platform: Platform, request_id: str) -> list[dict[str, Any]]:
    platform.audit.log.sync()
    with platform.session() as session:
        bodies = session.execute(text("SELECT body FROM audit.events ORDER BY seq")).scalars().all()
    return [d for d in (ev.decode(bytes(b)) for b in bodies) if d["request"] == request_id]


def test_v16_every_personal_data_route_is_audited_and_fails_closed(
    portal_client: tuple[Platform, httpx.Client], tmp_path: Path
) -> None:
    platform, client = portal_client
    two_insurers(platform)
    run_import(platform, write_feed(tmp_path / "a.csv", families(1)), amc=AMC_A)
    with platform.session() as session:
        row = session.scalars(select(Beneficiary)).first()
        assert row is not None
        person = registry.read_beneficiary(session, platform.keystore, beneficiary=row, amc_number=AMC_A)
    assert person.nir is not None
    dpo, _ = passkey_session(platform, "dpo")
    operator, _ = passkey_session(platform, "platform_operator")
    # An access to this person's data, so the log holds an event about them.
    reader = audit.RequestContext(ev.Actor(account_id=uuid.uuid4(), role="professional"))
    platform.audit.for_request(reader).disclosed(
        "rights.check", purpose="tiers-payant", subjects=[(ev.BENEFICIARY, person.id)], fields=("coverage",)
    )
    platform.checkpoint()
    software = PracticeSoftware(platform, str(client.base_url))
    pharmacist, _ = passkey_session(platform, "professional", establishment_id=software.establishment_id,
                                    professional_id=software.professional_id)  # fmt: skip
    card = {"amc_number": AMC_A, "member_number": person.member_number, "birth_rank": person.birth_rank,
            "birth_date": person.birth_date.isoformat(), "care_date": dt.date.today().isoformat(),
            "domains": ["pharmacy"]}  # fmt: skip

    calls = {
        ("POST", "/audit/subject"): lambda: client.post(
            "/audit/subject", headers=dpo,
            data={"nir": person.nir, "birth_date": person.birth_date.isoformat(), "format": "json"},
        ),
        ("GET", "/api/v1/audit/proofs/inclusion"): lambda: client.get(
            "/api/v1/audit/proofs/inclusion", headers=operator, params={"seq": _seq_about(platform, person.id),
                                                                      "size": _size(platform)},
        ),
        ("POST", "/api/v1/care/eligibility"): lambda: software.post("/api/v1/care/eligibility", card),
        ("POST", "/fhir/r4/CoverageEligibilityRequest/$submit"): lambda: software.post(
            "/fhir/r4/CoverageEligibilityRequest/$submit", fhir_request(card)),
        ("POST", "/care/rights"): lambda: client.post("/care/rights", headers=pharmacist,
                                                      data={**card, "domains": "pharmacy"}),
    }  # fmt: skip
    assert set(calls) == PERSONAL
    for route, call in calls.items():
        answer = call()
        assert answer.status_code == 200, (route, answer.text)
        recorded = events_of_request(platform, answer.headers["x-request-id"])
        assert [(d["subject"], d["decision"]) for d in recorded] == [(str(person.id), "allowed")], route

    # The log cannot record: every such route answers 503 and returns nothing of the person.
    with platform.session() as session:
        session.execute(text("ALTER TABLE audit.head RENAME TO head_gone"))
        session.commit()
    try:
        for route, call in calls.items():
            answer = call()
            assert answer.status_code == 503, route
            assert str(person.id) not in answer.text and person.nir not in answer.text
    finally:
        with platform.session() as session:
            session.execute(text("ALTER TABLE audit.head_gone RENAME TO head"))
            session.commit()


def _seq_about(platform: Platform, subject: uuid.UUID) -> int:
    with platform.session() as session:
        return int(
            session.execute(
                text("SELECT min(seq) FROM audit.events WHERE subject_id = :s"), {"s": subject}
            ).scalar_one()
        )


def _size(platform: Platform) -> int:
    with platform.session() as session:
        latest = audit.latest_checkpoint(session)
    assert latest is not None
    return latest[0]


def fhir_request(card: dict[str, Any]) -> dict[str, Any]:
    """The card's fields as a FHIR CoverageEligibilityRequest."""
    return {
        "resourceType": "CoverageEligibilityRequest", "status": "active", "purpose": ["validation"],
        "created": card["care_date"], "servicedDate": card["care_date"], "patient": {"reference": "#p"},
        "insurer": {"identifier": {"system": fhir.AMC_SYSTEM, "value": card["amc_number"]}},
        "contained": [
            {"resourceType": "Patient", "id": "p", "birthDate": card["birth_date"],
             "multipleBirthInteger": card["birth_rank"]},
            {"resourceType": "Coverage", "id": "c", "status": "active", "subscriberId": card["member_number"],
             "beneficiary": {"reference": "#p"},
             "payor": [{"identifier": {"system": fhir.AMC_SYSTEM, "value": card["amc_number"]}}]},
        ],
        "insurance": [{"coverage": {"reference": "#c"}}],
        "item": [{"category": {"coding": [{"system": fhir.DOMAIN_SYSTEM, "code": "pharmacy"}]}}],
    }  # fmt: skip
