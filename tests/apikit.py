"""Practice software for tests: a registered API client with its keys, tokens and DPoP proofs,
calling the platform over real HTTP as a pharmacy's software would."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from rempart.db.base import utcnow
from rempart.identity import apiclients, service
from rempart.identity.models import Account
from rempart.registry import service as registry
from rempart.registry.identifiers import make_finess, make_rpps


def assertion(client_key: OKPKey, client_id: uuid.UUID, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": str(client_id), "sub": str(client_id), "aud": audience, "iat": now, "exp": now + 60,
              "jti": uuid.uuid4().hex}  # fmt: skip
    return jwt.encode({"alg": "Ed25519"}, claims, client_key, algorithms=["Ed25519"])


def proof(key: ECKey, method: str, url: str, token: str | None = None) -> str:
    claims: dict[str, Any] = {"htm": method, "htu": url, "iat": int(time.time()), "jti": uuid.uuid4().hex}
    if token:
        claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()).rstrip(b"=").decode()
    return jwt.encode({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.as_dict(private=False)}, claims, key)


class PracticeSoftware:
    """One establishment's software: a client key, a DPoP key, a token, the professional it acts for."""

    def __init__(self, platform: Any, base: str, *, finess_body: str = "75000001", rpps_body: str = "1000345678",
                 scopes: tuple[str, ...] = ("eligibility", "agreements", "invoices")) -> None:  # fmt: skip
        self.origin = platform.settings.portal_origin
        self.base = base
        self.rpps = make_rpps(rpps_body)
        self.client_key, self.dpop_key = OKPKey.generate_key("Ed25519"), ECKey.generate_key("P-256")
        with platform.session() as session:
            place = registry.register_establishment(
                session, name=f"Pharmacie {finess_body}", kind="pharmacy", finess=make_finess(finess_body)
            )
            professional = registry.register_professional(
                session, platform.keystore, identifier=self.rpps, family_name="Martin", first_name="Paul",
                profession="pharmacist", specialty=None, establishment_ids=[place.id],
            )  # fmt: skip
            admin = Account(role="establishment_admin", establishment_id=place.id)
            session.add(admin)
            session.flush()
            actor = service.CurrentUser(admin.id, admin.role, None, place.id, None, utcnow(), utcnow(), b"")
            self.client_id = apiclients.register_client(
                session, actor=actor, establishment_id=place.id, public_jwk=self.client_key.as_dict(private=False),
                scopes=list(scopes),
            )  # fmt: skip
            session.commit()
            self.establishment_id, self.professional_id = place.id, professional.id
        self.token = self._token(" ".join(scopes))

    def _token(self, scope: str) -> str:
        token_url = f"{self.origin}/oauth/token"
        form = {"grant_type": "client_credentials", "client_assertion_type": apiclients.CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion(self.client_key, self.client_id, token_url), "scope": scope}  # fmt: skip
        answer = httpx.post(f"{self.base}/oauth/token", data=form,
                            headers={"DPoP": proof(self.dpop_key, "POST", token_url)})  # fmt: skip
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        """A DPoP-protected POST of a JSON body, acting for this establishment's professional."""
        sent = {"Authorization": f"DPoP {self.token}", "DPoP": proof(self.dpop_key, "POST", f"{self.origin}{path}",
                self.token), "X-Acting-RPPS": self.rpps, **headers}  # fmt: skip
        return httpx.post(f"{self.base}{path}", json=body, headers=sent, timeout=30)

    def get(self, path: str, **params: str) -> httpx.Response:
        sent = {"Authorization": f"DPoP {self.token}", "DPoP": proof(self.dpop_key, "GET", f"{self.origin}{path}",
                self.token), "X-Acting-RPPS": self.rpps}  # fmt: skip
        return httpx.get(f"{self.base}{path}", params=params, headers=sent, timeout=30)
