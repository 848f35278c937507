"""Audit use cases: build events for a request, record reads (durable) and writes (staged),
sign checkpoints, serve proofs.

Every service function that discloses personal data calls `Recorder.disclosed(...)` before
returning it; the call returns only once the event is committed, and raises
`AuditUnavailable` otherwise, so a read that cannot be audited returns nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from rempart.audit import events as ev
from rempart.audit import network
from rempart.audit.checkpoint import sign_checkpoint, verifier_key_for
from rempart.audit.log import COLUMNS, NODE_LEVEL, AuditLog, AuditUnavailable, Head, Record, leaf_hash
from rempart.audit.merkle import Frontier, consistency_proof, inclusion_proof
from rempart.audit.verifier import node_hash
from rempart.crypto import fields
from rempart.crypto.keystore import Keystore
from rempart.crypto.models import PURPOSE_FIELD, PURPOSE_INDEX, PURPOSE_SIGNING

AUDIT_KEK = network.AUDIT_KEK
NETWORK_KEY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, from where, under which request id: what every event of a request shares."""

    actor: ev.Actor
    ip: str | None = None
    request_id: str | None = None


def ensure_keys(session: Session, keystore: Keystore) -> None:
    """The audit's own keys: the data key sealing addresses, the secret keying network hashes,
    the seed of the checkpoint signing key. All wrapped by the `audit` KEK of the key provider."""
    for purpose in (PURPOSE_FIELD, PURPOSE_INDEX, PURPOSE_SIGNING):
        keystore.ensure_secret(session, AUDIT_KEK, purpose)


class Auditor:
    """The platform's audit door: one per process, shared by every request."""

    def __init__(self, log: AuditLog, keystore: Keystore, sessions: sessionmaker[Session], origin: str) -> None:
        self.log = log
        self.keystore = keystore
        self.sessions = sessions
        self.origin = origin
        self._network_keys: tuple[float, Any, bytes] | None = None  # (fetched at, data key, prefix secret)

    # -- building events ------------------------------------------------------------------

    def event(
        self,
        context: RequestContext,
        action: str,
        *,
        purpose: str,
        decision: str = ev.ALLOWED,
        subject: tuple[str, uuid.UUID] | None = None,
        fields: Sequence[str] = (),
        reason: str | None = None,
        count: int | None = None,
        detail: dict[str, str] | None = None,
        at: dt.datetime | None = None,
    ) -> ev.AuditEvent:
        event_id = uuid.uuid4()
        return ev.AuditEvent(
            action=action, purpose=purpose, decision=decision, actor=context.actor,
            at=at or dt.datetime.now(dt.UTC), event_id=event_id, reason=reason,
            subject_kind=subject[0] if subject else None, subject_id=subject[1] if subject else None,
            fields=tuple(fields), count=count, network=self._network(context.ip, event_id),
            request_id=context.request_id, detail=tuple(sorted((detail or {}).items())),
        )  # fmt: skip

    def _network(self, ip: str | None, event_id: uuid.UUID) -> ev.Network:
        if not ip:
            return ev.Network()
        cached = self._network_keys
        if cached is None or time.monotonic() - cached[0] > NETWORK_KEY_SECONDS:
            with self.sessions() as session:  # a rotated audit key is picked up within a minute
                key = self.keystore.active_field_key(session, AUDIT_KEK)
                secret = self.keystore.secret(session, AUDIT_KEK, PURPOSE_INDEX)
            cached = self._network_keys = (time.monotonic(), key, secret)
        return network.seal(cached[1], cached[2], ip, event_id)

    # -- recording ------------------------------------------------------------------------

    def disclosed(self, events: Iterable[ev.AuditEvent]) -> None:
        """Reads: durable before the caller may return the data (raises AuditUnavailable)."""
        self.log.append(events)

    def for_request(self, context: RequestContext) -> Recorder:
        return Recorder(self, context)

    def for_platform(self, component: str, *, operator: str | None = None) -> Recorder:
        """The platform's own work (an import, key maintenance), started by `operator` (the
        command line's user) when there is one."""
        return Recorder(self, RequestContext(ev.Actor.platform(component), request_id=operator))


class Recorder:
    """What a service function receives to audit one request: the platform's auditor and the
    request's context (actor, address, request id) bound together."""

    def __init__(self, auditor: Auditor, context: RequestContext) -> None:
        self.auditor = auditor
        self.context = context

    def disclosed(
        self,
        action: str,
        *,
        purpose: str,
        subjects: Sequence[tuple[str, uuid.UUID]],
        fields: Sequence[str],
        detail: dict[str, str] | None = None,
    ) -> None:
        """Personal data of these subjects is about to leave the service: one event each,
        durable before this returns (AuditUnavailable otherwise: return nothing)."""
        self.auditor.disclosed(
            self.auditor.event(self.context, action, purpose=purpose, subject=subject, fields=fields, detail=detail)
            for subject in subjects
        )

    def found_nobody(self, action: str, *, purpose: str, detail: dict[str, str] | None = None) -> None:
        """A lookup that designated nobody: no subject, but an event all the same, durable
        before the answer leaves (the same path as a found one: timing tells nothing, and the
        log shows every attempt an enumeration makes)."""
        event = self.auditor.event(self.context, action, purpose=purpose, reason="not_found", detail=detail)
        self.auditor.disclosed([event])

    def refused(
        self,
        action: str,
        *,
        purpose: str,
        reason: str,
        decision: str = ev.DENIED,
        subject: tuple[str, uuid.UUID] | None = None,
    ) -> None:
        """A denied or contained attempt, recorded durably (the refusal stands even if this fails)."""
        event = self.auditor.event(
            self.context, action, purpose=purpose, decision=decision, reason=reason, subject=subject
        )
        try:
            self.auditor.disclosed([event])
        except Exception:
            return

    def wrote(
        self,
        session: Session,
        action: str,
        *,
        purpose: str,
        subject: tuple[str, uuid.UUID] | None = None,
        fields: Sequence[str] = (),
        count: int | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """A write (or bulk work): its event commits or rolls back with the caller's transaction."""
        stage(session, [self.bulk(action, purpose=purpose, subject=subject, fields=fields, count=count, detail=detail)])

    def bulk(
        self,
        action: str,
        *,
        purpose: str,
        subject: tuple[str, uuid.UUID] | None = None,
        fields: Sequence[str] = (),
        count: int | None = None,
        detail: dict[str, str] | None = None,
    ) -> ev.AuditEvent:
        """An event for the caller to stage itself (on a raw connection, with `stage_raw`)."""
        return self.auditor.event(
            self.context, action, purpose=purpose, subject=subject, fields=fields, count=count, detail=detail
        )


def stage(session: Session, events: Iterable[ev.AuditEvent]) -> None:
    """Events of a write, into `audit.pending` in the write's own transaction."""
    rows = [Record.of(event)._asdict() for event in events]
    if rows:
        try:
            session.execute(
                text(
                    f"INSERT INTO audit.pending ({COLUMNS})"
                    " VALUES (:at, :body, :account_id, :api_client_id, :network, :subject_id)"
                ),
                rows,
            )
        except DBAPIError as exc:  # the write cannot be recorded, so it does not happen (503)
            raise AuditUnavailable("the audit log could not record the write") from exc


def stage_raw(conn: psycopg.Connection[Any], events: Iterable[ev.AuditEvent]) -> None:
    """The same, on a raw psycopg connection (the feed importer's)."""
    for event in events:
        conn.execute(f"INSERT INTO audit.pending ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s)", Record.of(event))


def open_address(session: Session, keystore: Keystore, *, seq: int, audit: Recorder) -> str | None:
    """The network address an event sealed, for a security officer's investigation; the opening
    is itself an event (durable before the address is returned). None: the event had none."""
    body = session.execute(text("SELECT body FROM audit.events WHERE seq = :seq"), {"seq": seq}).scalar()
    if body is None:
        raise LookupError(f"no event {seq}")
    document = ev.decode(bytes(body))
    if not document["ip"]:
        return None
    sealed = base64.b64decode(document["ip"])
    address = network.unseal(keystore.field_key(session, fields.key_id_of(sealed)), document["ip"],
                             uuid.UUID(document["id"]))  # fmt: skip
    audit.auditor.disclosed([audit.bulk("audit.address-opened", purpose="investigation", detail={"event": str(seq)})])
    return address


# -- checkpoints ------------------------------------------------------------------------------


def signing_key(session: Session, keystore: Keystore) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keystore.secret(session, AUDIT_KEK, PURPOSE_SIGNING)[:32])


def verifier_key(session: Session, keystore: Keystore, origin: str) -> str:
    """What an insurer configures in its verifier: `<name>+<key hash>+<public key>`."""
    return verifier_key_for(origin, signing_key(session, keystore).public_key())


def head(session: Session) -> Head:
    size, frontier = session.execute(text("SELECT size, frontier FROM audit.head")).one()
    return Head(int(size), Frontier.from_bytes(bytes(frontier)).root())


def make_checkpoint(session: Session, keystore: Keystore, origin: str) -> str:
    """Sign the tree as it stands and keep the checkpoint (one per size)."""
    current = head(session)
    existing = session.execute(text("SELECT note FROM audit.checkpoints WHERE size = :size"),
                               {"size": current.size}).scalar()  # fmt: skip
    if existing is not None:
        return str(existing)
    note = sign_checkpoint(origin, current.size, current.root, origin, signing_key(session, keystore))
    session.execute(
        text("INSERT INTO audit.checkpoints (size, root, note) VALUES (:size, :root, :note) ON CONFLICT DO NOTHING"),
        {"size": current.size, "root": current.root, "note": note},
    )
    session.commit()
    return note


def checkpoints(session: Session, *, since_size: int = 0) -> list[tuple[int, bytes, str]]:
    rows = session.execute(
        text("SELECT size, root, note FROM audit.checkpoints WHERE size >= :since ORDER BY size"),
        {"since": since_size},
    ).all()
    return [(int(size), bytes(root), str(note)) for size, root, note in rows]


def latest_checkpoint(session: Session) -> tuple[int, str] | None:
    row = session.execute(text("SELECT size, note FROM audit.checkpoints ORDER BY size DESC LIMIT 1")).first()
    return None if row is None else (int(row[0]), str(row[1]))


# -- proofs -----------------------------------------------------------------------------------


def subtree_from_hints(session: Session) -> Callable[[int, int], bytes]:
    """MTH of leaves [start, end) from what the database stores: node hashes of perfect
    subtrees of 256 leaves and more, leaf hashes below. Untrusted: a proof built from a forged
    hint fails its verification, which is what a verifier must see."""

    def leaves(start: int, end: int) -> list[bytes]:
        rows = session.execute(
            text("SELECT seq, leaf FROM audit.events WHERE seq >= :a AND seq < :b ORDER BY seq"), {"a": start, "b": end}
        ).all()
        if [int(seq) for seq, _ in rows] != list(range(start, end)):
            raise LookupError(f"events {start}..{end - 1} are not all in the log")
        return [bytes(leaf) for _, leaf in rows]

    def perfect(start: int, size: int) -> bytes:
        level = size.bit_length() - 1
        if level >= NODE_LEVEL:
            stored = session.execute(
                text("SELECT hash FROM audit.nodes WHERE level = :level AND index = :index"),
                {"level": level, "index": start >> level},
            ).scalar()
            if stored is not None:
                return bytes(stored)
        return _fold(leaves(start, start + size))

    def subtree(start: int, end: int) -> bytes:
        size = end - start
        if size & (size - 1) == 0 and start % size == 0:
            return perfect(start, size)
        split = 1 << ((size - 1).bit_length() - 1)
        return node_hash(subtree(start, start + split), subtree(start + split, end))

    return subtree


def _fold(hashes: list[bytes]) -> bytes:
    """MTH of a perfect (power-of-two) list of leaf hashes."""
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    proof: list[bytes]
    logged_at_us: int | None = None  # the event itself, when the caller may see it
    body: bytes | None = None

    def subject(self) -> tuple[str, uuid.UUID] | None:
        """Whom the event is about, when it is given and about someone."""
        if self.body is None:
            return None
        document = ev.decode(self.body)
        return (document["subject_kind"], uuid.UUID(document["subject"])) if document["subject"] else None

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"index": self.index, "size": self.size, "leaf_hash": self.leaf_hash.hex(),
                                    "proof": [p.hex() for p in self.proof]}  # fmt: skip
        if self.body is not None:
            document |= {"logged_at_us": self.logged_at_us, "body": base64.b64encode(self.body).decode()}
        return document


def prove_inclusion(session: Session, *, seq: int, size: int, with_event: bool = True) -> InclusionProof:
    """`with_event=False` proves the event is there without disclosing it (for auditors who
    may not read every event: an insurer's, about other insurers' traffic)."""
    if not 0 <= seq < size:
        raise LookupError("the event must fall inside the tree")
    row = session.execute(
        text("SELECT (extract(epoch FROM logged_at) * 1000000)::int8, body FROM audit.events WHERE seq = :seq"),
        {"seq": seq},
    ).first()
    if row is None:
        raise LookupError(f"no event {seq}")
    logged, body = int(row[0]), bytes(row[1])
    proof = inclusion_proof(seq, size, subtree_from_hints(session))
    leaf = leaf_hash(seq, logged, body)
    return InclusionProof(seq, size, leaf, proof, logged if with_event else None, body if with_event else None)


def prove_consistency(session: Session, *, size1: int, size2: int) -> list[bytes]:
    if not 0 <= size1 <= size2:
        raise LookupError("sizes must satisfy 0 <= size1 <= size2")
    return consistency_proof(size1, size2, subtree_from_hints(session))
