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
    return at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


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


def encode_reference(event: AuditEvent) -> bytes:
    """The canonical bytes of version 1, by the definition: `as_document` written by `json`
    with sorted keys, no whitespace, UTF-8. `encode` writes the same bytes faster."""
    return json.dumps(as_document(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


_string = json.encoder.encode_basestring  # quotes and escapes exactly as json.dumps(ensure_ascii=False)


def _text_or_null(value: str | None) -> str:
    return "null" if value is None else _string(value)


def _uuid_or_null(value: uuid.UUID | None) -> str:
    return "null" if value is None else f'"{value}"'


def encode(event: AuditEvent) -> bytes:
    """The canonical bytes of version 1 (identical to `encode_reference`, which a test checks):
    the keys of `as_document` are fixed, so they are written in their sorted order directly
    rather than through a dictionary and a sort — this runs once per audited access."""
    actor = event.actor
    network = event.network
    fields = ",".join(_string(name) for name in sorted(event.fields))
    detail = ",".join(f"{_string(key)}:{_string(value)}" for key, value in dict(sorted(event.detail)).items())
    count = "null" if event.count is None else int.__repr__(event.count)
    return (
        f'{{"account":{_uuid_or_null(actor.account_id)}'
        f',"acting_professional":{_uuid_or_null(actor.acting_professional_id)}'
        f',"action":{_string(event.action)}'
        f',"api_client":{_uuid_or_null(actor.api_client_id)}'
        f',"at":"{timestamp(event.at)}"'
        f',"count":{count}'
        f',"decision":{_string(event.decision)}'
        f',"detail":{{{detail}}}'
        f',"establishment":{_uuid_or_null(actor.establishment_id)}'
        f',"fields":[{fields}]'
        f',"id":"{event.event_id}"'
        f',"insurer":{_uuid_or_null(actor.insurer_id)}'
        f',"ip":{_text_or_null(network.ip_sealed)}'
        f',"network":{_text_or_null(network.prefix_hash)}'
        f',"passkey":{_uuid_or_null(actor.passkey_id)}'
        f',"purpose":{_string(event.purpose)}'
        f',"reason":{_text_or_null(event.reason)}'
        f',"request":{_text_or_null(event.request_id)}'
        f',"role":{_text_or_null(actor.role)}'
        f',"subject":{_uuid_or_null(event.subject_id)}'
        f',"subject_kind":{_text_or_null(event.subject_kind)}'
        f',"v":{VERSION}}}'
    ).encode()


def decode(body: bytes) -> dict[str, Any]:
    """Read stored bytes back (they are kept verbatim; this never re-encodes them)."""
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("v") != VERSION:
        raise ValueError("not an audit event of version 1")
    return document
