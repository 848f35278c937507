"""API clients (practice software): OAuth 2 client credentials with `private_key_jwt`
(RFC 7523) and sender-constrained tokens with DPoP (RFC 9449).

A token copied off the practice computer is useless: every call must carry a fresh DPoP proof
signed by the key the token was issued to (its thumbprint `jkt` is stored with the token),
for this method and URL, with a never-seen `jti` and the token's hash (`ath`). Client
assertions and proofs are verified with joserfc, the JOSE library of the authlib project.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import re
import secrets
import string
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rempart.crypto.keystore import Keystore
from rempart.db import raw
from rempart.db.base import utcnow
from rempart.guard import ratelimit
from rempart.guard.ratelimit import Limit
from rempart.identity.models import ApiClient, ApiToken, SeenJti
from rempart.identity.permissions import Forbidden, Permission, requires
from rempart.identity.service import CurrentUser, record_event, spend_sensitive_quota
from rempart.registry import service as registry

TOKEN_LIFETIME = dt.timedelta(minutes=5)
PROOF_MAX_AGE = dt.timedelta(seconds=60)
ASSERTION_MAX_LIFETIME = dt.timedelta(minutes=5)
ALGORITHMS = ["ES256", "Ed25519"]  # Ed25519 by its RFC 9864 name; "EdDSA" is deprecated
SCOPES = frozenset({"eligibility", "agreements", "invoices"})
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class InvalidClient(Exception):
    """OAuth `invalid_client` / `invalid_dpop_proof` / `invalid_token`: no detail given out."""

    def __init__(self, error: str = "invalid_client") -> None:
        super().__init__(error)
        self.error = error


def _import_public(jwk: Any, error: str = "invalid_request") -> ECKey | OKPKey:
    if not isinstance(jwk, dict) or "d" in jwk:
        raise InvalidClient(error)  # never accept a private key
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            return ECKey.import_key(jwk)
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return OKPKey.import_key(jwk)
    except Exception:
        raise InvalidClient(error) from None
    raise InvalidClient(error)


_PROOF_KEYS: dict[str, tuple[ECKey | OKPKey, str]] = {}
PROOF_KEYS_KEPT = 2_000  # keys of proofs that verified; a proof's header is at most 4,000 characters


def _proof_key(jwk: Any) -> tuple[str, ECKey | OKPKey, str]:
    """A proof's public key (as its canonical JSON, and imported) and its thumbprint. Practice
    software signs all its proofs with one key, so the last two are kept once a proof has
    verified with it (importing and hashing them cost each call ~0.1 ms)."""
    try:
        name = json.dumps(jwk, sort_keys=True)
    except (TypeError, ValueError):
        raise InvalidClient("invalid_dpop_proof") from None
    kept = _PROOF_KEYS.get(name)
    if kept is not None:
        return name, *kept
    key = _import_public(jwk, "invalid_dpop_proof")
    return name, key, str(key.thumbprint())


@requires(Permission.MANAGE_API_CLIENTS, step_up=True)
def register_client(
    session: Session, *, actor: CurrentUser, establishment_id: uuid.UUID, public_jwk: dict[str, Any], scopes: list[str]
) -> uuid.UUID:
    """An establishment administrator registers practice software for their establishment."""
    if establishment_id != actor.establishment_id:
        raise Forbidden("an administrator registers clients of their own establishment only")
    if not scopes or not set(scopes) <= SCOPES:
        raise Forbidden(f"scopes must be among {sorted(SCOPES)}")
    _import_public(public_jwk)
    spend_sensitive_quota(session, actor)
    client = ApiClient(
        establishment_id=establishment_id, public_jwk=public_jwk, scopes=scopes, created_by=actor.account_id
    )
    session.add(client)
    session.flush()
    record_event(session, actor.account_id, "api_client_created", client=str(client.id))
    return client.id


@dataclass(frozen=True)
class ClientView:
    id: uuid.UUID
    created_at: dt.datetime
    scopes: tuple[str, ...]
    key_thumbprint: str  # RFC 7638, what the administrator compares with the software's settings
    revoked_at: dt.datetime | None


@requires(Permission.MANAGE_API_CLIENTS)
def list_clients(session: Session, *, actor: CurrentUser) -> list[ClientView]:
    """The practice software registered for the administrator's establishment, newest first."""
    query = select(ApiClient).where(ApiClient.establishment_id == actor.establishment_id)
    rows = session.scalars(query.order_by(ApiClient.created_at.desc())).all()
    return [
        ClientView(
            row.id, row.created_at, tuple(row.scopes), str(_import_public(row.public_jwk).thumbprint()), row.revoked_at
        )
        for row in rows
    ]


@requires(Permission.MANAGE_API_CLIENTS)
def revoke_client(session: Session, *, actor: CurrentUser, client_id: uuid.UUID) -> None:
    client = session.get(ApiClient, client_id)
    if client is None or client.establishment_id != actor.establishment_id:
        raise Forbidden("not a client of your establishment")
    client.revoked_at = utcnow()
    session.execute(delete(ApiToken).where(ApiToken.client_id == client_id))
    record_event(session, actor.account_id, "api_client_revoked", client=str(client_id))


JTI_SWEEP_ONE_IN = 200


# Every API call runs this one statement (see db/raw.py): the proof's jti spent (no row
# returned by `spent` when it was already), and the token with its client (NULLs when unknown).
BEARER_LOOKUP = """
WITH spent AS (
    INSERT INTO seen_jtis (jti, expires_at) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING jti
)
SELECT t.client_id, t.jkt, t.scopes, t.expires_at, c.establishment_id, c.revoked_at,
       EXISTS (SELECT 1 FROM spent)
FROM (SELECT 1) AS one
LEFT JOIN (api_tokens t JOIN api_clients c ON c.id = t.client_id) ON t.token_hash = %s
"""
BEARER_ONLY = (
    "SELECT t.client_id, t.jkt, t.scopes, t.expires_at, c.establishment_id, c.revoked_at, false"
    " FROM api_tokens t JOIN api_clients c ON c.id = t.client_id WHERE t.token_hash = %s"
)
SPEND_JTI = "INSERT INTO seen_jtis (jti, expires_at) VALUES (%s, %s) ON CONFLICT DO NOTHING RETURNING jti"
# BEARER_LOOKUP with the call counted against its client and its professional, once a token's
# client is known (a token belongs to one client for ever, so that is kept; its revocation and
# expiry are read every time): the whole authentication is then one round trip. The call counts
# only as BEARER_LOOKUP and the checks after it would let it through: a fresh proof by the token's key,
# a live token of that client (a replayed proof or a dead token counts nowhere).
BEARER_COUNTED = (
    """
WITH spent AS (
    INSERT INTO seen_jtis (jti, expires_at) VALUES (%(jti)s, %(jti_expires)s) ON CONFLICT DO NOTHING RETURNING jti
), token AS (
    SELECT t.client_id, t.jkt, t.scopes, t.expires_at, c.establishment_id, c.revoked_at
    FROM api_tokens t JOIN api_clients c ON c.id = t.client_id WHERE t.token_hash = %(token)s
), counted AS ("""
    + ratelimit.COUNT_TWO_WHERE
    + """EXISTS (SELECT 1 FROM spent) AND EXISTS (
        SELECT 1 FROM token WHERE client_id = %(client)s AND jkt = %(jkt)s AND revoked_at IS NULL
                              AND expires_at > %(now)s)"""
    + ratelimit.COUNTED
    + """)
SELECT token.*, EXISTS (SELECT 1 FROM spent), (SELECT array_agg(key ORDER BY key) FROM counted),
       (SELECT array_agg(hits ORDER BY key) FROM counted)
FROM (SELECT 1) AS one LEFT JOIN token ON true
"""
)
_clients_of_tokens: dict[bytes, _Client] = {}  # token hash -> its client, once it authenticated a call
CLIENTS_OF_TOKENS_KEPT = 20_000


@dataclass(frozen=True)
class _Proof:
    jti: str  # as kept in seen_jtis, prefixed by its kind
    expires_at: dt.datetime  # when keeping it stops mattering
    jkt: str  # the thumbprint of the key that signed it


def _jti_key(kind: str, jti: Any, error: str) -> str:
    key = f"{kind}:{jti}" if isinstance(jti, str) else ""
    if not 16 <= len(key) <= 200:
        raise InvalidClient(error)
    return key


def _sweep_jtis(session: Session) -> None:
    if secrets.randbelow(JTI_SWEEP_ONE_IN) == 0:  # expired ones go now and then, not on every call
        session.execute(delete(SeenJti).where(SeenJti.expires_at < utcnow()))


def _spend_jti(session: Session, jti: str, expires_at: dt.datetime, error: str) -> None:
    _sweep_jtis(session)
    if raw.fetch_one(session, SPEND_JTI, (jti, expires_at)) is None:
        raise InvalidClient(error)  # replayed


def _header(token: str) -> dict[str, Any]:
    try:
        segment = token.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, IndexError):
        raise InvalidClient("invalid_dpop_proof") from None
    if not isinstance(header, dict):
        raise InvalidClient("invalid_dpop_proof")
    return header


def _timestamp(value: Any, error: str = "invalid_request") -> dt.datetime:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidClient(error)
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, ValueError, OSError):
        raise InvalidClient(error) from None


def verify_dpop_proof(
    session: Session, *, proof: str | None, method: str, url: str, access_token: str | None = None
) -> str:
    """Check a DPoP proof (RFC 9449 §4.3), spend its jti, and return its key's thumbprint (`jkt`)."""
    checked = _checked_proof(proof, method=method, url=url, access_token=access_token)
    _spend_jti(session, checked.jti, checked.expires_at, "invalid_dpop_proof")
    return checked.jkt


_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _percent_normalized(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0).upper()


@functools.lru_cache(maxsize=512)
def normalized_target(uri: str) -> str | None:
    """A URI as RFC 9449 §4.3 compares `htu`: without query or fragment, after part of RFC 3986
    §6.2.2's syntax-based normalization (scheme and host in lower case, the default port dropped,
    unreserved characters' percent-encodings decoded and the others' hex in upper case; dot
    segments are not removed, so a proof naming them fails closed). None when it is not an
    absolute http(s) URI, and None never matches."""
    try:
        parts = urllib.parse.urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = re.sub("%([0-9A-Fa-f]{2})", _percent_normalized, parts.path) or "/"
    return f"{scheme}://{netloc}{path}"


def _checked_proof(proof: str | None, *, method: str, url: str, access_token: str | None) -> _Proof:
    """Everything about a DPoP proof but its jti's novelty, which only the database knows."""
    if not proof:
        raise InvalidClient("invalid_dpop_proof")
    header = _header(proof)
    if (
        header.get("typ") != "dpop+jwt"
        or header.get("alg") not in ALGORITHMS
        or not isinstance(header.get("jwk"), dict)
    ):
        raise InvalidClient("invalid_dpop_proof")
    name, key, thumbprint = _proof_key(header["jwk"])
    try:
        claims = jwt.decode(proof, key, algorithms=ALGORITHMS).claims
    except (JoseError, ValueError):
        raise InvalidClient("invalid_dpop_proof") from None
    if name not in _PROOF_KEYS:
        if len(_PROOF_KEYS) >= PROOF_KEYS_KEPT:
            _PROOF_KEYS.clear()
        _PROOF_KEYS[name] = (key, thumbprint)
    now = utcnow()
    issued = _timestamp(claims.get("iat"), "invalid_dpop_proof")
    htu = claims.get("htu")
    expected = normalized_target(url)
    same_target = (
        expected is not None and isinstance(htu, str) and len(htu) <= 2048 and normalized_target(htu) == expected
    )
    if claims.get("htm") != method or not same_target or abs(now - issued) > PROOF_MAX_AGE:
        raise InvalidClient("invalid_dpop_proof")
    if access_token is not None:
        expected = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
        if claims.get("ath") != expected:
            raise InvalidClient("invalid_dpop_proof")
    jti = _jti_key("dpop", claims.get("jti"), "invalid_dpop_proof")
    return _Proof(jti, issued + 2 * PROOF_MAX_AGE, thumbprint)


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str


def issue_token(
    session: Session,
    *,
    token_url: str,
    grant_type: str,
    client_assertion_type: str,
    client_assertion: str,
    scope: str,
    dpop_proof: str | None,
) -> IssuedToken:
    """The token endpoint: client credentials, `private_key_jwt`, DPoP-bound."""
    if grant_type != "client_credentials" or client_assertion_type != CLIENT_ASSERTION_TYPE:
        raise InvalidClient("invalid_request")
    jkt = verify_dpop_proof(session, proof=dpop_proof, method="POST", url=token_url)
    # The issuer is read before verification only to find whose key verifies the assertion.
    client = session.get(ApiClient, _unverified_issuer(client_assertion))
    if client is None or client.revoked_at is not None:
        raise InvalidClient
    try:
        claims = jwt.decode(client_assertion, _import_public(client.public_jwk), algorithms=ALGORITHMS).claims
    except (JoseError, ValueError):
        raise InvalidClient from None
    now = utcnow()
    expires = _timestamp(claims.get("exp"))
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if (
        claims.get("iss") != str(client.id)
        or claims.get("sub") != str(client.id)
        or token_url not in audiences
        or not now < expires <= now + ASSERTION_MAX_LIFETIME
    ):
        raise InvalidClient
    jti = claims.get("jti")
    _spend_jti(session, _jti_key("assertion", jti, "invalid_client"), expires, "invalid_client")
    requested = set(scope.split()) if scope else set(client.scopes)
    if not requested <= set(client.scopes):
        raise InvalidClient("invalid_scope")
    token = secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            token_hash=hashlib.sha256(token.encode()).digest(),
            client_id=client.id,
            jkt=jkt,
            scopes=sorted(requested),
            expires_at=now + TOKEN_LIFETIME,
        )
    )
    session.flush()
    return IssuedToken(token, int(TOKEN_LIFETIME.total_seconds()), " ".join(sorted(requested)))


def _unverified_issuer(assertion: str) -> uuid.UUID:
    try:
        segment = assertion.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
        return uuid.UUID(str(claims["iss"]))
    except (ValueError, IndexError, KeyError, TypeError):
        raise InvalidClient from None


@dataclass(frozen=True)
class _Client:
    id: uuid.UUID
    establishment_id: uuid.UUID


@dataclass(frozen=True)
class ApiCaller:
    client_id: uuid.UUID
    establishment_id: uuid.UUID
    scopes: tuple[str, ...]
    acting_professional: str  # the RPPS of the establishment's professional the call acts for
    professional_id: uuid.UUID  # and that professional's internal id


def authenticate_call(
    session: Session,
    keystore: Keystore,
    *,
    authorization: str | None,
    dpop_proof: str | None,
    method: str,
    url: str,
    acting_for: str | None,
) -> ApiCaller:
    """Every API call: a live token, a fresh proof by its key, and the professional it acts for."""
    if not authorization or not authorization.startswith("DPoP "):
        raise InvalidClient("invalid_token")
    token = authorization.removeprefix("DPoP ").strip()
    # The proof is checked first (no I/O), so that the token's lookup and the proof's jti
    # take one round trip; a bad token is still told before a bad proof.
    try:
        proof: _Proof | InvalidClient = _checked_proof(dpop_proof, method=method, url=url, access_token=token)
    except InvalidClient as error:
        proof = error
    token_hash = hashlib.sha256(token.encode()).digest()
    known = _clients_of_tokens.get(token_hash)
    # The professional named, when the token's client (and so its establishment) is known and
    # the professional was found here lately: a peek at what was kept, never a query or a
    # decryption for a caller not yet authenticated.
    early = (
        _acting_professional(session, keystore, acting_for, known.establishment_id, kept_only=True)
        if known is not None and isinstance(proof, _Proof) else None
    )  # fmt: skip
    counts = None
    if isinstance(proof, _Proof):
        _sweep_jtis(session)
        if known is not None and early is not None:  # token, proof and counts in one statement
            counts = ratelimit.counting(*_api_limits(known, early))
            ratelimit.sweep_now_and_then(session, counts.now)
            row = raw.fetch_one(session, BEARER_COUNTED, {
                "jti": proof.jti, "jti_expires": proof.expires_at, "token": token_hash, "client": known.id,
                "jkt": proof.jkt, "now": counts.now, **counts.params,
            })  # fmt: skip
        else:
            row = raw.fetch_one(session, BEARER_LOOKUP, (proof.jti, proof.expires_at, token_hash))
    else:  # no proof to spend: the token alone
        row = raw.fetch_one(session, BEARER_ONLY, (token_hash,))
    if row is None:
        raise InvalidClient("invalid_token")
    client_id, token_jkt, scopes, expires_at, establishment_id, revoked_at, fresh = row[:7]
    if counts is not None:
        raw.commit(session)  # the counts with the spent jti, before any refusal
    if client_id is None or expires_at <= utcnow():
        raise InvalidClient("invalid_token")
    if isinstance(proof, InvalidClient):
        raise proof
    if not fresh or proof.jkt != token_jkt:  # replayed, or signed by another key than the token's
        raise InvalidClient("invalid_dpop_proof")
    if revoked_at is not None:
        raise InvalidClient("invalid_token")
    client = _Client(client_id, establishment_id)
    if counts is not None:
        assert early is not None
        if client != known or row[7] is None:  # a token's client never changes: kept wrong, not trusted
            raise InvalidClient("invalid_token")
        ratelimit.refuse_if_spent(counts, list(row[7]), list(row[8]))
        return ApiCaller(client.id, client.establishment_id, tuple(scopes), str(acting_for), early)
    professional_id = _acting_professional(session, keystore, acting_for, client.establishment_id)
    if professional_id is None:
        raise InvalidClient("invalid_request")
    if len(_clients_of_tokens) >= CLIENTS_OF_TOKENS_KEPT:
        _clients_of_tokens.clear()
    _clients_of_tokens[token_hash] = client
    # Committed at once, with the proof's spent jti: a refused call still spends both.
    ratelimit.hit_all(session, list(_api_limits(client, professional_id)))
    return ApiCaller(client.id, client.establishment_id, tuple(scopes), str(acting_for), professional_id)


def _api_limits(client: _Client, professional_id: uuid.UUID) -> tuple[tuple[Limit, str], tuple[Limit, str]]:
    """An API call counts against its client and the professional it acts for: one stolen
    client key, or one professional named by many clients, hits a ceiling either way."""
    professional = f"professional:{professional_id}"
    return (ratelimit.API_CLIENT, f"client:{client.id}"), (ratelimit.API_PROFESSIONAL, professional)


def _acting_professional(
    session: Session, keystore: Keystore, acting_for: str | None, establishment_id: uuid.UUID,
    *, kept_only: bool = False,
) -> uuid.UUID | None:  # fmt: skip
    """Calls name the professional of this establishment they act for (audit and limits count
    per professional): an RPPS registered and practising here. With `kept_only`, only if found
    lately (no query, no decryption: the caller is not yet authenticated)."""
    if not acting_for or len(acting_for) > 11:
        return None
    if kept_only:
        return registry.kept_practising_professional(acting_for, establishment_id)
    return registry.practising_professional(session, keystore, identifier=acting_for,
                                            establishment_id=establishment_id)  # fmt: skip
