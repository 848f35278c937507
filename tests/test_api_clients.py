"""API clients: OAuth 2 client credentials with private_key_jwt, DPoP-bound access tokens.

ASVS 5.0 V10 (OAuth): V10.3 sender-constrained tokens (DPoP, RFC 9449), V10.4 client
authentication with asymmetric keys (private_key_jwt), short token lifetimes, replay refused."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
from joserfc.jwk import ECKey, OKPKey

from rempart.api.app import create_app
from rempart.db.base import utcnow
from rempart.identity import apiclients, service
from rempart.identity.models import Account
from rempart.platform import Platform, open_platform
from rempart.registry import service as registry
from rempart.registry.identifiers import make_finess, make_rpps
from rempart.settings import Settings

from apikit import assertion, proof
from portal_server import free_port, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[Platform, str, str]]:
    port = free_port()
    origin = f"http://localhost:{port}"
    platform = open_platform(settings.model_copy(update={"public_origin": origin}))
    with serve(create_app(platform), port):
        yield platform, origin, f"http://127.0.0.1:{port}"
    platform.close()


ACTING = make_rpps("1000345678")
ELSEWHERE = make_rpps("1000999000")


def register(platform: Platform, client_key: OKPKey) -> uuid.UUID:
    with platform.session() as session:
        shop = registry.register_establishment(session, name="Pharmacie", kind="pharmacy", finess="750712184")
        other = registry.register_establishment(session, name="Autre", kind="pharmacy", finess=make_finess("13000001"))
        for rpps, place in ((ACTING, shop), (ELSEWHERE, other)):
            registry.register_professional(session, platform.keystore, identifier=rpps, family_name="Martin",
                                           first_name="Paul", profession="pharmacist", specialty=None,
                                           establishment_ids=[place.id])  # fmt: skip
        admin = Account(role="establishment_admin", establishment_id=shop.id)
        session.add(admin)
        session.flush()
        actor = service.CurrentUser(admin.id, admin.role, None, shop.id, None, utcnow(), utcnow(), b"")
        client_id = apiclients.register_client(
            session, actor=actor, establishment_id=shop.id, public_jwk=client_key.as_dict(private=False),
            scopes=["eligibility", "invoices"],
        )  # fmt: skip
        session.commit()
        return client_id


def get_token(
    base: str, origin: str, client_key: OKPKey, client_id: uuid.UUID, dpop_key: ECKey, **extra: str
) -> httpx.Response:
    token_url = f"{origin}/oauth/token"
    signed = assertion(client_key, client_id, extra.pop("aud", token_url))
    form = {"grant_type": "client_credentials", "client_assertion_type": apiclients.CLIENT_ASSERTION_TYPE,
            "client_assertion": signed, "scope": "eligibility"}  # fmt: skip
    return httpx.post(f"{base}/oauth/token", data=form, headers={"DPoP": proof(dpop_key, "POST", token_url)})


def test_v10_dpop_bound_token_works_only_with_its_key(api: tuple[Platform, str, str]) -> None:
    platform, origin, base = api
    client_key, dpop_key, thief_key = (
        OKPKey.generate_key("Ed25519"),
        ECKey.generate_key("P-256"),
        ECKey.generate_key("P-256"),
    )
    client_id = register(platform, client_key)
    issued = get_token(base, origin, client_key, client_id, dpop_key)
    assert issued.status_code == 200, issued.text
    body = issued.json()
    assert body["token_type"] == "DPoP" and body["expires_in"] == 300 and body["scope"] == "eligibility"
    token, url = body["access_token"], f"{origin}/api/v1/whoami"

    def call(key: ECKey | None, *, reuse: str | None = None, rpps: str = ACTING) -> httpx.Response:
        headers = {"Authorization": f"DPoP {token}", "X-Acting-RPPS": rpps}
        if key is not None or reuse:
            headers["DPoP"] = reuse or proof(key, "GET", url, token)  # type: ignore[arg-type]
        return httpx.get(f"{base}/api/v1/whoami", headers=headers)

    good = proof(dpop_key, "GET", url, token)
    ok = call(None, reuse=good)
    assert ok.status_code == 200 and ok.json()["acting_for"] == ACTING and ok.json()["scopes"] == ["eligibility"]
    assert call(dpop_key, rpps=ELSEWHERE).status_code == 400  # not a professional of this establishment
    assert call(dpop_key, rpps="12345").status_code == 400
    assert call(None, reuse=good).status_code == 401  # the same proof twice: replay
    assert call(None).status_code == 401  # the token alone, copied off the practice computer
    stolen = call(thief_key)
    assert stolen.status_code == 401 and 'error="invalid_dpop_proof"' in stolen.headers["www-authenticate"]
    assert call(dpop_key).status_code == 200  # the owner, with a fresh proof
    # A token never issued, with a good proof of it, is told apart from a bad proof.
    made_up = "A" * 43
    headers = {"Authorization": f"DPoP {made_up}", "X-Acting-RPPS": ACTING,
               "DPoP": proof(dpop_key, "GET", url, made_up)}  # fmt: skip
    unknown = httpx.get(f"{base}/api/v1/whoami", headers=headers)
    assert unknown.status_code == 401 and 'error="invalid_token"' in unknown.headers["www-authenticate"]


def test_v10_the_proof_names_the_target_as_rfc_9449_compares_it(api: tuple[Platform, str, str]) -> None:
    """`htu` is compared after RFC 3986 normalization, and against the path as sent: the same
    target written another way passes, another target does not."""
    platform, origin, base = api
    client_key, dpop_key = OKPKey.generate_key("Ed25519"), ECKey.generate_key("P-256")
    issued = get_token(base, origin, client_key, register(platform, client_key), dpop_key)
    token = issued.json()["access_token"]
    port = origin.rsplit(":", 1)[1]

    def call(htu: str) -> int:
        headers = {"Authorization": f"DPoP {token}", "X-Acting-RPPS": ACTING,
                   "DPoP": proof(dpop_key, "GET", htu, token)}  # fmt: skip
        return httpx.get(f"{base}/api/v1/whoami", headers=headers).status_code

    assert call(f"HTTP://LocalHost:{port}/api/v1/%77hoami") == 200  # case, and an unreserved char encoded
    assert call(f"{origin}/api/v1/whoami?page=2#top") == 200  # query and fragment are not part of it
    assert call(f"{origin}/api/v1/whoam") == 401
    assert call(f"https://localhost:{port}/api/v1/whoami") == 401
    assert call(f"http://127.0.0.1:{port}/api/v1/whoami") == 401  # another host
    # A path sent percent-encoded is compared as sent (past authentication: this token lacks
    # the invoices scope, hence 403, not 401).
    sent = f"/api/v1/care/invoices/{str(uuid.uuid4()).replace('-', '%2D')}/cancel"
    headers = {"Authorization": f"DPoP {token}", "X-Acting-RPPS": ACTING,
               "DPoP": proof(dpop_key, "POST", origin + sent, token)}  # fmt: skip
    assert httpx.post(f"{base}{sent}", headers=headers).status_code == 403


def test_normalized_target() -> None:
    norm = apiclients.normalized_target
    assert norm("HTTPS://Example.FR:443/a%7eb/%2f") == "https://example.fr/a~b/%2F"
    assert norm("http://example.fr:8080") == "http://example.fr:8080/"
    assert norm("http://[::1]:80/x") == "http://[::1]/x"
    assert norm("ftp://example.fr/") is None and norm("/relative") is None and norm("http://h:99999/") is None


def test_v10_client_authentication_is_strict(api: tuple[Platform, str, str]) -> None:
    platform, origin, base = api
    client_key, dpop_key = OKPKey.generate_key("Ed25519"), ECKey.generate_key("P-256")
    client_id = register(platform, client_key)
    wrong_aud = get_token(base, origin, client_key, client_id, dpop_key, aud="https://evil.example/token")
    assert (wrong_aud.status_code, wrong_aud.json()) == (400, {"error": "invalid_client"})
    impostor = get_token(base, origin, OKPKey.generate_key("Ed25519"), client_id, dpop_key)
    assert impostor.status_code == 400
    no_proof = httpx.post(f"{base}/oauth/token", data={"grant_type": "client_credentials",
                          "client_assertion_type": apiclients.CLIENT_ASSERTION_TYPE,
                          "client_assertion": assertion(client_key, client_id, f"{origin}/oauth/token")})  # fmt: skip
    assert no_proof.status_code == 401
    token = get_token(base, origin, client_key, client_id, dpop_key).json()["access_token"]
    with platform.session() as session:
        admin = session.query(Account).one()
        actor = service.CurrentUser(admin.id, admin.role, None, admin.establishment_id, None, utcnow(), utcnow(), b"")
        apiclients.revoke_client(session, actor=actor, client_id=client_id)
        session.commit()
    assert get_token(base, origin, client_key, client_id, dpop_key).status_code == 400
    url = f"{origin}/api/v1/whoami"
    revoked = httpx.get(f"{base}/api/v1/whoami", headers={"Authorization": f"DPoP {token}",
                        "DPoP": proof(dpop_key, "GET", url, token), "X-Acting-RPPS": ACTING})  # fmt: skip
    assert revoked.status_code == 401


def test_v10_calls_are_limited_per_professional_and_per_client(
    api: tuple[Platform, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small ceilings here so the test stays short; the shipped ones are in guard.ratelimit."""
    from rempart.guard import ratelimit

    monkeypatch.setattr(ratelimit, "API_PROFESSIONAL", ratelimit.Limit("api-professional", 3, ratelimit.LOGIN.window))
    platform, origin, base = api
    client_key, dpop_key = OKPKey.generate_key("Ed25519"), ECKey.generate_key("P-256")
    client_id = register(platform, client_key)
    token = get_token(base, origin, client_key, client_id, dpop_key).json()["access_token"]
    url = f"{origin}/api/v1/whoami"
    headers = {"Authorization": f"DPoP {token}", "X-Acting-RPPS": ACTING}
    statuses, refused_proof = [], ""
    for _ in range(7):
        fresh = proof(dpop_key, "GET", url, token)
        reply = httpx.get(f"{base}/api/v1/whoami", headers={**headers, "DPoP": fresh})
        statuses.append(reply.status_code)
        refused_proof = fresh if reply.status_code == 429 else refused_proof
    # A proof spent on a refused call stays spent: replaying it is refused as a replay.
    replay = httpx.get(f"{base}/api/v1/whoami", headers={**headers, "DPoP": refused_proof})
    assert replay.status_code == 401
    # A fixed window may roll over once in the burst: seven calls still overflow one window.
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]


def test_once_a_token_has_served_its_calls_count_in_one_statement_and_only_when_genuine(
    api: tuple[Platform, str, str],
) -> None:
    """After its first call a token's client is remembered and the proof, the token and the
    counts take one statement: a proof by another key, a replayed proof or a revoked client's
    token are still refused, and count against nobody."""
    from sqlalchemy import text

    from rempart.guard import ratelimit

    platform, origin, base = api
    client_key, dpop_key = OKPKey.generate_key("Ed25519"), ECKey.generate_key("P-256")
    client_id = register(platform, client_key)
    token = get_token(base, origin, client_key, client_id, dpop_key).json()["access_token"]
    url = f"{origin}/api/v1/whoami"

    def call(signed_by: ECKey, dpop: str | None = None, acting: str = ACTING) -> int:
        headers = {"Authorization": f"DPoP {token}", "X-Acting-RPPS": acting,
                   "DPoP": dpop or proof(signed_by, "GET", url, token)}  # fmt: skip
        return httpx.get(f"{base}/api/v1/whoami", headers=headers).status_code

    def counted() -> int:
        now = utcnow()
        key, start = ratelimit.window(ratelimit.API_CLIENT, f"client:{client_id}", now)
        with platform.session() as session:
            hits = session.execute(text("SELECT hits FROM rate_counters WHERE key = :k AND window_start = :s"),
                                   {"k": key, "s": start}).scalar_one_or_none()  # fmt: skip
        return int(hits or 0)

    if utcnow().second > 55:  # the minute's window must not turn during the test
        import time

        time.sleep(61 - utcnow().second)
    assert [call(dpop_key), call(dpop_key)] == [200, 200]  # the second through the one statement
    assert counted() == 2
    spent = proof(dpop_key, "GET", url, token)
    assert call(dpop_key, spent) == 200
    assert call(dpop_key, spent) == 401  # replayed
    assert call(ECKey.generate_key("P-256")) == 401  # another key than the token's
    assert counted() == 3
    # Whoever holds the token without its key cannot make the platform look professionals up.
    stranger = make_rpps("1000999999")
    assert call(ECKey.generate_key("P-256"), acting=stranger) == 401
    assert not any(identifier == stranger for identifier, _ in registry._practising)
    with platform.session() as session:
        admin = session.query(Account).one()
        actor = service.CurrentUser(admin.id, admin.role, None, admin.establishment_id, None, utcnow(), utcnow(), b"")
        apiclients.revoke_client(session, actor=actor, client_id=client_id)
        session.commit()
    assert call(dpop_key) == 401
    assert counted() == 3
