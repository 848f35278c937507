"""Identity use cases: invitations, passkey enrolment and login, sessions.

There is no password anywhere. An account comes into being only by registering a passkey
from a single-use invitation; a session comes only from a passkey assertion verified
against this platform's RP ID and origin (so an assertion relayed from a look-alike site
fails). Failures all give the same `AuthenticationFailed`, whatever went wrong, so nothing
can be learnt about which accounts or credentials exist.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from rempart.audit.events import Actor
from rempart.audit.service import RequestContext
from rempart.db.base import utcnow
from rempart.guard import ratelimit
from rempart.identity.models import (
    ROLES,
    Account,
    Ceremony,
    Invitation,
    LoginSession,
    Notice,
    Passkey,
    RecoveryCode,
    SecurityEvent,
)
from rempart.identity.permissions import Forbidden, Permission, allowed, check, requires
from rempart.settings import Settings

CEREMONY_SECONDS = 300
TOKEN_BYTES = 32  # 256-bit tokens for sessions, invitations and ceremonies


class AuthenticationFailed(Exception):
    """The one answer to every failed ceremony: it says nothing about why."""

    def __init__(self) -> None:
        super().__init__("authentication failed")


class InvitationError(ValueError):
    pass


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def record_event(session: Session, account_id: uuid.UUID | None, kind: str, **detail: Any) -> None:
    session.add(SecurityEvent(account_id=account_id, kind=kind, detail=detail))


# -- invitations ---------------------------------------------------------------------------


def issue_invitation(
    session: Session,
    settings: Settings,
    *,
    role: str,
    professional_id: uuid.UUID | None = None,
    establishment_id: uuid.UUID | None = None,
    insurer_id: uuid.UUID | None = None,
    issued_by: uuid.UUID | None = None,
) -> str:
    """A single-use invitation token; the link is `<origin>/enrol#<token>` (a fragment never
    reaches server logs or Referer headers)."""
    if role not in ROLES:
        raise InvitationError(f"unknown role {role!r}")
    if role == "professional" and professional_id is None:
        raise InvitationError("a professional's invitation names the professional")
    if role == "insurer_staff" and insurer_id is None:
        raise InvitationError("an insurer staff invitation names the insurer")
    token = _new_token()
    session.add(
        Invitation(
            token_hash=_hash(token),
            role=role,
            professional_id=professional_id,
            establishment_id=establishment_id,
            insurer_id=insurer_id,
            issued_by=issued_by,
            expires_at=utcnow() + dt.timedelta(hours=settings.invitation_hours),
        )
    )
    session.flush()
    return token


def invitation_link(settings: Settings, token: str) -> str:
    return f"{settings.portal_origin}/enrol#{token}"


# -- registration ----------------------------------------------------------------------------


def _registration_ceremony(
    session: Session,
    settings: Settings,
    *,
    kind: str,
    user_id: uuid.UUID,
    role: str,
    exclude: list[bytes] | None = None,
    **ceremony_fields: Any,
) -> tuple[str, str]:
    """Options for creating a passkey (user verification and a resident key required), and the
    single-use ceremony that will check the answer. The WebAuthn user handle is the account id."""
    options = generate_registration_options(
        rp_id=settings.webauthn_rp_id,
        rp_name=settings.webauthn_rp_name,
        user_id=user_id.bytes,
        user_name=f"{role}-{user_id.hex[:8]}",
        user_display_name=f"Rempart · {role}",
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude or []],
        timeout=CEREMONY_SECONDS * 1000,
    )
    return _new_ceremony(
        session, kind, options.challenge, user_handle=user_id.bytes, **ceremony_fields
    ), options_to_json(options)


def _new_ceremony(session: Session, kind: str, challenge: bytes, **fields: Any) -> str:
    token = _new_token()
    session.add(
        Ceremony(
            token_hash=_hash(token),
            kind=kind,
            challenge=challenge,
            expires_at=utcnow() + dt.timedelta(seconds=CEREMONY_SECONDS),
            **fields,
        )
    )
    session.flush()
    return token


def begin_registration(session: Session, settings: Settings, *, invitation_token: str) -> tuple[str, str]:
    """Start enrolling a passkey from an invitation: returns (ceremony token, options JSON)."""
    invitation = session.get(Invitation, _hash(invitation_token))
    if invitation is None or invitation.used_at is not None or invitation.expires_at <= utcnow():
        raise AuthenticationFailed
    return _registration_ceremony(
        session, settings, kind="register", user_id=uuid.uuid4(), role=invitation.role,
        invitation_hash=invitation.token_hash,
    )  # fmt: skip


def _take_ceremony(session: Session, token: str | None, kind: str) -> Ceremony:
    if not token:
        raise AuthenticationFailed
    ceremony = session.get(Ceremony, _hash(token), with_for_update=True)
    if ceremony is None or ceremony.kind != kind or ceremony.used_at is not None or ceremony.expires_at <= utcnow():
        raise AuthenticationFailed
    ceremony.used_at = utcnow()
    return ceremony


@dataclass(frozen=True)
class NewSession:
    token: str
    account_id: uuid.UUID


def finish_registration(
    session: Session, settings: Settings, *, ceremony_token: str | None, credential: str, passkey_name: str
) -> NewSession:
    ceremony = _take_ceremony(session, ceremony_token, "register")
    assert ceremony.invitation_hash is not None and ceremony.user_handle is not None
    invitation = session.get(Invitation, ceremony.invitation_hash, with_for_update=True)
    if invitation is None or invitation.used_at is not None or invitation.expires_at <= utcnow():
        raise AuthenticationFailed
    verified = _verify_registration(session, settings, ceremony, credential)  # before anything is created
    account = Account(
        id=uuid.UUID(bytes=ceremony.user_handle),
        role=invitation.role,
        professional_id=invitation.professional_id,
        establishment_id=invitation.establishment_id,
        insurer_id=invitation.insurer_id,
    )
    session.add(account)
    session.flush()
    passkey = _store_passkey(session, verified, account.id, passkey_name)
    invitation.used_at = utcnow()
    invitation.account_id = account.id
    session.flush()
    return _open_session(session, settings, account, passkey, method="passkey")


def _verify_registration(session: Session, settings: Settings, ceremony: Ceremony, credential: str) -> Any:
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=ceremony.challenge,
            expected_rp_id=settings.webauthn_rp_id,
            expected_origin=settings.portal_origin,
            require_user_verification=True,
        )
    except Exception:
        record_event(session, None, "passkey_registration_refused")
        raise AuthenticationFailed from None
    # Credential ids are chosen by the authenticator: a duplicate is refused, not a crash.
    if session.scalars(select(Passkey.id).where(Passkey.credential_id == verified.credential_id)).first():
        raise AuthenticationFailed
    return verified


def _store_passkey(session: Session, verified: Any, account_id: uuid.UUID, name: str) -> Passkey:
    passkey = Passkey(
        account_id=account_id,
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        backup_eligible=verified.credential_device_type == "multi_device",
        backup_state=verified.credential_backed_up,
        name=(name.strip() or "Passkey")[:60],
    )
    session.add(passkey)
    session.flush()
    record_event(session, account_id, "passkey_added", passkey=str(passkey.id), name=passkey.name)
    return passkey


def _register_passkey(
    session: Session, settings: Settings, ceremony: Ceremony, credential: str, account_id: uuid.UUID, name: str
) -> Passkey:
    return _store_passkey(session, _verify_registration(session, settings, ceremony, credential), account_id, name)


# -- login -----------------------------------------------------------------------------------


def begin_login(session: Session, settings: Settings) -> tuple[str, str]:
    """Options for a discoverable-credential login (no user name asked: nothing to enumerate)."""
    options = generate_authentication_options(
        rp_id=settings.webauthn_rp_id,
        user_verification=UserVerificationRequirement.REQUIRED,
        timeout=CEREMONY_SECONDS * 1000,
    )
    return _new_ceremony(session, "login", options.challenge), options_to_json(options)


def _verify_assertion(
    session: Session, settings: Settings, ceremony: Ceremony, credential: str
) -> tuple[Passkey, Account]:
    try:
        credential_id = base64url_to_bytes(json.loads(credential)["rawId"])
    except (ValueError, KeyError, TypeError):
        raise AuthenticationFailed from None
    passkey = session.scalars(select(Passkey).where(Passkey.credential_id == credential_id)).one_or_none()
    if passkey is None or passkey.revoked_at is not None:
        record_event(session, None, "login_failed")
        raise AuthenticationFailed
    account = session.get_one(Account, passkey.account_id)
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=ceremony.challenge,
            expected_rp_id=settings.webauthn_rp_id,
            expected_origin=settings.portal_origin,
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except Exception:
        record_event(session, account.id, "login_failed", passkey=str(passkey.id))
        raise AuthenticationFailed from None
    if account.disabled_at is not None:
        record_event(session, account.id, "login_failed", reason="account disabled")
        raise AuthenticationFailed
    # A signature counter that goes backwards means a cloned authenticator (synced passkeys
    # report 0 and are exempt).
    if verified.new_sign_count and verified.new_sign_count <= passkey.sign_count:
        record_event(session, account.id, "passkey_clone_suspected", passkey=str(passkey.id))
        raise AuthenticationFailed
    passkey.sign_count = verified.new_sign_count
    passkey.backup_state = verified.credential_backed_up
    passkey.last_used_at = utcnow()
    return passkey, account


def finish_login(session: Session, settings: Settings, *, ceremony_token: str | None, credential: str) -> NewSession:
    ceremony = _take_ceremony(session, ceremony_token, "login")
    passkey, account = _verify_assertion(session, settings, ceremony, credential)
    return _open_session(session, settings, account, passkey, method="passkey")


# -- step-up and passkey management ------------------------------------------------------


def _account_passkeys(session: Session, account_id: uuid.UUID) -> list[Passkey]:
    return list(session.scalars(select(Passkey).where(Passkey.account_id == account_id, Passkey.revoked_at.is_(None))))


def begin_step_up(session: Session, settings: Settings, *, actor: CurrentUser) -> tuple[str, str]:
    """A fresh assertion from one of the actor's own passkeys, for sensitive actions."""
    options = generate_authentication_options(
        rp_id=settings.webauthn_rp_id,
        user_verification=UserVerificationRequirement.REQUIRED,
        allow_credentials=[
            PublicKeyCredentialDescriptor(id=p.credential_id) for p in _account_passkeys(session, actor.account_id)
        ],
        timeout=CEREMONY_SECONDS * 1000,
    )
    return _new_ceremony(session, "stepup", options.challenge, account_id=actor.account_id), options_to_json(options)


def finish_step_up(
    session: Session, settings: Settings, *, actor: CurrentUser, ceremony_token: str | None, credential: str
) -> None:
    ceremony = _take_ceremony(session, ceremony_token, "stepup")
    if ceremony.account_id != actor.account_id:
        raise AuthenticationFailed
    passkey, account = _verify_assertion(session, settings, ceremony, credential)
    if account.id != actor.account_id:
        raise AuthenticationFailed
    row = session.get_one(LoginSession, actor.session_key)
    row.step_up_at = utcnow()
    record_event(session, account.id, "step_up", passkey=str(passkey.id))


@requires(Permission.OWN_ACCOUNT, step_up=True)
def begin_add_passkey(session: Session, settings: Settings, *, actor: CurrentUser) -> tuple[str, str]:
    existing = [p.credential_id for p in _account_passkeys(session, actor.account_id)]
    return _registration_ceremony(
        session, settings, kind="add", user_id=actor.account_id, role=actor.role, exclude=existing,
        account_id=actor.account_id,
    )  # fmt: skip


@requires(Permission.OWN_ACCOUNT, step_up=True)
def finish_add_passkey(
    session: Session, settings: Settings, *, actor: CurrentUser, ceremony_token: str | None, credential: str, name: str
) -> uuid.UUID:
    ceremony = _take_ceremony(session, ceremony_token, "add")
    if ceremony.account_id != actor.account_id:
        raise AuthenticationFailed
    passkey = _register_passkey(session, settings, ceremony, credential, actor.account_id, name)
    return passkey.id


@requires(Permission.OWN_ACCOUNT, step_up=True)
def revoke_passkey(session: Session, *, actor: CurrentUser, passkey_id: uuid.UUID) -> None:
    passkeys = _account_passkeys(session, actor.account_id)
    target = next((p for p in passkeys if p.id == passkey_id), None)
    if target is None:
        raise Forbidden("not your passkey")
    if len(passkeys) == 1:
        raise Forbidden("the last passkey of an account cannot be revoked: add another one first")
    target.revoked_at = utcnow()
    record_event(session, actor.account_id, "passkey_revoked", passkey=str(passkey_id), name=target.name)


def _practises_at(session: Session, professional_id: uuid.UUID | None, establishment_id: uuid.UUID | None) -> bool:
    from rempart.registry.models import Practice

    if professional_id is None or establishment_id is None:
        return False
    return session.get(Practice, (professional_id, establishment_id)) is not None


def issue_invitation_as(
    session: Session,
    settings: Settings,
    *,
    actor: CurrentUser,
    role: str,
    professional_id: uuid.UUID | None = None,
    establishment_id: uuid.UUID | None = None,
    insurer_id: uuid.UUID | None = None,
) -> str:
    """An invitation issued by a person: operators invite anyone; an establishment
    administrator invites professionals and administrators of their own establishment only.
    Either way the issuer confirms with a passkey first (step-up)."""
    if allowed(actor, Permission.INVITE_ANYONE):
        check(actor, Permission.INVITE_ANYONE, step_up=True)
    else:
        check(actor, Permission.INVITE_IN_ESTABLISHMENT, step_up=True)
        if role not in ("professional", "establishment_admin") or establishment_id != actor.establishment_id:
            raise Forbidden("an establishment administrator invites for their own establishment only")
        if role == "professional" and not _practises_at(session, professional_id, establishment_id):
            raise Forbidden("this professional does not practise in your establishment")
    spend_sensitive_quota(session, actor)
    token = issue_invitation(
        session, settings, role=role, professional_id=professional_id, establishment_id=establishment_id,
        insurer_id=insurer_id, issued_by=actor.account_id,
    )  # fmt: skip
    record_event(session, actor.account_id, "invitation_issued", role=role)
    return token


# -- sessions --------------------------------------------------------------------------------


def _open_session(
    session: Session,
    settings: Settings,
    account: Account,
    passkey: Passkey | None,
    *,
    method: str,
    establishment_id: uuid.UUID | None = None,
    choices: list[uuid.UUID] | None = None,
) -> NewSession:
    token = _new_token()
    now = utcnow()
    session.add(
        LoginSession(
            token_hash=_hash(token),
            account_id=account.id,
            passkey_id=passkey.id if passkey else None,
            method=method,
            last_seen_at=now,
            expires_at=now + dt.timedelta(hours=settings.session_absolute_hours),
            # Only a passkey assertion counts as a fresh confirmation (not a federated login,
            # not a recovery code).
            step_up_at=now if method == "passkey" else None,
            establishment_id=establishment_id,
            establishment_choices=[str(c) for c in choices] if choices else None,
        )
    )
    record_event(session, account.id, "login", method=method)
    session.flush()
    return NewSession(token, account.id)


@dataclass(frozen=True)
class CurrentUser:
    account_id: uuid.UUID
    role: str
    professional_id: uuid.UUID | None
    establishment_id: uuid.UUID | None
    insurer_id: uuid.UUID | None
    session_started: dt.datetime
    step_up_at: dt.datetime | None
    session_key: bytes
    must_choose_establishment: bool = False
    reduced_limits_until: dt.datetime | None = None
    passkey_id: uuid.UUID | None = None

    def audit_context(self, *, ip: str | None, request_id: str | None) -> RequestContext:
        """Who this is, for the audit log: account, role, establishment, insurer, passkey used."""
        actor = Actor(
            account_id=self.account_id, role=self.role, establishment_id=self.establishment_id,
            insurer_id=self.insurer_id, passkey_id=self.passkey_id,
        )  # fmt: skip
        return RequestContext(actor, ip=ip, request_id=request_id)


def spend_sensitive_quota(session: Session, actor: CurrentUser) -> None:
    """Count a sensitive action against the actor's hourly allowance (reduced after a recovery)."""
    ratelimit.hit_account(session, ratelimit.SENSITIVE, actor.account_id, reduced_until=actor.reduced_limits_until)


def authenticate(
    session: Session, settings: Settings, *, token: str | None, now: dt.datetime | None = None
) -> CurrentUser | None:
    """The account behind a session cookie, or None (expired idle or absolute, revoked, disabled)."""
    if not token:
        return None
    now = now or utcnow()
    row = session.get(LoginSession, _hash(token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if now - row.last_seen_at > dt.timedelta(minutes=settings.session_idle_minutes):
        row.revoked_at = now
        record_event(session, row.account_id, "session_expired", reason="idle")
        return None
    account = session.get_one(Account, row.account_id)
    if account.disabled_at is not None:
        return None
    row.last_seen_at = now
    return CurrentUser(
        account.id, account.role, account.professional_id, row.establishment_id or account.establishment_id,
        account.insurer_id, row.created_at, row.step_up_at, row.token_hash,
        bool(row.establishment_choices) and row.establishment_id is None, account.reduced_limits_until,
        row.passkey_id,
    )  # fmt: skip


def logout(session: Session, *, token: str | None) -> None:
    if token and (row := session.get(LoginSession, _hash(token))) is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        record_event(session, row.account_id, "logout")


def revoke_all_sessions(session: Session, *, account_id: uuid.UUID, by: uuid.UUID | None = None) -> int:
    result = session.execute(
        update(LoginSession)
        .where(LoginSession.account_id == account_id, LoginSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    record_event(session, account_id, "sessions_revoked", by=str(by) if by else None)
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def disable_account(session: Session, *, account_id: uuid.UUID, by: uuid.UUID | None = None) -> None:
    session.get_one(Account, account_id).disabled_at = utcnow()
    revoke_all_sessions(session, account_id=account_id, by=by)
    record_event(session, account_id, "account_disabled", by=str(by) if by else None)


@requires(Permission.OWN_ACCOUNT)
def revoke_session(session: Session, *, actor: CurrentUser, session_id: str) -> None:
    """End one of the actor's own sessions (its id is the hex of the token's hash)."""
    try:
        key = bytes.fromhex(session_id)
    except ValueError:
        raise Forbidden("no such session") from None
    row = session.get(LoginSession, key)
    if row is None or row.account_id != actor.account_id:
        raise Forbidden("no such session")
    row.revoked_at = row.revoked_at or utcnow()
    record_event(session, actor.account_id, "session_revoked")


@dataclass(frozen=True)
class AccountPage:
    role: str
    passkeys: list[tuple[str, str, dt.datetime, dt.datetime | None]]  # id, name, created, last used
    events: list[tuple[str, dt.datetime]]
    sessions: list[tuple[str, str, dt.datetime, dt.datetime]]  # id, method, started, last seen


def account_page(session: Session, *, account_id: uuid.UUID) -> AccountPage:
    account = session.get_one(Account, account_id)
    passkeys = session.scalars(
        select(Passkey)
        .where(Passkey.account_id == account_id, Passkey.revoked_at.is_(None))
        .order_by(Passkey.created_at)
    ).all()
    events = session.scalars(
        select(SecurityEvent).where(SecurityEvent.account_id == account_id).order_by(SecurityEvent.at.desc()).limit(20)
    ).all()
    sessions = session.scalars(
        select(LoginSession)
        .where(
            LoginSession.account_id == account_id, LoginSession.revoked_at.is_(None), LoginSession.expires_at > utcnow()
        )
        .order_by(LoginSession.created_at.desc())
    ).all()
    return AccountPage(
        account.role,
        [(str(p.id), p.name, p.created_at, p.last_used_at) for p in passkeys],
        [(e.kind, e.at) for e in events],
        [(s.token_hash.hex(), s.method, s.created_at, s.last_seen_at) for s in sessions],
    )


def demo_invitations(session: Session, settings: Settings) -> list[tuple[str, str]]:
    """Fresh single-use invitations for the demo: a pharmacist, the administrator of that
    pharmacy, staff of the first insurer, and a security officer. Returns (who, link)."""
    from rempart.registry.models import Insurer, Practice, Professional

    pharmacist = session.execute(
        select(Professional.id, Practice.establishment_id)
        .join(Practice, Practice.professional_id == Professional.id)
        .where(Professional.profession == "pharmacist")
        .order_by(Professional.created_at, Professional.id)
        .limit(1)
    ).first()
    insurer = session.scalars(select(Insurer).order_by(Insurer.amc_number).limit(1)).first()
    wanted: list[tuple[str, dict[str, Any]]] = []
    if pharmacist is not None:
        wanted.append(("pharmacien(ne)", {"role": "professional", "professional_id": pharmacist[0],
                                          "establishment_id": pharmacist[1]}))  # fmt: skip
        wanted.append(
            ("administrateur de la pharmacie", {"role": "establishment_admin", "establishment_id": pharmacist[1]})
        )
    if insurer is not None:
        wanted.append((f"personnel de {insurer.name}", {"role": "insurer_staff", "insurer_id": insurer.id}))
    wanted.append(("officier de sécurité", {"role": "security_officer"}))
    return [(who, invitation_link(settings, issue_invitation(session, settings, **spec))) for who, spec in wanted]


# -- recovery codes ----------------------------------------------------------------------------

RECOVERY_CODES = 10
REDUCED_LIMITS = dt.timedelta(days=1)
_hasher = PasswordHasher()  # argon2id, the library's current parameters


@requires(Permission.OWN_ACCOUNT, step_up=True)
def new_recovery_codes(session: Session, *, actor: CurrentUser) -> list[str]:
    """Ten fresh single-use codes, shown once; the previous set stops working."""
    spend_sensitive_quota(session, actor)
    session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.account_id == actor.account_id, RecoveryCode.used_at.is_(None))
        .values(used_at=utcnow())
    )
    codes = []
    for _ in range(RECOVERY_CODES):
        selector, secret = secrets.token_hex(6), secrets.token_urlsafe(12)
        session.add(RecoveryCode(selector=selector, account_id=actor.account_id, secret_hash=_hasher.hash(secret)))
        codes.append(f"{selector}-{secret}")
    record_event(session, actor.account_id, "recovery_codes_created")
    session.flush()
    return codes


def begin_recovery(session: Session, settings: Settings, *, code: str) -> tuple[str, str]:
    """Spend a recovery code: it opens a passkey registration for its account, nothing else.
    The holder and their administrator are told, and the account runs under reduced limits
    for a day."""
    selector, _, secret = code.strip().partition("-")
    row = session.get(RecoveryCode, selector, with_for_update=True) if selector else None
    valid = False
    if row is not None and row.used_at is None:
        try:
            valid = _hasher.verify(row.secret_hash, secret)
        except (VerifyMismatchError, InvalidHashError):
            valid = False
    else:
        _hasher.hash(secret or "x")  # same work on every path: timing says nothing
    if not valid or row is None:
        record_event(session, row.account_id if row is not None else None, "recovery_code_refused")
        raise AuthenticationFailed
    row.used_at = utcnow()
    account = session.get_one(Account, row.account_id)
    if account.disabled_at is not None:
        raise AuthenticationFailed
    account.reduced_limits_until = utcnow() + REDUCED_LIMITS
    record_event(session, account.id, "recovery_code_used")
    text = "Un code de secours de votre compte Rempart vient d'être utilisé pour enregistrer une nouvelle clé."
    session.add(Notice(account_id=account.id, kind="recovery_code_used", text=text))
    for admin_id in _administrators_of(session, account):
        session.add(Notice(account_id=admin_id, kind="recovery_code_used_by_member", text=text))
    return _registration_ceremony(
        session, settings, kind="recover", user_id=account.id, role=account.role, account_id=account.id
    )


def finish_recovery(
    session: Session, settings: Settings, *, ceremony_token: str | None, credential: str, passkey_name: str
) -> NewSession:
    ceremony = _take_ceremony(session, ceremony_token, "recover")
    assert ceremony.account_id is not None
    if session.get_one(Account, ceremony.account_id).disabled_at is not None:
        raise AuthenticationFailed
    passkey = _register_passkey(session, settings, ceremony, credential, ceremony.account_id, passkey_name)
    return _open_session(session, settings, session.get_one(Account, ceremony.account_id), passkey, method="recovery")


def _administrators_of(session: Session, account: Account) -> list[uuid.UUID]:
    """Who administers this account: its establishment's administrators, else the operators."""
    if account.establishment_id is not None:
        query = select(Account.id).where(
            Account.role == "establishment_admin",
            Account.establishment_id == account.establishment_id,
            Account.id != account.id,
        )
    else:
        query = select(Account.id).where(Account.role == "platform_operator", Account.id != account.id)
    return list(session.scalars(query.where(Account.disabled_at.is_(None))))


def notices_for(session: Session, *, account_id: uuid.UUID) -> list[str]:
    return list(
        session.scalars(select(Notice.text).where(Notice.account_id == account_id).order_by(Notice.created_at.desc()))
    )


def establishment_choices(session: Session, *, actor: CurrentUser) -> list[tuple[uuid.UUID, str]]:
    """The places of practice a federated login named, to pick the one this session acts for."""
    from rempart.registry.models import Establishment

    row = session.get_one(LoginSession, actor.session_key)
    ids = [uuid.UUID(c) for c in row.establishment_choices or []]
    names = dict(session.execute(select(Establishment.id, Establishment.name).where(Establishment.id.in_(ids))).all())
    return [(i, names[i]) for i in ids if i in names]


def choose_establishment(session: Session, *, actor: CurrentUser, establishment_id: uuid.UUID) -> None:
    row = session.get_one(LoginSession, actor.session_key)
    if str(establishment_id) not in (row.establishment_choices or []):
        raise Forbidden("not one of your places of practice")
    row.establishment_id = establishment_id
    record_event(session, actor.account_id, "establishment_chosen", establishment=str(establishment_id))


@dataclass(frozen=True)
class SecurityEventView:
    at: dt.datetime
    kind: str
    account_id: uuid.UUID | None
    role: str | None
    detail: dict[str, Any]


@requires(Permission.SECURITY_EVENTS_ALL)
def all_security_events(
    session: Session, *, actor: CurrentUser, kind: str | None = None, limit: int = 200
) -> list[SecurityEventView]:
    """Every account's security events, newest first, for security officers and the DPO.
    Events hold account ids and kinds, never personal data."""
    query = (
        select(SecurityEvent, Account.role)
        .outerjoin(Account, Account.id == SecurityEvent.account_id)
        .order_by(SecurityEvent.at.desc(), SecurityEvent.id.desc())
        .limit(max(1, min(limit, 1000)))
    )
    if kind:
        query = query.where(SecurityEvent.kind == kind)
    return [
        SecurityEventView(event.at, event.kind, event.account_id, role, dict(event.detail or {}))
        for event, role in session.execute(query).all()
    ]
