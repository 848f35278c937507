"""Professionals' bank details (threat T6: payment fraud by changing an IBAN).

A change needs the professional's own passkey confirmation (step-up), is held for a
cooling-off period (72 h by default) during which payments still go to the previous IBAN,
and a notice goes at once to the contact on record before the change. IBANs are never shown
back in full."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.audit.events import PROFESSIONAL
from rempart.audit.service import Recorder
from rempart.crypto import fields
from rempart.crypto.keystore import PLATFORM_KEK, Keystore
from rempart.db.base import utcnow
from rempart.identity.permissions import Forbidden, Permission, requires
from rempart.identity.service import CurrentUser, record_event, spend_sensitive_quota
from rempart.registry import identifiers
from rempart.registry.models import IbanChange, OutboxMessage, Professional
from rempart.registry.service import RegistryError
from rempart.settings import Settings

NOTICE_SUBJECT = "Rempart : demande de changement de vos coordonnées bancaires"
NOTICE_BODY = (
    "Une demande de changement du compte bancaire sur lequel Rempart vous paie a été faite depuis votre "
    "compte. Les paiements resteront versés sur l'ancien compte jusqu'au {effective} (UTC). Si vous n'êtes "
    "pas à l'origine de cette demande, contactez immédiatement votre administrateur ou le support Rempart."
)


@requires(Permission.CHANGE_OWN_IBAN, step_up=True)
def request_iban_change(
    session: Session, keystore: Keystore, settings: Settings, *, actor: CurrentUser, new_iban: str, audit: Recorder
) -> dt.datetime:
    """Record a new IBAN for the actor's own professional record; returns when it takes effect."""
    if actor.professional_id is None:
        raise Forbidden("only a professional changes their own IBAN")
    try:
        iban = identifiers.validate_iban(new_iban)
    except identifiers.IdentifierError as exc:
        raise RegistryError(exc.message) from None
    spend_sensitive_quota(session, actor)
    professional = session.get_one(Professional, actor.professional_id, with_for_update=True)
    key = keystore.active_field_key(session, PLATFORM_KEK)
    change = IbanChange(
        id=uuid.uuid4(),
        professional_id=professional.id,
        dek_id=key.id,
        requested_by=actor.account_id,
        effective_at=utcnow() + dt.timedelta(hours=settings.iban_cooling_off_hours),
    )
    change.new_iban_ct = fields.encrypt(key, "iban_changes", "new_iban", str(change.id), iban)
    session.add(change)
    # The notice goes to the contact known *before* the change: an attacker who holds the
    # account cannot silence it.
    if professional.email_ct is not None:
        email = fields.decrypt(
            keystore.field_key(session, professional.dek_id), "professionals", "email", str(professional.id),
            professional.email_ct,
        )  # fmt: skip
        body = NOTICE_BODY.format(effective=change.effective_at.strftime("%d/%m/%Y %H:%M"))
        message = OutboxMessage(id=uuid.uuid4(), dek_id=key.id, subject=NOTICE_SUBJECT, body=body)
        message.recipient_ct = fields.encrypt(key, "outbox", "recipient", str(message.id), email)
        session.add(message)
    record_event(session, actor.account_id, "iban_change_requested", effective_at=change.effective_at.isoformat())
    audit.wrote(session, "professional.iban.change", purpose="bank-details", subject=(PROFESSIONAL, professional.id),
                fields=("iban",), detail={"change": str(change.id)})  # fmt: skip
    session.flush()
    return change.effective_at


def payable_iban(session: Session, keystore: Keystore, *, professional_id: uuid.UUID, at: dt.datetime) -> str | None:
    """The IBAN a payment made at `at` goes to: the latest change past its cooling-off, else the
    registered one. For the settlement use case only: never shown to people."""
    change = session.scalars(
        select(IbanChange)
        .where(
            IbanChange.professional_id == professional_id,
            IbanChange.cancelled_at.is_(None),
            IbanChange.effective_at <= at,
        )
        .order_by(IbanChange.effective_at.desc())
        .limit(1)
    ).first()
    if change is not None:
        key = keystore.field_key(session, change.dek_id)
        return fields.decrypt(key, "iban_changes", "new_iban", str(change.id), change.new_iban_ct)
    professional = session.get_one(Professional, professional_id)
    if professional.iban_ct is None:
        return None
    key = keystore.field_key(session, professional.dek_id)
    return fields.decrypt(key, "professionals", "iban", str(professional.id), professional.iban_ct)
