"""Login through the health sector's OpenID provider (Pro Santé Connect shapes).

Authorization code with PKCE (S256), `state` and `nonce`, via authlib's OAuth 2 client;
the ID token is verified with joserfc (authlib's JOSE library) against the provider's keys:
signature, `iss`, `aud`, `exp`/`iat`, `nonce`, `acr` at least the configured level, and
`auth_time`. The professional is the one whose RPPS is in `SubjectNameID`."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.httpx_client import OAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.crypto.keystore import Keystore
from rempart.db.base import utcnow
from rempart.identity.models import Account, OidcFlow
from rempart.identity.service import AuthenticationFailed, NewSession, _open_session, record_event
from rempart.registry import service as registry
from rempart.settings import Settings

FLOW_SECONDS = 600
MAX_AUTH_AGE = dt.timedelta(minutes=10)
CLOCK_SKEW = 60
SCOPE = "openid scope_all"


def _hash(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def _discovery(settings: Settings) -> dict[str, Any]:
    if not settings.oidc_issuer:
        raise AuthenticationFailed
    reply = httpx.get(f"{settings.oidc_issuer}/.well-known/openid-configuration", timeout=5)
    reply.raise_for_status()
    document: dict[str, Any] = reply.json()
    if document.get("issuer") != settings.oidc_issuer:
        raise AuthenticationFailed
    return document


def _client(settings: Settings, **kwargs: Any) -> OAuth2Client:
    return OAuth2Client(
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        scope=SCOPE,
        redirect_uri=f"{settings.portal_origin}/auth/psc/callback",
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name, not a secret
        timeout=5,
        **kwargs,
    )


def begin(session: Session, settings: Settings) -> tuple[str, str]:
    """Returns (state for the cookie, authorization URL to redirect to)."""
    try:
        document = _discovery(settings)
    except (httpx.HTTPError, ValueError):
        raise AuthenticationFailed from None
    state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    session.add(OidcFlow(state_hash=_hash(state), nonce=nonce, code_verifier=verifier,
                         expires_at=utcnow() + dt.timedelta(seconds=FLOW_SECONDS)))  # fmt: skip
    session.flush()
    with _client(settings) as client:
        url, _ = client.create_authorization_url(
            document["authorization_endpoint"], state=state, nonce=nonce, code_verifier=verifier,
            acr_values=settings.oidc_acr_levels[0], max_age=int(MAX_AUTH_AGE.total_seconds()),
        )  # fmt: skip
    return state, str(url)


def validate_id_token(
    token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    nonce: str,
    acr_levels: tuple[str, ...],
    now: float | None = None,
) -> dict[str, Any]:
    """Every check the relying party owes; any failure is the same AuthenticationFailed."""
    try:
        claims: dict[str, Any] = dict(jwt.decode(token, keys, algorithms=["ES256", "RS256", "PS256"]).claims)
    except (JoseError, ValueError):
        raise AuthenticationFailed from None
    now = now or time.time()
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    checks = (
        claims.get("iss") == issuer,
        client_id in audiences,
        len(audiences) == 1 or claims.get("azp") == client_id,
        isinstance(claims.get("exp"), int | float) and claims["exp"] > now - CLOCK_SKEW,
        isinstance(claims.get("iat"), int | float) and claims["iat"] < now + CLOCK_SKEW,
        isinstance(nonce, str) and claims.get("nonce") == nonce,
        claims.get("acr") in acr_levels,
        isinstance(claims.get("auth_time"), int | float)
        and now - claims["auth_time"] < MAX_AUTH_AGE.total_seconds() + CLOCK_SKEW,
    )
    if not all(checks):
        raise AuthenticationFailed
    return claims


def rpps_of(subject_name_id: Any) -> str | None:
    """Pro Santé Connect's national identifier: "8" followed by the RPPS for RPPS holders."""
    if not isinstance(subject_name_id, str):
        return None
    value = subject_name_id.strip()
    if len(value) == 12 and value.startswith("8"):
        value = value[1:]
    return value if len(value) == 11 and value.isdigit() else None


@dataclass(frozen=True)
class FederatedLogin:
    session: NewSession
    account_id: uuid.UUID
    must_choose: bool = False


def finish(
    session: Session, settings: Settings, keystore: Keystore, *, state_cookie: str | None, state: str, code: str
) -> FederatedLogin:
    if not state_cookie or not secrets.compare_digest(state_cookie, state):
        raise AuthenticationFailed
    flow = session.get(OidcFlow, _hash(state), with_for_update=True)
    if flow is None or flow.used_at is not None or flow.expires_at <= utcnow():
        raise AuthenticationFailed
    flow.used_at = utcnow()
    try:
        document = _discovery(settings)
        with _client(settings) as client:
            tokens = client.fetch_token(document["token_endpoint"], code=code, code_verifier=flow.code_verifier)
            keys = KeySet.import_key_set(httpx.get(document["jwks_uri"], timeout=5).json())
            claims = validate_id_token(
                tokens["id_token"], keys=keys, issuer=document["issuer"], client_id=settings.oidc_client_id,
                nonce=flow.nonce, acr_levels=settings.oidc_acr_levels,
            )  # fmt: skip
            userinfo = client.get(document["userinfo_endpoint"]).json()
    except AuthenticationFailed:
        raise
    except Exception as exc:
        raise AuthenticationFailed from exc
    if not isinstance(userinfo, dict) or userinfo.get("sub") != claims.get("sub"):
        raise AuthenticationFailed
    rpps = rpps_of(userinfo.get("SubjectNameID"))
    professional = registry.find_professional(session, keystore, identifier=rpps) if rpps else None
    if professional is None:
        record_event(session, None, "federated_login_refused", reason="unknown professional")
        raise AuthenticationFailed
    account = session.scalars(
        select(Account).where(Account.professional_id == professional.id, Account.role == "professional")
    ).first()
    if account is None:
        account = Account(role="professional", professional_id=professional.id)
        session.add(account)
        session.flush()
        record_event(session, account.id, "account_created", method="oidc")
    if account.disabled_at is not None:
        raise AuthenticationFailed
    places = _places_of_practice(session, professional.id, userinfo.get("SubjectRefPro"))
    chosen = places[0] if len(places) == 1 else None
    opened = _open_session(
        session, settings, account, None, method="oidc", establishment_id=chosen,
        choices=places if len(places) > 1 else None,
    )  # fmt: skip
    return FederatedLogin(opened, account.id, must_choose=len(places) > 1)


def _places_of_practice(session: Session, professional_id: uuid.UUID, ref_pro: Any) -> list[uuid.UUID]:
    """Establishments named in SubjectRefPro (FINESS or SIRET) where the registry has this
    professional practising: one login may map to several billing entities."""
    from rempart.registry.models import Establishment, Practice

    numbers: set[str] = set()
    exercices = ref_pro.get("exercices") if isinstance(ref_pro, dict) else None
    for exercice in exercices if isinstance(exercices, list) else []:
        activities = exercice.get("activities") if isinstance(exercice, dict) else None
        for activity in activities if isinstance(activities, list) else []:
            if isinstance(activity, dict):
                for field in ("numeroFinessEtablissement", "numeroFinessSite", "numeroSiretSite"):
                    if isinstance(activity.get(field), str):
                        numbers.add(activity[field])
    if not numbers:
        return []
    rows = session.scalars(
        select(Establishment.id)
        .join(Practice, Practice.establishment_id == Establishment.id)
        .where(Practice.professional_id == professional_id)
        .where((Establishment.finess.in_(numbers)) | (Establishment.siret.in_(numbers)))
        .order_by(Establishment.name)
    )
    return list(rows)
