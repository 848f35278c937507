"""Who may do what. Permissions are declared on the service functions themselves
(`@requires(...)`) and checked there, so the portal, the API and the CLI cannot diverge; a
route only passes the caller along.

Step-up: some actions need a passkey assertion made in the last five minutes (adding a
passkey, issuing invitations, creating API clients, changing an IBAN, incident actions)."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from enum import StrEnum
from typing import Any, ParamSpec, Protocol, TypeVar

STEP_UP_WINDOW = dt.timedelta(minutes=5)


class Permission(StrEnum):
    OWN_ACCOUNT = "account:own"  # own passkeys, sessions, security events
    INVITE_IN_ESTABLISHMENT = "invitation:establishment"  # professionals and admins of one's establishment
    INVITE_ANYONE = "invitation:any"
    MANAGE_API_CLIENTS = "api-client:establishment"  # practice software of one's establishment
    CHANGE_OWN_IBAN = "professional:own-iban"
    MANAGE_ACCOUNTS = "account:manage"  # disable accounts, revoke their sessions
    TENANT_REGISTRY_READ = "registry:tenant-read"  # an insurer's own registry, through row-level security
    BREAK_GLASS = "personal-data:break-glass"
    SECURITY_EVENTS_ALL = "security:events-all"
    AUDIT_SUBJECT_ACCESS = "audit:subject-access"  # "who accessed my data?" (Article 15)
    AUDIT_SCOPE = "audit:what-seen"  # "what did these accounts see?" (breach scoping)
    AUDIT_PROOFS = "audit:proofs"  # checkpoints and proofs, for auditors


ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    "professional": frozenset({Permission.OWN_ACCOUNT, Permission.CHANGE_OWN_IBAN}),
    "establishment_admin": frozenset(
        {Permission.OWN_ACCOUNT, Permission.INVITE_IN_ESTABLISHMENT, Permission.MANAGE_API_CLIENTS}
    ),
    "insurer_staff": frozenset(
        {
            Permission.OWN_ACCOUNT,
            Permission.TENANT_REGISTRY_READ,
            Permission.BREAK_GLASS,
            Permission.AUDIT_SUBJECT_ACCESS,
            Permission.AUDIT_PROOFS,
        }
    ),
    "platform_operator": frozenset(
        {
            Permission.OWN_ACCOUNT,
            Permission.INVITE_ANYONE,
            Permission.MANAGE_ACCOUNTS,
            Permission.BREAK_GLASS,
            Permission.AUDIT_PROOFS,
        }
    ),
    "security_officer": frozenset(
        {
            Permission.OWN_ACCOUNT,
            Permission.MANAGE_ACCOUNTS,
            Permission.SECURITY_EVENTS_ALL,
            Permission.AUDIT_SCOPE,
            Permission.AUDIT_PROOFS,
        }
    ),
    "dpo": frozenset(
        {
            Permission.OWN_ACCOUNT,
            Permission.SECURITY_EVENTS_ALL,
            Permission.AUDIT_SUBJECT_ACCESS,
            Permission.AUDIT_SCOPE,
            Permission.AUDIT_PROOFS,
        }
    ),
}


class Actor(Protocol):
    @property
    def role(self) -> str: ...

    @property
    def step_up_at(self) -> dt.datetime | None: ...


class Forbidden(Exception):
    """The caller's role does not allow this action."""

    def __init__(self, permission: str, *, audited: bool = False) -> None:
        super().__init__(f"not allowed: {permission}")
        self.permission = permission
        self.audited = audited  # already recorded, with more detail, by the service itself


class StepUpRequired(Exception):
    """The action needs a fresh passkey assertion (at most five minutes old)."""

    def __init__(self) -> None:
        super().__init__("confirm with your passkey first")


def allowed(actor: Actor, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(actor.role, frozenset())


def check(actor: Actor, *permissions: Permission, step_up: bool = False, now: dt.datetime | None = None) -> None:
    for permission in permissions:
        if not allowed(actor, permission):
            raise Forbidden(permission)
    if step_up:
        now = now or dt.datetime.now(dt.UTC)
        if actor.step_up_at is None or now - actor.step_up_at > STEP_UP_WINDOW:
            raise StepUpRequired


P = ParamSpec("P")
R = TypeVar("R")


def requires(*permissions: Permission, step_up: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare and enforce what a service function needs; the caller is its `actor` keyword."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            actor: Any = kwargs.get("actor")
            if actor is None:
                raise Forbidden("an actor is required")
            try:
                check(actor, *permissions, step_up=step_up)
                return function(*args, **kwargs)
            except (Forbidden, StepUpRequired) as refusal:
                # A refused attempt is an event too, when the call is audited.
                recorder: Any = kwargs.get("audit")
                if recorder is not None and not getattr(refusal, "audited", False):
                    recorder.refused(function.__name__, purpose="access-control", reason=str(refusal))
                raise

        guarded.required_permissions = frozenset(permissions)  # type: ignore[attr-defined]
        guarded.requires_step_up = step_up  # type: ignore[attr-defined]
        return guarded

    return decorate
