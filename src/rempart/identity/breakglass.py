"""Break-glass: the only way platform operators and insurer staff see a beneficiary's data.

A written reason, a passkey confirmation (step-up), thirty minutes, one beneficiary; the
security officers are alerted at once. Insurer staff can open a grant only on a beneficiary
of their own insurer (and any SQL they run goes through their tenant role, row-level
security confining it to that insurer)."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit.service import Recorder
from rempart.crypto.keystore import Keystore
from rempart.db.base import utcnow
from rempart.identity.models import Account, BreakGlassGrant, Notice
from rempart.identity.permissions import Forbidden, Permission, requires
from rempart.identity.service import CurrentUser, record_event, spend_sensitive_quota
from rempart.registry import service as registry
from rempart.registry.models import Beneficiary, Insurer

GRANT_DURATION = dt.timedelta(minutes=30)
MIN_REASON_CHARS = 20


PURPOSE = "break-glass"


@requires(Permission.BREAK_GLASS, step_up=True)
def open_break_glass(
    session: Session, *, actor: CurrentUser, beneficiary_id: uuid.UUID, reason: str, audit: Recorder
) -> uuid.UUID:
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        raise Forbidden(f"a break-glass access needs a written reason ({MIN_REASON_CHARS} characters at least)")
    beneficiary = session.get(Beneficiary, beneficiary_id)
    if beneficiary is None or (actor.insurer_id is not None and beneficiary.insurer_id != actor.insurer_id):
        raise Forbidden("no such beneficiary for you")
    spend_sensitive_quota(session, actor)
    grant = BreakGlassGrant(
        account_id=actor.account_id, beneficiary_id=beneficiary_id, reason=reason, expires_at=utcnow() + GRANT_DURATION
    )
    session.add(grant)
    session.flush()
    record_event(session, actor.account_id, "break_glass_opened", grant=str(grant.id), beneficiary=str(beneficiary_id))
    audit.wrote(session, "break-glass.open", purpose=PURPOSE, subject=(ev.BENEFICIARY, beneficiary_id),
                detail={"grant": str(grant.id)})  # fmt: skip
    officers = session.scalars(
        select(Account.id).where(Account.role == "security_officer", Account.disabled_at.is_(None))
    ).all()
    text = f"Accès d'urgence ouvert par le compte {actor.account_id} ({actor.role}) : « {reason[:300]} »"
    for officer in officers:
        session.add(Notice(account_id=officer, kind="break_glass", text=text))
    return grant.id


@requires(Permission.BREAK_GLASS)
def read_beneficiary(
    session: Session,
    keystore: Keystore,
    *,
    actor: CurrentUser,
    beneficiary_id: uuid.UUID,
    data_session: Session,
    audit: Recorder,
) -> registry.BeneficiaryView:
    """Fails closed: without a live grant of this actor for this beneficiary, nothing is read.

    The grant is checked on the platform's `session`; the data is read on `data_session`
    (`Platform.data_session(actor)`), which for insurer staff must be their tenant connection:
    the database itself then confines the read to their insurer."""
    if actor.role == "insurer_staff":
        bound = data_session.execute(text("SELECT rempart_session_insurer()")).scalar()
        if bound is None or bound != actor.insurer_id:
            raise Forbidden("insurer staff read through their own tenant connection only")
    grant = session.scalars(
        select(BreakGlassGrant).where(
            BreakGlassGrant.account_id == actor.account_id,
            BreakGlassGrant.beneficiary_id == beneficiary_id,
            BreakGlassGrant.expires_at > utcnow(),
        )
    ).first()
    if grant is None:
        audit.refused("beneficiary.read", purpose=PURPOSE, reason="no live break-glass grant",
                      subject=(ev.BENEFICIARY, beneficiary_id))  # fmt: skip
        raise Forbidden("no live break-glass access to this beneficiary", audited=True)
    row = data_session.get(Beneficiary, beneficiary_id)
    insurer = data_session.get(Insurer, row.insurer_id) if row is not None else None
    if row is None or insurer is None:
        raise Forbidden("no such beneficiary for you")
    record_event(session, actor.account_id, "break_glass_read", grant=str(grant.id), beneficiary=str(beneficiary_id))
    session.flush()
    view = registry.read_beneficiary(data_session, keystore, beneficiary=row, amc_number=insurer.amc_number)
    audit.disclosed("beneficiary.read", purpose=PURPOSE, subjects=[(ev.BENEFICIARY, beneficiary_id)],
                    fields=registry.BENEFICIARY_FIELDS, detail={"grant": str(grant.id)})  # fmt: skip
    return view
