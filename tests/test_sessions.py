"""Sessions and portal hardening.

ASVS 5.0 V7 (session management): V7.3 idle (15 min) and absolute (12 h) timeouts,
V7.4 termination on logout, revocation and account disabling. V3/V4 (web frontend and API
security): security headers, CSRF defence by origin check plus SameSite=Strict cookies."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx
import pytest

from rempart.api.app import create_app
from rempart.db.base import utcnow
from rempart.identity import service
from rempart.identity.models import Account, LoginSession
from rempart.platform import Platform, open_platform
from rempart.settings import Settings

from portal_server import free_port, serve

pytestmark = pytest.mark.integration


def logged_in(platform: Platform) -> tuple[str, Account]:
    """A session opened the way a passkey login opens one (the ceremony itself is covered by the
    browser tests)."""
    with platform.session() as session:
        account = Account(role="security_officer")
        session.add(account)
        session.flush()
        created = service._open_session(session, platform.settings, account, None, method="passkey")
        session.commit()
        return created.token, account


def test_v7_idle_timeout(platform: Platform) -> None:
    token, _ = logged_in(platform)
    with platform.session() as session:
        assert service.authenticate(session, platform.settings, token=token, now=utcnow() + dt.timedelta(minutes=14))
        session.commit()
    with platform.session() as session:
        later = utcnow() + dt.timedelta(minutes=14 + 16)
        assert service.authenticate(session, platform.settings, token=token, now=later) is None
        session.commit()
    with platform.session() as session:  # and it stays dead
        assert service.authenticate(session, platform.settings, token=token) is None


def test_v7_absolute_timeout_even_when_active(platform: Platform) -> None:
    token, _ = logged_in(platform)
    now = utcnow()
    for minutes in range(10, 12 * 60, 10):  # active every ten minutes...
        with platform.session() as session:
            assert service.authenticate(
                session, platform.settings, token=token, now=now + dt.timedelta(minutes=minutes)
            )
            session.commit()
    with platform.session() as session:  # ...but not beyond twelve hours
        assert (
            service.authenticate(session, platform.settings, token=token, now=now + dt.timedelta(hours=12, minutes=5))
            is None
        )


def test_v7_revocation_and_disabling_take_effect_on_the_next_request(platform: Platform) -> None:
    first, account = logged_in(platform)
    with platform.session() as session:
        second = service._open_session(session, platform.settings, session.get_one(Account, account.id), None,
                                       method="passkey").token  # fmt: skip
        session.commit()
    with platform.session() as session:
        assert service.revoke_all_sessions(session, account_id=account.id) == 2
        session.commit()
    with platform.session() as session:
        assert service.authenticate(session, platform.settings, token=first) is None
        assert service.authenticate(session, platform.settings, token=second) is None
    third, _ = logged_in(platform)
    with platform.session() as session:
        account_id = session.get_one(LoginSession, service._hash(third)).account_id
        service.disable_account(session, account_id=account_id)
        session.commit()
    with platform.session() as session:
        assert service.authenticate(session, platform.settings, token=third) is None


def test_tokens_are_256_bit_and_stored_hashed(platform: Platform) -> None:
    token, _ = logged_in(platform)
    assert len(token) >= 43  # 32 random bytes, base64url
    with platform.session() as session:
        assert session.get(LoginSession, service._hash(token)) is not None
        assert session.get(LoginSession, token.encode()) is None


@pytest.fixture
def portal(settings: Settings) -> Iterator[tuple[Platform, str]]:
    port = free_port()
    origin = f"http://localhost:{port}"
    platform = open_platform(settings.model_copy(update={"public_origin": origin}))
    with serve(create_app(platform), port):
        yield platform, f"http://127.0.0.1:{port}"
    platform.close()


def test_v3_security_headers_on_every_page(portal: tuple[Platform, str]) -> None:
    _, base = portal
    for path in ("/", "/login", "/enrol", "/healthz"):
        headers = httpx.get(base + path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert headers["strict-transport-security"].startswith("max-age=")
        assert headers["referrer-policy"] == "same-origin"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_v3_cross_origin_posts_are_refused(portal: tuple[Platform, str]) -> None:
    platform, base = portal
    for origin in (None, "http://evil.example", "http://localhost:1"):
        headers = {"origin": origin} if origin else {}
        reply = httpx.post(base + "/auth/login/options", headers=headers)
        assert reply.status_code == 403
    ok = httpx.post(base + "/auth/login/options", headers={"origin": platform.settings.portal_origin})
    assert ok.status_code == 200 and "challenge" in ok.json()


def test_v6_failures_say_nothing_about_why(portal: tuple[Platform, str]) -> None:
    platform, base = portal
    origin = {"origin": platform.settings.portal_origin}
    unknown = httpx.post(base + "/auth/register/options", json={"invitation": "x" * 43}, headers=origin)
    with platform.session() as session:
        token = service.issue_invitation(session, platform.settings, role="dpo")
        session.get_one(service.Invitation, service._hash(token)).expires_at = utcnow() - dt.timedelta(seconds=1)
        session.commit()
    expired = httpx.post(base + "/auth/register/options", json={"invitation": token}, headers=origin)
    bogus_login = httpx.post(base + "/auth/login/verify", json={"credential": {"rawId": "AAAA"}}, headers=origin)
    assert unknown.status_code == expired.status_code == bogus_login.status_code == 400
    assert unknown.json() == expired.json() == bogus_login.json() == {"detail": "authentication failed"}


def test_v6_recovery_code_use_alerts_the_establishment_administrator(platform: Platform) -> None:
    from rempart.identity.models import Notice
    from rempart.registry import service as registry

    with platform.session() as session:
        shop = registry.register_establishment(session, name="Pharmacie", kind="pharmacy", finess="750712184")
        member = Account(role="establishment_admin", establishment_id=shop.id)
        admin = Account(role="establishment_admin", establishment_id=shop.id)
        elsewhere = Account(role="establishment_admin")
        session.add_all([member, admin, elsewhere])
        session.flush()
        actor = service.CurrentUser(member.id, member.role, None, shop.id, None, utcnow(), utcnow(), b"")
        codes = service.new_recovery_codes(session, actor=actor)
        assert len(set(codes)) == 10
        service.begin_recovery(session, platform.settings, code=codes[0])
        with pytest.raises(service.AuthenticationFailed):
            service.begin_recovery(session, platform.settings, code=codes[0])
        with pytest.raises(service.AuthenticationFailed):
            service.begin_recovery(
                session, platform.settings, code=codes[1][:-1] + ("A" if codes[1][-1] != "A" else "B")
            )
        told = {n.account_id for n in session.query(Notice).all()}
        assert told == {member.id, admin.id}


def test_v6_login_is_rate_limited_before_any_work(portal: tuple[Platform, str]) -> None:
    from sqlalchemy import func, select

    from rempart.guard.ratelimit import LOGIN
    from rempart.identity.models import Ceremony

    platform, base = portal
    origin = {"origin": platform.settings.portal_origin}
    replies = []
    with httpx.Client(base_url=base, headers=origin) as client:
        for _ in range(2 * LOGIN.hits + 5):  # a window may roll over once during the burst
            replies.append(client.post("/auth/login/options"))
            if replies[-1].status_code == 429:
                break
    statuses = [r.status_code for r in replies]
    assert statuses[-1] == 429 and int(replies[-1].headers["retry-after"]) >= 1
    assert LOGIN.hits <= statuses.count(200) <= 2 * LOGIN.hits
    with platform.session() as session:
        assert session.scalar(select(func.count()).select_from(Ceremony)) == statuses.count(200)


def test_v7_one_session_can_be_revoked_by_its_owner_only(platform: Platform) -> None:
    first, account = logged_in(platform)
    with platform.session() as session:
        second = service._open_session(session, platform.settings, session.get_one(Account, account.id), None,
                                       method="passkey").token  # fmt: skip
        other_token, _ = logged_in(platform)
        session.commit()
    with platform.session() as session:
        me = service.authenticate(session, platform.settings, token=first)
        assert me is not None
        page = service.account_page(session, account_id=account.id)
        assert len(page.sessions) == 2
        with pytest.raises(service.Forbidden):  # someone else's session
            service.revoke_session(session, actor=me, session_id=service._hash(other_token).hex())
        service.revoke_session(session, actor=me, session_id=service._hash(second).hex())
        session.commit()
    with platform.session() as session:
        assert service.authenticate(session, platform.settings, token=second) is None
        assert service.authenticate(session, platform.settings, token=first) is not None
        assert service.authenticate(session, platform.settings, token=other_token) is not None
