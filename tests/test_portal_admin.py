"""Administration pages: practice software (API clients) for establishment administrators,
every account's security events for security officers and the DPO, and the reduced limits
of an account recovered with a recovery code.

ASVS 5.0 V8 (authorization): V8.2 each page checks its permission in the service layer;
V10.4 clients register public keys only; V6.5 recovery puts the account under reduced limits;
V16.3 security events visible to those who must review them."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest
from joserfc.jwk import ECKey, OKPKey

from rempart.db.base import utcnow
from rempart.guard.ratelimit import REDUCED_SHARE, SENSITIVE, RateLimited
from rempart.identity import service
from rempart.identity.models import Account
from rempart.platform import Platform
from rempart.registry import service as registry
from rempart.registry.identifiers import make_finess

from portal_server import passkey_session

pytestmark = pytest.mark.integration


def shop(platform: Platform, finess: str = "750712184") -> uuid.UUID:
    with platform.session() as session:
        place = registry.register_establishment(session, name="Pharmacie du Port", kind="pharmacy", finess=finess)
        session.commit()
        return place.id


def test_v8_an_administrator_registers_lists_and_revokes_practice_software(
    portal_client: tuple[Platform, httpx.Client],
) -> None:
    platform, client = portal_client
    place = shop(platform)
    admin, _ = passkey_session(platform, "establishment_admin", establishment_id=place)
    key = OKPKey.generate_key("Ed25519")

    created = client.post("/account/api-clients", headers=admin,
                          json={"public_jwk": key.as_dict(private=False), "scopes": ["eligibility"]})  # fmt: skip
    assert created.status_code == 200, created.text
    client_id = created.json()["client_id"]
    page = client.get("/account/api-clients", headers=admin)
    assert page.status_code == 200
    assert client_id in page.text and str(key.thumbprint()) in page.text and "actif" in page.text

    # A private key is never accepted, nor an RSA key or garbage.
    for bad in (key.as_dict(private=True), {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "EC"}):
        refused = client.post("/account/api-clients", headers=admin,
                              json={"public_jwk": bad, "scopes": ["eligibility"]})  # fmt: skip
        assert refused.status_code == 400 and "public_jwk" in refused.json()["detail"]
    unknown_scope = client.post("/account/api-clients", headers=admin,
                                json={"public_jwk": ECKey.generate_key("P-256").as_dict(private=False),
                                      "scopes": ["registry"]})  # fmt: skip
    assert unknown_scope.status_code == 403

    # The administrator of another establishment can neither see nor revoke it.
    other, _ = passkey_session(
        platform, "establishment_admin", establishment_id=shop(platform, make_finess("13000001"))
    )
    assert client_id not in client.get("/account/api-clients", headers=other).text
    assert client.post(f"/account/api-clients/{client_id}/revoke", headers=other).status_code == 403
    # Nor can staff of other roles open the page.
    for role in ("security_officer", "dpo", "platform_operator"):
        token, _ = passkey_session(platform, role, establishment_id=place)
        assert client.get("/account/api-clients", headers=token).status_code == 403

    assert client.post(f"/account/api-clients/{client_id}/revoke", headers=admin).status_code == 200
    assert "révoqué le" in client.get("/account/api-clients", headers=admin).text


def test_v6_registering_practice_software_needs_a_fresh_passkey_confirmation(
    portal_client: tuple[Platform, httpx.Client],
) -> None:
    platform, client = portal_client
    place = shop(platform)
    admin, account_id = passkey_session(platform, "establishment_admin", establishment_id=place)
    with platform.session() as session:  # the login was six minutes ago
        from rempart.identity.models import LoginSession

        row = session.query(LoginSession).filter_by(account_id=account_id).one()
        row.step_up_at = utcnow() - dt.timedelta(minutes=6)
        session.commit()
    reply = client.post("/account/api-clients", headers=admin,
                        json={"public_jwk": OKPKey.generate_key("Ed25519").as_dict(private=False),
                              "scopes": ["invoices"]})  # fmt: skip
    assert reply.status_code == 403 and reply.json()["detail"] == "step_up_required"


def test_v16_security_officers_and_the_dpo_see_every_accounts_events(
    portal_client: tuple[Platform, httpx.Client],
) -> None:
    platform, client = portal_client
    officer, _ = passkey_session(platform, "security_officer")
    dpo, _ = passkey_session(platform, "dpo")
    admin, admin_id = passkey_session(platform, "establishment_admin", establishment_id=shop(platform))
    with platform.session() as session:
        service.record_event(session, admin_id, "recovery_code_refused")
        session.commit()
    for token in (officer, dpo):
        page = client.get("/security/events", headers=token)
        assert page.status_code == 200
        assert "recovery_code_refused" in page.text and str(admin_id) in page.text and "login" in page.text
    filtered = client.get("/security/events", params={"kind": "recovery_code_refused"}, headers=officer)
    assert filtered.text.count('class="kind"') == 1
    assert client.get("/security/events", headers=admin).status_code == 403
    assert client.get("/security/events").status_code == 303  # not logged in: to the login page


def test_v6_a_recovered_account_runs_under_reduced_limits_for_a_day(platform: Platform) -> None:
    with platform.session() as session:
        place = registry.register_establishment(session, name="Pharmacie", kind="pharmacy", finess="750712184")
        accounts = [Account(role="establishment_admin", establishment_id=place.id) for _ in range(2)]
        session.add_all(accounts)
        session.flush()
        now = utcnow()
        normal = service.CurrentUser(accounts[0].id, "establishment_admin", None, place.id, None, now, now, b"")
        recovered = service.CurrentUser(accounts[1].id, "establishment_admin", None, place.id, None, now, now, b"",
                                        reduced_limits_until=now + dt.timedelta(hours=23))  # fmt: skip

        def invitations(actor: service.CurrentUser) -> int:
            """How many invitations the actor issues before the limit refuses one."""
            for issued in range(SENSITIVE.hits + 1):
                try:
                    service.issue_invitation_as(session, platform.settings, actor=actor, role="establishment_admin",
                                                establishment_id=place.id)  # fmt: skip
                except RateLimited:
                    return issued
            raise AssertionError("never limited")

        assert invitations(recovered) == SENSITIVE.hits // REDUCED_SHARE
        assert invitations(normal) == SENSITIVE.hits
