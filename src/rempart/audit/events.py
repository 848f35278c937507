"""One audit event and its canonical bytes (pure: no database, no framework).

Encoding version 1 is JSON as RFC 8785 (JCS) writes it for our value types (strings, integers,
booleans, null, lists of strings): keys sorted, no whitespace, UTF-8. Those bytes are what the
Merkle leaf hashes and what an insurer's verifier reads; they are stored as they are, never
re-encoded. Every key is always present (null when it does not apply), so two events differ
in bytes exactly when they differ in content.

An event holds no personal data in clear: people are internal ids, the network address is
encrypted (`ip`, readable by security officers) plus a keyed hash of its /24 or /48 prefix
(`network`, for matching), so the log can outlive the data it speaks of.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

VERSION = 1

# Decisions
ALLOWED = "allowed"
DENIED = "denied"
CONTAINED = "contained"  # the guard stopped a suspicious caller
DECISIONS = frozenset({ALLOWED, DENIED, CONTAINED})

# Subject kinds
BENEFICIARY = "beneficiary"
PROFESSIONAL = "professional"
SUBJECT_KINDS = frozenset({BENEFICIARY, PROFESSIONAL})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a person's account (with the passkey used), or practice software acting for a
    professional, or the platform itself (imports, key work: no account)."""

    account_id: uuid.UUID | None = None
    role: str | None = None
    establishment_id: uuid.UUID | None = None
    api_client_id: uuid.UUID | None = None
    acting_professional_id: uuid.UUID | None = None
    passkey_id: uuid.UUID | None = None
    insurer_id: uuid.UUID | None = None

    @staticmethod
    def platform(component: str) -> Actor:
        return Actor(role=f"platform:{component}")


@dataclass(frozen=True, slots=True)
class Network:
    """The caller's address as the log keeps it: sealed, and a keyed hash of its prefix."""

    ip_sealed: str | None = None  # base64 AES-GCM ciphertext
    prefix_hash: str | None = None  # hex HMAC of the /24 (IPv4) or /48 (IPv6) prefix


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: str  # what was done, e.g. "beneficiary.read", "rights.check", "import.beneficiaries"
    purpose: str  # why, e.g. "tiers-payant", "break-glass", "gdpr-article-15"
    decision: str
    actor: Actor
    at: dt.datetime
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    reason: str | None = None  # why denied or contained, or the break-glass reason's reference
    subject_kind: str | None = None
    subject_id: uuid.UUID | None = None
    fields: tuple[str, ...] = ()  # which fields were disclosed (names, never values)
    count: int | None = None  # bulk operations: how many records the batch touched
    network: Network = Network()
    request_id: str | None = None
    detail: tuple[tuple[str, str], ...] = ()  # extra non-personal facts (a file's SHA-256...)

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"decision must be one of {sorted(DECISIONS)}")
        if (self.subject_kind is None) != (self.subject_id is None):
            raise ValueError("subject_kind and subject_id go together")
        if self.subject_kind is not None and self.subject_kind not in SUBJECT_KINDS:
            raise ValueError(f"subject_kind must be one of {sorted(SUBJECT_KINDS)}")
        if self.at.tzinfo is None:
            raise ValueError("event time must be timezone-aware")


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def timestamp(at: dt.datetime) -> str:
    """UTC, microseconds, 'Z': one spelling per instant."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def as_document(event: AuditEvent) -> dict[str, Any]:
    actor = event.actor
    return {
        "v": VERSION,
        "id": str(event.event_id),
        "at": timestamp(event.at),
        "action": event.action,
        "purpose": event.purpose,
        "decision": event.decision,
        "reason": event.reason,
        "account": _text(actor.account_id),
        "role": actor.role,
        "establishment": _text(actor.establishment_id),
        "api_client": _text(actor.api_client_id),
        "acting_professional": _text(actor.acting_professional_id),
        "passkey": _text(actor.passkey_id),
        "insurer": _text(actor.insurer_id),
        "ip": event.network.ip_sealed,
        "network": event.network.prefix_hash,
        "subject_kind": event.subject_kind,
        "subject": _text(event.subject_id),
        "fields": sorted(event.fields),
        "count": event.count,
        "request": event.request_id,
        "detail": {key: value for key, value in sorted(event.detail)},
    }


def encode(event: AuditEvent) -> bytes:
    """The canonical bytes of version 1."""
    return json.dumps(as_document(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def decode(body: bytes) -> dict[str, Any]:
    """Read stored bytes back (they are kept verbatim; this never re-encodes them)."""
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise ValueError("not an audit event of version 1")
    return document
