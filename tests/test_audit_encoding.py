"""The canonical bytes of an audit event: the fast writer says exactly what the definition says.

An event's bytes are hashed into the Merkle tree and read by insurers' verifiers; a writer that
drifted from the definition (a key order, an escape, a time spelling) would still verify its
own events but contradict the documented format. Hypothesis draws events with every optional
field present or absent and strings from all of Unicode (quotes, backslashes, controls,
astral characters)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from rempart.audit import events as ev

texts = st.text(max_size=20)
maybe_text = st.none() | texts
maybe_uuid = st.none() | st.uuids()
times = st.datetimes(
    min_value=dt.datetime(1970, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2))]),
)


@st.composite
def audit_events(draw: st.DrawFn) -> ev.AuditEvent:
    actor = ev.Actor(
        account_id=draw(maybe_uuid), role=draw(maybe_text), establishment_id=draw(maybe_uuid),
        api_client_id=draw(maybe_uuid), acting_professional_id=draw(maybe_uuid), passkey_id=draw(maybe_uuid),
        insurer_id=draw(maybe_uuid),
    )  # fmt: skip
    subject = draw(st.none() | st.tuples(st.sampled_from(sorted(ev.SUBJECT_KINDS)), st.uuids()))
    return ev.AuditEvent(
        action=draw(texts), purpose=draw(texts), decision=draw(st.sampled_from(sorted(ev.DECISIONS))), actor=actor,
        at=draw(times), event_id=draw(st.uuids()), reason=draw(maybe_text),
        subject_kind=subject[0] if subject else None, subject_id=subject[1] if subject else None,
        fields=tuple(draw(st.lists(texts, max_size=4))), count=draw(st.none() | st.integers(0, 10**12)),
        network=ev.Network(draw(maybe_text), draw(maybe_text)), request_id=draw(maybe_text),
        detail=tuple(draw(st.lists(st.tuples(texts, texts), max_size=3))),
    )  # fmt: skip


@settings(max_examples=400)
@given(audit_events())
def test_the_fast_writer_writes_the_defined_bytes(event: ev.AuditEvent) -> None:
    assert ev.encode(event) == ev.encode_reference(event)
    assert ev.decode(ev.encode(event)) == json.loads(ev.encode_reference(event))


def test_a_known_event_has_known_bytes() -> None:
    event = ev.AuditEvent(
        action="rights.check", purpose="tiers-payant", decision=ev.ALLOWED,
        actor=ev.Actor(account_id=uuid.UUID(int=1), role="professional"),
        at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), event_id=uuid.UUID(int=2),
        subject_kind=ev.BENEFICIARY, subject_id=uuid.UUID(int=3), fields=("coverage", "birth_date"),
        reason='a "quoted"\nline', detail=(("sha256", "ab"),),
    )  # fmt: skip
    assert ev.encode(event) == (
        b'{"account":"00000000-0000-0000-0000-000000000001","acting_professional":null,"action":"rights.check",'
        b'"api_client":null,"at":"2026-01-02T03:04:05.000000Z","count":null,"decision":"allowed",'
        b'"detail":{"sha256":"ab"},"establishment":null,"fields":["birth_date","coverage"],'
        b'"id":"00000000-0000-0000-0000-000000000002","insurer":null,"ip":null,"network":null,"passkey":null,'
        b'"purpose":"tiers-payant","reason":"a \\"quoted\\"\\nline","request":null,"role":"professional",'
        b'"subject":"00000000-0000-0000-0000-000000000003","subject_kind":"beneficiary","v":1}'
    )
