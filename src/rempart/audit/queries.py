"""The two questions the log answers.

1. "Who accessed my data?" — every event about given subjects (`accesses_to`), the base of an
   answer to a GDPR Article 15 request.
2. "What did these accounts see?" — for accounts, API clients or networks and a time window,
   every subject whose data was returned, with the fields (`subjects_seen`), and a proof that
   the answer is complete (`prove_window`): the events of the window are re-read from their
   bytes, filtered again without any index, and their recomputed leaves, with the rest of the
   tree, must reproduce a signed checkpoint's root.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit import network, verifier
from rempart.audit.log import leaf_hash, micros
from rempart.audit.service import AUDIT_KEK, subtree_from_hints
from rempart.audit.verifier import node_hash
from rempart.crypto.keystore import Keystore
from rempart.crypto.models import PURPOSE_INDEX


@dataclass(frozen=True)
class Access:
    seq: int
    at: dt.datetime
    action: str
    purpose: str
    decision: str
    reason: str | None
    role: str | None
    account_id: str | None
    establishment_id: str | None
    api_client_id: str | None
    acting_professional_id: str | None
    subject_id: str | None
    fields: tuple[str, ...]

    @staticmethod
    def of(seq: int, document: dict[str, Any]) -> Access:
        return Access(
            seq, dt.datetime.fromisoformat(document["at"]), document["action"], document["purpose"],
            document["decision"], document["reason"], document["role"], document["account"],
            document["establishment"], document["api_client"], document["acting_professional"], document["subject"],
            tuple(document["fields"]),
        )  # fmt: skip


def accesses_to(
    session: Session, subject_ids: Sequence[uuid.UUID], *, since: dt.datetime | None = None
) -> list[Access]:
    """Every recorded access to these subjects, oldest first (denied attempts included)."""
    if not subject_ids:
        return []
    rows = session.execute(
        text(
            "SELECT seq, body FROM audit.events WHERE subject_id = ANY(:ids)"
            " AND (CAST(:since AS timestamptz) IS NULL OR at >= :since) ORDER BY seq"
        ),
        {"ids": list(subject_ids), "since": since},
    ).all()
    return [Access.of(int(seq), ev.decode(bytes(body))) for seq, body in rows]


@dataclass(frozen=True)
class Window:
    since: dt.datetime
    until: dt.datetime
    accounts: tuple[uuid.UUID, ...] = ()
    api_clients: tuple[uuid.UUID, ...] = ()
    networks: tuple[str, ...] = ()  # keyed prefix hashes (see `network_hashes`)

    def matches(self, document: dict[str, Any]) -> bool:
        return (
            (document["account"] is not None and uuid.UUID(document["account"]) in self.accounts)
            or (document["api_client"] is not None and uuid.UUID(document["api_client"]) in self.api_clients)
            or (document["network"] is not None and document["network"] in self.networks)
        )


def network_hashes(session: Session, keystore: Keystore, addresses: Sequence[str]) -> tuple[str, ...]:
    """Addresses or prefixes (`203.0.113.0/24`) to the keyed hashes the log stores."""
    secret = keystore.secret(session, AUDIT_KEK, PURPOSE_INDEX)
    return tuple(network.prefix_hash(secret, address.split("/", 1)[0]) for address in addresses)


@dataclass
class SeenSubject:
    subject_kind: str
    subject_id: str
    fields: set[str] = field(default_factory=set)
    accesses: int = 0
    first: dt.datetime | None = None
    last: dt.datetime | None = None


def subjects_seen(session: Session, window: Window) -> list[SeenSubject]:
    """Every subject whose data these callers were given in the window (allowed disclosures)."""
    rows = session.execute(
        text(
            "SELECT seq, body FROM audit.events WHERE at >= :since AND at < :until AND subject_id IS NOT NULL"
            " AND (account_id = ANY(:accounts) OR api_client_id = ANY(:clients) OR network = ANY(:networks))"
            " ORDER BY seq"
        ),
        {"since": window.since, "until": window.until, "accounts": list(window.accounts),
         "clients": list(window.api_clients), "networks": list(window.networks)},
    ).all()  # fmt: skip
    return _summarise(ev.decode(bytes(body)) for _, body in rows)


def _summarise(documents: Any) -> list[SeenSubject]:
    seen: dict[str, SeenSubject] = {}
    for document in documents:
        if document["decision"] != ev.ALLOWED or not document["fields"]:
            continue
        at = dt.datetime.fromisoformat(document["at"])
        entry = seen.setdefault(document["subject"], SeenSubject(document["subject_kind"], document["subject"]))
        entry.fields.update(document["fields"])
        entry.accesses += 1
        entry.first = at if entry.first is None else min(entry.first, at)
        entry.last = at if entry.last is None else max(entry.last, at)
    return sorted(seen.values(), key=lambda s: (s.first or dt.datetime.min.replace(tzinfo=dt.UTC), s.subject_id))


SLACK = dt.timedelta(minutes=5)  # clocks of the platform's processes may differ by less


@dataclass(frozen=True)
class Completeness:
    complete: bool
    checkpoint_size: int
    first_seq: int
    end_seq: int  # exclusive
    events_read: int
    message: str


def prove_window(session: Session, window: Window, *, checkpoint_note: str, verifier_key: str) -> Completeness:
    """Re-read every event that could belong to the window from its bytes, filter without
    indexes, and check the recomputed leaves reproduce the signed root of `checkpoint_note`.

    Which positions: sequencing times are in the leaves and never decrease along a verified
    log, and an event is sequenced after it happens; so every event of the window lies at or
    after the first position sequenced at `since - SLACK`. That position is found by bisection
    and proven by the signed time of the event just before it; everything from there to the
    checkpoint's size is read."""
    signed = verifier.open_checkpoint(checkpoint_note, verifier_key)
    threshold = micros(window.since - SLACK)

    def logged(seq: int) -> int | None:
        value = session.execute(
            text("SELECT (extract(epoch FROM logged_at) * 1000000)::int8 FROM audit.events WHERE seq = :seq"),
            {"seq": seq},
        ).scalar()
        return None if value is None else int(value)

    low, high = 0, signed.size
    while low < high:
        middle = (low + high) // 2
        value = logged(middle)
        if value is None:
            return Completeness(False, signed.size, low, high, 0, f"event #{middle} is missing from the log")
        low, high = (middle + 1, high) if value < threshold else (low, middle)
    start, end = max(low - 1, 0), signed.size
    if session.execute(text("SELECT count(*) FROM audit.events WHERE seq >= :end AND at < :until"),
                       {"end": end, "until": window.until}).scalar():  # fmt: skip
        return Completeness(False, signed.size, start, end, 0, "the window runs past the checkpoint: sign a newer one")
    rows = session.execute(
        text(
            "SELECT seq, (extract(epoch FROM logged_at) * 1000000)::int8, body FROM audit.events"
            " WHERE seq >= :a AND seq < :b ORDER BY seq"
        ),
        {"a": start, "b": end},
    ).all()
    if [int(seq) for seq, _, _ in rows] != list(range(start, end)):
        return Completeness(False, signed.size, start, end, len(rows), "events are missing or repeated in the window")
    leaves = [leaf_hash(int(seq), int(at_us), bytes(body)) for seq, at_us, body in rows]
    hints = subtree_from_hints(session)

    def subtree(a: int, b: int) -> bytes:
        if start <= a and b <= end:
            return verifier.root_from_leaf_hashes(leaves[a - start : b - start])
        if b <= start or a >= end:
            return hints(a, b)
        split = 1 << ((b - a - 1).bit_length() - 1)
        return node_hash(subtree(a, a + split), subtree(a + split, b))

    root = subtree(0, signed.size) if signed.size else verifier.EMPTY_ROOT
    if root != signed.root:
        mismatch = "the window's events do not match the signed log"
        return Completeness(False, signed.size, start, end, len(rows), mismatch)
    if low > 0 and int(rows[0][1]) >= threshold:
        return Completeness(False, signed.size, start, end, len(rows), "the window's first position is not proven")
    unindexed = _summarise(
        document
        for _, _, body in rows
        if window.matches(document := ev.decode(bytes(body)))
        and window.since <= dt.datetime.fromisoformat(document["at"]) < window.until
        and document["subject"] is not None
    )  # fmt: skip
    indexed = subjects_seen(session, window)
    same = [(s.subject_id, s.fields, s.accesses) for s in unindexed] == [
        (s.subject_id, s.fields, s.accesses) for s in indexed
    ]
    message = "complete" if same else "the indexed answer differs from the events themselves"
    return Completeness(same, signed.size, start, end, len(rows), message)
