"""Identity tables. This first part binds insurer staff to their tenant in the database itself."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    String,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from rempart.db.base import Base, Timestamped, new_id


class TenantRole(Base, Timestamped):
    """The PostgreSQL login role an insurer's staff connect as, and the insurer it is bound to.

    Row-level security reads this mapping through `session_user`, which a session cannot
    change (SET ROLE changes `current_user` only, and tenant roles are members of nothing
    but the privilege group `rempart_tenant`)."""

    __tablename__ = "tenant_roles"

    role_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    insurer_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("insurers.id"), unique=True)


ROLES = (
    "professional",
    "establishment_admin",
    "insurer_staff",
    "platform_operator",
    "security_officer",
    "dpo",
)


class Account(Base, Timestamped):
    """Someone who can log in. No password column exists: every way in ends in a passkey or a
    federated login. Holds no name: what is shown is the role and what it is bound to."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            "role IN ('professional', 'establishment_admin', 'insurer_staff', 'platform_operator',"
            " 'security_officer', 'dpo')",
            name="role",
        ),
        CheckConstraint("role <> 'insurer_staff' OR insurer_id IS NOT NULL", name="staff_tenant"),
        CheckConstraint("role <> 'professional' OR professional_id IS NOT NULL", name="professional"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    role: Mapped[str] = mapped_column(String(30))
    professional_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("professionals.id"))
    establishment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("establishments.id"))
    insurer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("insurers.id"))
    disabled_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # After a recovery code is used the account works under reduced limits for a day.
    reduced_limits_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Passkey(Base, Timestamped):
    __tablename__ = "passkeys"
    __table_args__ = (Index("ix_passkeys_account", "account_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(BigInteger)
    backup_eligible: Mapped[bool]
    backup_state: Mapped[bool]
    name: Mapped[str] = mapped_column(String(60))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSession(Base, Timestamped):
    """A server-side session. The cookie holds a 256-bit random token; only its hash is stored."""

    __tablename__ = "login_sessions"
    __table_args__ = (Index("ix_login_sessions_account", "account_id"),)

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    passkey_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("passkeys.id"))
    method: Mapped[str] = mapped_column(String(20))
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    step_up_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # The billing entity this session acts for, when the login named several (federation).
    establishment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("establishments.id"))
    establishment_choices: Mapped[list[str] | None] = mapped_column(JSONB)


class Invitation(Base, Timestamped):
    """A single-use, short-lived link to enrol a passkey for a new account (only its hash is kept)."""

    __tablename__ = "invitations"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    role: Mapped[str] = mapped_column(String(30))
    professional_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("professionals.id"))
    establishment_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("establishments.id"))
    insurer_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("insurers.id"))
    issued_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))


class Ceremony(Base, Timestamped):
    """A WebAuthn challenge waiting for its answer (single use, five minutes)."""

    __tablename__ = "webauthn_ceremonies"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    challenge: Mapped[bytes] = mapped_column(LargeBinary)
    invitation_hash: Mapped[bytes | None] = mapped_column(LargeBinary)
    user_handle: Mapped[bytes | None] = mapped_column(LargeBinary)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class SecurityEvent(Base):
    """What happened to an account, shown to its holder (logins, failures, passkeys, sessions)."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_account", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(40))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class RecoveryCode(Base, Timestamped):
    """One of ten single-use recovery codes: `<selector>-<secret>`; the selector finds the row,
    the secret is checked against its argon2id hash. A code only lets its holder register a
    new passkey."""

    __tablename__ = "recovery_codes"

    selector: Mapped[str] = mapped_column(String(12), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Notice(Base, Timestamped):
    """A message for an account holder (shown in the portal; mail delivery comes later)."""

    __tablename__ = "notices"
    __table_args__ = (Index("ix_notices_account", "account_id"),)

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(40))
    text: Mapped[str] = mapped_column(String(500))
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class BreakGlassGrant(Base, Timestamped):
    """Time-limited access of one staff member to one beneficiary's personal data, with the
    written reason; every grant alerts the security officers."""

    __tablename__ = "break_glass_grants"
    __table_args__ = (Index("ix_break_glass_account", "account_id", "beneficiary_id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    account_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("accounts.id"))
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"))
    reason: Mapped[str] = mapped_column(String(1000))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class ApiClient(Base, Timestamped):
    """Practice software of one establishment: authenticates with `private_key_jwt` (its
    public key registered here), gets short-lived DPoP-bound access tokens."""

    __tablename__ = "api_clients"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    establishment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("establishments.id"))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONB)
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("accounts.id"))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ApiToken(Base, Timestamped):
    """An access token (hash only), bound to the DPoP key that asked for it (`jkt`)."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    client_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_clients.id"))
    jkt: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[str]] = mapped_column(JSONB)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class SeenJti(Base):
    """JWT ids already used (client assertions, DPoP proofs): a replay is refused."""

    __tablename__ = "seen_jtis"

    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class OidcFlow(Base, Timestamped):
    """A federated login under way: the state (hashed), its nonce and PKCE verifier."""

    __tablename__ = "oidc_flows"

    state_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
