"""Federated login with a real OpenID provider (npm oidc-provider, started by the tests on
loopback, configured with Pro Santé Connect's shapes), driven by Chromium.

ASVS 5.0 V10 (OAuth and OIDC): V10.1 authorization code with PKCE, state and nonce;
V10.5 ID token validation (signature, iss, aud, exp, nonce, acr, auth_time)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from playwright.sync_api import Browser
from pydantic import SecretStr

from rempart.api.app import create_app
from rempart.identity import federation
from rempart.identity.service import AuthenticationFailed
from rempart.platform import Platform, open_platform
from rempart.registry import service as registry
from rempart.registry.identifiers import make_finess, make_rpps
from rempart.registry.models import Practice
from rempart.settings import Settings

from portal_server import free_port, serve

pytestmark = [pytest.mark.integration, pytest.mark.browser]
OIDC_DIR = Path(__file__).parent / "oidc"
RPPS = make_rpps("1000777888")
SECOND_FINESS = make_finess("13000001")
SIGNING_KEY = RSAKey.generate_key(2048, parameters={"kid": "psc-test", "use": "sig", "alg": "RS256"})


def start_provider(port: int, redirect_uri: str, acr: str) -> subprocess.Popen[str]:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, check=True)
    config = {
        "port": port, "client_id": "rempart", "client_secret": "s3cret-for-tests", "redirect_uri": redirect_uri,
        "signing_jwk": SIGNING_KEY.as_dict(private=True), "cookie_key": secrets.token_hex(16),
        "account_id": "psc-" + RPPS, "acr": acr,
        "account_claims": {
            "given_name": "Anne", "family_name": "Durand", "SubjectNameID": "8" + RPPS,
            "SubjectRefPro": {"exercices": [{"codeProfession": "21", "activities": [
                {"numeroFinessEtablissement": "750712184", "raisonSocialeSite": "Pharmacie du Port"},
                {"numeroFinessEtablissement": SECOND_FINESS, "raisonSocialeSite": "Pharmacie de la Gare"}]}]},
        },
    }  # fmt: skip
    process = subprocess.Popen(
        [shutil.which("node") or "node", "provider.mjs"], cwd=OIDC_DIR, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "OIDC_TEST_CONFIG": json.dumps(config)},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/.well-known/openid-configuration", timeout=1).raise_for_status()
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(process.stdout.read() if process.stdout else "oidc-provider did not start")


@pytest.fixture(params=["eidas1", "low"])
def federated(request: pytest.FixtureRequest, settings: Settings) -> Iterator[tuple[Platform, str, str]]:
    port, provider_port = free_port(), free_port()
    origin = f"http://localhost:{port}"
    provider = start_provider(provider_port, f"{origin}/auth/psc/callback", request.param)
    platform = open_platform(settings.model_copy(update={
        "public_origin": origin, "oidc_issuer": f"http://127.0.0.1:{provider_port}",
        "oidc_client_secret": SecretStr("s3cret-for-tests")}))  # fmt: skip
    with platform.session() as session:
        shop = registry.register_establishment(session, name="Pharmacie du Port", kind="pharmacy", finess="750712184")
        registry.register_professional(session, platform.keystore, identifier=RPPS, family_name="Durand",
                                       first_name="Anne", profession="pharmacist", specialty=None,
                                       establishment_ids=[shop.id])  # fmt: skip
        session.commit()
    try:
        with serve(create_app(platform), port):
            yield platform, origin, request.param
    finally:
        provider.terminate()
        provider.wait(timeout=10)
        platform.close()


def test_v10_login_through_the_provider(federated: tuple[Platform, str, str], browser: Browser) -> None:
    platform, origin, acr = federated
    page = browser.new_context().new_page()
    page.goto(f"{origin}/login")
    page.click("#psc")
    page.wait_for_load_state("networkidle")
    if acr == "eidas1":
        assert page.url == f"{origin}/account"
        assert "professional" in page.inner_text("#role")
        assert "Pharmacie du Port" in page.inner_text("#establishment")  # the one place the registry knows
        # Now the registry also has them at the second place SubjectRefPro names: they pick one.
        with platform.session() as session:
            gare = registry.register_establishment(session, name="Pharmacie de la Gare", kind="pharmacy",
                                                   finess=SECOND_FINESS)  # fmt: skip
            pro = registry.find_professional(session, platform.keystore, identifier=RPPS)
            assert pro is not None
            session.add(Practice(professional_id=pro.id, establishment_id=gare.id))
            session.commit()
        page.click("#logout")
        page.wait_for_url(f"{origin}/login")
        page.click("#psc")
        page.wait_for_url(f"{origin}/account/establishment")
        page.get_by_text("Pharmacie de la Gare").click()
        page.wait_for_url(f"{origin}/account")
        assert "Pharmacie de la Gare" in page.inner_text("#establishment")
    else:  # a password-level login is not enough for a professional
        assert "/auth/psc/callback" in page.url
        assert "authentication failed" in page.content()
        assert not any(c["name"] == "rempart_session" for c in page.context.cookies())


def forge(**overrides: Any) -> tuple[str, dict[str, Any]]:
    now = int(time.time())
    claims = {"iss": "https://psc.example", "aud": "rempart", "sub": "x", "iat": now, "exp": now + 60,
              "nonce": "n-123", "acr": "eidas1", "auth_time": now - 5}  # fmt: skip
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode({"alg": "RS256", "kid": "psc-test"}, claims, SIGNING_KEY), claims


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "another-client"},
        {"exp": int(time.time()) - 3600},
        {"nonce": None},
        {"nonce": "replayed"},
        {"acr": "low"},
        {"acr": None},
        {"iss": "https://evil.example"},
        {"auth_time": int(time.time()) - 3600},
    ],
    ids=["wrong-aud", "expired", "missing-nonce", "wrong-nonce", "low-acr", "no-acr", "wrong-iss", "old-auth-time"],
)
def test_v10_id_token_checks(overrides: dict[str, Any]) -> None:
    keys = KeySet([RSAKey.import_key(SIGNING_KEY.as_dict(private=False))])
    good, _ = forge()
    expected = {"keys": keys, "issuer": "https://psc.example", "client_id": "rempart", "nonce": "n-123",
                "acr_levels": ("eidas1", "eidas2", "eidas3")}  # fmt: skip
    assert federation.validate_id_token(good, **expected)["acr"] == "eidas1"
    bad, _ = forge(**overrides)
    with pytest.raises(AuthenticationFailed):
        federation.validate_id_token(bad, **expected)
    other_key = RSAKey.generate_key(2048, parameters={"kid": "psc-test"})
    with pytest.raises(AuthenticationFailed):  # right claims, wrong signer
        federation.validate_id_token(jwt.encode({"alg": "RS256", "kid": "psc-test"}, forge()[1], other_key),
                                     **expected)  # fmt: skip
