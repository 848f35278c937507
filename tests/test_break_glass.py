"""Break-glass access to a beneficiary's data by operators and insurer staff.

ASVS 5.0 V8 (authorization): V8.2 least privilege, V8.3 access with a recorded reason, limited
in time; V16 (security logging): the security officers are alerted."""

from __future__ import annotations

import datetime as dt
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import select, update

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
        data = stack.enter_context(platform.data_session(staff))  # logged in as insurer A's tenant role
        with pytest.raises(Forbidden):  # no grant yet: nothing is read
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=data)  # fmt: skip
        with pytest.raises(Forbidden, match="reason"):
            breakglass.open_break_glass(session, actor=staff, beneficiary_id=target.id, reason="vérif")
        with pytest.raises(StepUpRequired):
            breakglass.open_break_glass(session, actor=as_staff(None), beneficiary_id=target.id, reason=REASON)
        with pytest.raises(Forbidden):  # another insurer's beneficiary
            breakglass.open_break_glass(session, actor=staff, beneficiary_id=foreign.id, reason=REASON)
        professional = service.CurrentUser(uuid.uuid4(), "professional", None, None, None, utcnow(), utcnow(), b"")
        with pytest.raises(Forbidden):
            breakglass.open_break_glass(session, actor=professional, beneficiary_id=target.id, reason=REASON)

        breakglass.open_break_glass(session, actor=staff, beneficiary_id=target.id, reason=REASON)
        view = breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                           data_session=data)  # fmt: skip
        assert view.family_name == "Lefebvre"
        # Even a grant slipped in for another insurer's beneficiary reads nothing: the database
        # hides that row from insurer A's tenant role.
        session.add(BreakGlassGrant(account_id=staff_account.id, beneficiary_id=foreign.id, reason=REASON,
                                    expires_at=utcnow() + dt.timedelta(minutes=5)))  # fmt: skip
        session.flush()
        with pytest.raises(Forbidden, match="no such beneficiary"):
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=foreign.id,
                                        data_session=data)  # fmt: skip
        with pytest.raises(Forbidden, match="tenant connection"):  # staff never read on the platform's connection
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=session)  # fmt: skip
        alerts = session.scalars(select(Notice.text).where(Notice.account_id == officer.id)).all()
        assert len(alerts) == 1 and "Réclamation écrite" in alerts[0]

        session.execute(update(BreakGlassGrant).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
        with pytest.raises(Forbidden):  # thirty minutes, then closed
            breakglass.read_beneficiary(session, platform.keystore, actor=staff, beneficiary_id=target.id,
                                        data_session=data)  # fmt: skip
