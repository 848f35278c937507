"""Break-glass access to a beneficiary's data by operators and insurer staff.

ASVS 5.0 V8 (authorization): V8.2 least privilege, V8.3 access with a recorded reason, limited
in time; V16 (security logging): the security officers are alerted."""

from __future__ import annotations

import datetime as dt
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from rempart.db.base import utcnow
from rempart.identity import breakglass, service
from rempart.identity.models import Account, BreakGlassGrant, Notice
from rempart.identity.permissions import Forbidden, StepUpRequired
from rempart.platform import Platform
from rempart.registry import service as registry
from rempart.registry.models import Beneficiary

from feedkit import AMC_A, AMC_B, families, write_feed
from registry_helpers import run_import, two_insurers

pytestmark = pytest.mark.integration
REASON = "Réclamation écrite de l'adhérent n° 2026-118 sur un refus de prise en charge"


def test_v8_break_glass_needs_reason_step_up_and_alerts(platform: Platform, tmp_path: Path) -> None:
    two_insurers(platform)
    run_import(platform, write_feed(tmp_path / "a.csv", families(1)), amc=AMC_A)
    run_import(platform, write_feed(tmp_path / "b.csv", families(1, first=9)), amc=AMC_B)
    with platform.session() as session, ExitStack() as stack:
        a = registry.get_insurer(session, AMC_A)
        target = session.scalars(select(Beneficiary).where(Beneficiary.insurer_id == a.id)).first()
        foreign = session.scalars(select(Beneficiary).where(Beneficiary.insurer_id != a.id)).first()
        assert target is not None and foreign is not None
        staff_account = Account(role="insurer_staff", insurer_id=a.id)
        officer = Account(role="security_officer")
        session.add_all([staff_account, officer])
        session.flush()

        def as_staff(step_up: dt.datetime | None) -> service.CurrentUser:
            return service.CurrentUser(staff_account.id, "insurer_staff", None, None, a.id, utcnow(), step_up, b"")

        staff = as_staff(utcnow())
        trail = platform.audit.for_request(staff.audit_context(ip="203.0.113.5", request_id="req-1"))
        data = stack.enter_context(platform.data_session(staff))  # logged in as insurer A's tenant role
        with pytest.raises(Forbidden):  # no grant yet: nothing is read
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=data, audit=trail)  # fmt: skip
        with pytest.raises(Forbidden, match="reason"):
            breakglass.open_break_glass(session, actor=staff, beneficiary_id=target.id, reason="vérif", audit=trail)
        with pytest.raises(StepUpRequired):
            breakglass.open_break_glass(session, actor=as_staff(None), beneficiary_id=target.id, reason=REASON)
        with pytest.raises(Forbidden):  # another insurer's beneficiary
            breakglass.open_break_glass(session, actor=staff, beneficiary_id=foreign.id, reason=REASON, audit=trail)
        professional = service.CurrentUser(uuid.uuid4(), "professional", None, None, None, utcnow(), utcnow(), b"")
        with pytest.raises(Forbidden):
            breakglass.open_break_glass(
                session, actor=professional, beneficiary_id=target.id, reason=REASON, audit=trail
            )

        breakglass.open_break_glass(session, actor=staff, beneficiary_id=target.id, reason=REASON, audit=trail)
        view = breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                           data_session=data, audit=trail)  # fmt: skip
        assert view.family_name == "Lefebvre"
        # Even a grant slipped in for another insurer's beneficiary reads nothing: the database
        # hides that row from insurer A's tenant role.
        session.add(BreakGlassGrant(account_id=staff_account.id, beneficiary_id=foreign.id, reason=REASON,
                                    expires_at=utcnow() + dt.timedelta(minutes=5)))  # fmt: skip
        session.flush()
        with pytest.raises(Forbidden, match="no such beneficiary"):
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=foreign.id,
                                        data_session=data, audit=trail)  # fmt: skip
        with pytest.raises(Forbidden, match="tenant connection"):  # staff never read on the platform's connection
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=session, audit=trail)  # fmt: skip
        alerts = session.scalars(select(Notice.text).where(Notice.account_id == officer.id)).all()
        assert len(alerts) == 1 and "Réclamation écrite" in alerts[0]
        session.commit()  # the grant's own audit event commits with it

        session.execute(update(BreakGlassGrant).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        with pytest.raises(Forbidden):  # thirty minutes, then closed
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=data, audit=trail)  # fmt: skip


def test_v16_break_glass_reads_and_refusals_are_in_the_audit_log(platform: Platform, tmp_path: Path) -> None:
    from rempart.audit import events as ev
    from rempart.audit.log import AuditUnavailable

    two_insurers(platform)
    run_import(platform, write_feed(tmp_path / "a.csv", families(1)), amc=AMC_A)
    with platform.session() as session:
        a = registry.get_insurer(session, AMC_A)
        target = session.scalars(select(Beneficiary).where(Beneficiary.insurer_id == a.id)).first()
        assert target is not None
        target_id = target.id
        target_key = str(target_id)
        operator = Account(role="platform_operator")
        session.add(operator)
        session.flush()
        operator_id = str(operator.id)
        actor = service.CurrentUser(operator.id, "platform_operator", None, None, None, utcnow(), utcnow(), b"")
        trail = platform.audit.for_request(actor.audit_context(ip="203.0.113.5", request_id="req-2"))
        with pytest.raises(Forbidden):
            breakglass.read_beneficiary(session, platform.keystore, actor=actor, beneficiary_id=target_id,
                                        data_session=session, audit=trail)  # fmt: skip
        breakglass.open_break_glass(session, actor=actor, beneficiary_id=target_id, reason=REASON, audit=trail)
        session.commit()
        view = breakglass.read_beneficiary(session, platform.keystore, actor=actor, beneficiary_id=target_id,
                                           data_session=session, audit=trail)  # fmt: skip
        assert view.nir
        # The log is down: the same read returns nothing.
        session.execute(text("ALTER TABLE audit.head RENAME TO head_gone"))
        session.commit()
        with pytest.raises(AuditUnavailable):
            breakglass.read_beneficiary(session, platform.keystore, actor=actor, beneficiary_id=target_id,
                                        data_session=session, audit=trail)  # fmt: skip
        session.rollback()
        session.execute(text("ALTER TABLE audit.head_gone RENAME TO head"))
        session.commit()
    platform.audit.log.sync()
    with platform.session() as session:
        bodies = session.execute(text("SELECT body FROM audit.events ORDER BY seq")).scalars().all()
    everything = [ev.decode(bytes(body)) for body in bodies]
    (feed,) = [d for d in everything if d["action"] == "import.beneficiaries"]  # one event for the whole file
    assert feed["count"] > 0 and feed["role"] == "platform:import" and feed["subject"] is None
    documents = [d for d in everything if d["subject"] is not None]
    summary = [(d["action"], d["decision"], d["subject"], d["account"]) for d in documents]
    assert summary == [
        ("beneficiary.read", "denied", target_key, operator_id),
        ("beneficiary.read", "allowed", target_key, operator_id),  # the read, durable at once
        ("break-glass.open", "allowed", target_key, operator_id),  # the grant, staged with its write
    ] or summary == [
        ("beneficiary.read", "denied", target_key, operator_id),
        ("break-glass.open", "allowed", target_key, operator_id),
        ("beneficiary.read", "allowed", target_key, operator_id),
    ]
    read = next(d for d in documents if d["decision"] == "allowed" and d["action"] == "beneficiary.read")
    assert "nir" in read["fields"] and read["purpose"] == "break-glass" and read["request"] == "req-2"
    assert view.nir not in b"".join(bytes(b) for b in bodies).decode()  # never the data itself
