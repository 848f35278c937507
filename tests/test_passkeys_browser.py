"""Passkeys end to end in a real browser (Debian's Chromium driven by Playwright, with
Chromium's virtual authenticator), and a real-time phishing relay that fails.

ASVS 5.0 V6 (authentication): V6.2/V6.3 no password path, phishing-resistant authenticator;
V6.4 single-use, short-lived enrolment (invitations). V7 (sessions): V7.2 new token at login,
V7.4 logout invalidates the session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import func, select, update

from rempart.api.app import create_app
from rempart.db.base import utcnow
from rempart.identity import service
from rempart.identity.models import Account, LoginSession, SecurityEvent
from rempart.platform import Platform, open_platform
from rempart.settings import Settings

from portal_server import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.browser]


@pytest.fixture
def portal(settings: Settings) -> Iterator[tuple[Platform, str]]:
    port = free_port()
    origin = f"http://localhost:{port}"
    platform = open_platform(settings.model_copy(update={"public_origin": origin, "webauthn_rp_id": "localhost"}))
    with serve(create_app(platform), port):
        yield platform, origin
    platform.close()


def with_authenticator(page: Page) -> Any:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.authenticator_id = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )["authenticatorId"]
    return cdp


def invite(platform: Platform, role: str = "security_officer") -> str:
    with platform.session() as session:
        token = service.issue_invitation(session, platform.settings, role=role)
        session.commit()
    return token


def count(platform: Platform, model: Any) -> int:
    with platform.session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_v6_enrol_with_a_passkey_then_log_out_and_in(portal: tuple[Platform, str], browser: Browser) -> None:
    platform, origin = portal
    token = invite(platform)
    page = browser.new_context().new_page()
    with_authenticator(page)
    page.goto(f"{origin}/enrol#{token}")
    page.fill("#passkey-name", "Clé du comptoir")
    page.click("#enrol")
    page.wait_for_url(f"{origin}/account")
    assert "Clé du comptoir" in page.inner_text("#passkeys")
    assert "security_officer" in page.inner_text("#role")
    cookie = next(c for c in page.context.cookies() if c["name"] == "rempart_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    first_session = cookie["value"]

    page.click("#logout")
    page.wait_for_url(f"{origin}/login")
    page.goto(f"{origin}/account")
    page.wait_for_url(f"{origin}/login")  # the old session is gone

    page.click("#login")
    page.wait_for_url(f"{origin}/account")
    events = page.inner_text("#events")
    assert "login" in events and "logout" in events and "passkey_added" in events
    second = next(c for c in page.context.cookies() if c["name"] == "rempart_session")["value"]
    assert second != first_session  # a new token at every login
    assert count(platform, Account) == 1

    # The invitation was single use.
    other = browser.new_context().new_page()
    with_authenticator(other)
    other.goto(f"{origin}/enrol#{token}")
    other.click("#enrol")
    expect(other.locator("#status")).not_to_be_empty()
    assert count(platform, Account) == 1


def phishing_relay(target: str) -> FastAPI:
    """A look-alike site relaying the whole ceremony to the real portal in real time,
    forging the Origin header towards the portal as a proxy would."""
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def relay(path: str, request: Request) -> Response:
        headers = {"content-type": request.headers.get("content-type", "application/json"), "origin": target}
        if "cookie" in request.headers:
            headers["cookie"] = request.headers["cookie"]
        async with httpx.AsyncClient() as client:
            reply = await client.request(
                request.method, f"{target}/{path}", content=await request.body(), headers=headers
            )
        response = Response(reply.content, status_code=reply.status_code, media_type=reply.headers.get("content-type"))
        for value in reply.headers.get_list("set-cookie"):
            response.headers.append("set-cookie", value)
        return response

    return app


def test_v6_an_assertion_relayed_from_a_phishing_origin_is_refused(
    portal: tuple[Platform, str], browser: Browser
) -> None:
    platform, origin = portal
    page = browser.new_context().new_page()
    cdp = with_authenticator(page)
    page.goto(f"{origin}/enrol#{invite(platform)}")
    page.click("#enrol")
    page.wait_for_url(f"{origin}/account")
    sessions_before = count(platform, LoginSession)
    failures_before = _failures(platform)

    # 1. A look-alike domain: the browser will not even produce an assertion for our RP ID.
    relay_port = free_port()
    with serve(phishing_relay(origin), relay_port):
        page.goto(f"http://rempart-login.localhost:{relay_port}/login")
        page.click("#login")
        expect(page.locator("#status")).not_to_be_empty()
    assert "refusée" in page.inner_text("#status")
    assert _failures(platform) == failures_before  # nothing reached the platform

    # 2. Another origin the browser does accept for this RP ID (same host, another port): the
    #    assertion is made and relayed in real time, and the platform refuses it for its origin.
    relay_port = free_port()
    with serve(phishing_relay(origin), relay_port):
        page.goto(f"http://localhost:{relay_port}/login")
        page.click("#login")
        expect(page.locator("#status")).not_to_be_empty()
    assert "refusée" in page.inner_text("#status")
    assert _failures(platform) == failures_before + 1  # the assertion reached us, and was refused
    assert count(platform, LoginSession) == sessions_before  # no session for the attacker
    assert cdp is not None


def _failures(platform: Platform) -> int:
    with platform.session() as session:
        return int(
            session.scalar(select(func.count()).select_from(SecurityEvent).where(SecurityEvent.kind == "login_failed"))
            or 0
        )


def test_v6_adding_a_passkey_needs_a_fresh_step_up(portal: tuple[Platform, str], browser: Browser) -> None:
    platform, origin = portal
    page = browser.new_context().new_page()
    cdp = with_authenticator(page)
    page.goto(f"{origin}/enrol#{invite(platform)}")
    page.click("#enrol")
    page.wait_for_url(f"{origin}/account")
    # The login was more than five minutes ago.
    with platform.session() as session:
        session.execute(update(LoginSession).values(step_up_at=utcnow() - dt.timedelta(minutes=6)))
        session.commit()
    refused = page.request.post(f"{origin}/account/passkeys/options", headers={"origin": origin}, data="{}")
    assert (refused.status, refused.json()) == (403, {"detail": "step_up_required"})
    # Confirm with the passkey (step-up), then plug in a new security key for the second passkey.
    page.evaluate("stepUp()")
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": cdp.authenticator_id})
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {"protocol": "ctap2", "transport": "usb",
             "hasResidentKey": True, "hasUserVerification": True, "isUserVerified": True}})  # fmt: skip
    page.fill("#passkey-name", "Clé de secours")
    page.click("#add-passkey")
    expect(page.locator("#passkeys li")).to_have_count(2)
    assert "Clé de secours" in page.inner_text("#passkeys")
    assert "step_up" in page.inner_text("#events")
    # Revoke the first one; the last one can never be revoked.
    page.locator(".revoke-passkey").first.click()
    expect(page.locator("#passkeys li")).to_have_count(1)
    page.locator(".revoke-passkey").first.click()
    expect(page.locator("#status")).to_contain_text("last passkey")


def test_v6_a_recovery_code_only_registers_a_new_passkey_once_and_alerts(
    portal: tuple[Platform, str], browser: Browser
) -> None:
    platform, origin = portal
    page = browser.new_context().new_page()
    with_authenticator(page)
    page.goto(f"{origin}/enrol#{invite(platform)}")
    page.click("#enrol")
    page.wait_for_url(f"{origin}/account")
    page.click("#recovery-codes")
    expect(page.locator("#codes li")).to_have_count(10)
    code = page.locator("#codes li").nth(3).inner_text()
    with platform.session() as session:  # stored only as argon2id hashes
        from rempart.identity.models import RecoveryCode

        hashes = session.scalars(select(RecoveryCode.secret_hash)).all()
        assert all(h.startswith("$argon2id$") for h in hashes) and code.split("-", 1)[1] not in str(hashes)

    # The device is lost: a new browser with a new authenticator, and the code.
    lost = browser.new_context().new_page()
    with_authenticator(lost)
    lost.goto(f"{origin}/recover")
    lost.fill("#recovery-code", code)
    lost.fill("#passkey-name", "Nouveau téléphone")
    lost.click("#recover")
    lost.wait_for_url(f"{origin}/account")
    assert "Nouveau téléphone" in lost.inner_text("#passkeys")
    assert "code de secours" in lost.inner_text("#notices")
    assert "recovery_code_used" in lost.inner_text("#events")
    with platform.session() as session:
        account = session.scalars(select(Account)).one()
        assert account.reduced_limits_until is not None and account.reduced_limits_until > utcnow()

    # The same code a second time: refused.
    again = browser.new_context().new_page()
    with_authenticator(again)
    again.goto(f"{origin}/recover")
    again.fill("#recovery-code", code)
    again.click("#recover")
    expect(again.locator("#status")).to_contain_text("refusé")
    assert count(platform, Account) == 1


def enrolled_administrator(platform: Platform, origin: str, browser: Browser) -> tuple[Page, Any]:
    """A pharmacy, and its administrator enrolled with a passkey, on their account page."""
    from rempart.registry import service as registry

    with platform.session() as session:
        shop = registry.register_establishment(session, name="Pharmacie du Port", kind="pharmacy", finess="750712184")
        token = service.issue_invitation(
            session, platform.settings, role="establishment_admin", establishment_id=shop.id
        )
        session.commit()
    page = browser.new_context().new_page()
    with_authenticator(page)
    page.goto(f"{origin}/enrol#{token}")
    page.click("#enrol")
    page.wait_for_url(f"{origin}/account")
    return page, shop.id


def test_v8_an_establishment_administrator_invites_a_colleague(portal: tuple[Platform, str], browser: Browser) -> None:
    platform, origin = portal
    page, shop_id = enrolled_administrator(platform, origin, browser)
    page.select_option("#invite-role", "establishment_admin")
    page.click("#invite")
    expect(page.locator("#invitation-link")).to_contain_text("/enrol#")
    link = page.inner_text("#invitation-link")
    colleague = browser.new_context().new_page()
    with_authenticator(colleague)
    colleague.goto(link)
    colleague.click("#enrol")
    colleague.wait_for_url(f"{origin}/account")
    assert "establishment_admin" in colleague.inner_text("#role")
    with platform.session() as session:
        accounts = session.scalars(select(Account).where(Account.establishment_id == shop_id)).all()
        assert len(accounts) == 2


def test_v8_an_administrator_registers_practice_software_in_the_portal(
    portal: tuple[Platform, str], browser: Browser
) -> None:
    import json

    from joserfc.jwk import ECKey

    platform, origin = portal
    page, _ = enrolled_administrator(platform, origin, browser)
    page.click("#api-clients-link")
    page.wait_for_url(f"{origin}/account/api-clients")
    key = ECKey.generate_key("P-256")
    page.fill("#client-jwk", json.dumps(key.as_dict(private=False)))
    page.uncheck("#client-scopes input[value=agreements]")
    page.click("#register-client")
    expect(page.locator("#client-created")).to_contain_text("Identifiant du logiciel")
    page.reload()
    row = page.locator("tr.client")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(str(key.thumbprint()))
    expect(row).to_contain_text("eligibility, invoices")
    page.click(".revoke-client")
    expect(page.locator("tr.client .state")).to_contain_text("révoqué")
