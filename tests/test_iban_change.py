"""Changing a professional's IBAN (threat T6): step-up, cooling-off, notice to the previous contact.

ASVS 5.0 V6/V8: re-authentication before a sensitive change; V16 the change is logged."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select, update

from rempart.crypto import fields
from rempart.db.base import utcnow
from rempart.identity import service
from rempart.identity.models import Account, SecurityEvent
from rempart.identity.permissions import Forbidden, StepUpRequired
from rempart.platform import Platform
from rempart.registry import banking, rekey
from rempart.registry import service as registry
from rempart.registry.identifiers import make_french_iban
from rempart.registry.models import OutboxMessage

from portal_server import free_port

pytestmark = pytest.mark.integration
OLD_IBAN = make_french_iban("30004", "00123", "00012345678")
NEW_IBAN = make_french_iban("20041", "01005", "0500013M026")


def pharmacist(session: Any, platform: Platform) -> tuple[Any, Any, Account]:
    """A pharmacy, its pharmacist (IBAN and e-mail on file) and the pharmacist's account."""
    shop = registry.register_establishment(session, name="Pharmacie", kind="pharmacy", finess="750712184")
    pro = registry.register_professional(
        session, platform.keystore, identifier="10003456786", family_name="Durand", first_name="Anne",
        profession="pharmacist", specialty=None, establishment_ids=[shop.id], iban=OLD_IBAN,
        email="anne.durand@pharmacie.example", phone=None,
    )  # fmt: skip
    account = Account(role="professional", professional_id=pro.id)
    session.add(account)
    session.flush()
    return shop, pro, account


def test_t6_iban_change_is_held_and_announced_to_the_previous_contact(platform: Platform) -> None:
    with platform.session() as session:
        shop, pro, account = pharmacist(session, platform)

        def actor(step_up: dt.datetime | None) -> service.CurrentUser:
            return service.CurrentUser(account.id, "professional", pro.id, shop.id, None, utcnow(), step_up, b"")

        trail = platform.audit.for_request(actor(None).audit_context(ip="198.51.100.7", request_id="iban-1"))

        with pytest.raises(StepUpRequired):
            banking.request_iban_change(
                session, platform.keystore, platform.settings, actor=actor(None), new_iban=NEW_IBAN, audit=trail
            )
        staff = service.CurrentUser(account.id, "insurer_staff", None, None, None, utcnow(), utcnow(), b"")
        with pytest.raises(Forbidden):
            banking.request_iban_change(
                session, platform.keystore, platform.settings, actor=staff, new_iban=NEW_IBAN, audit=trail
            )
        wrong_key = NEW_IBAN[:-1] + ("0" if NEW_IBAN[-1] != "0" else "1")
        with pytest.raises(registry.RegistryError, match="IBAN"):
            banking.request_iban_change(
                session, platform.keystore, platform.settings, actor=actor(utcnow()), new_iban=wrong_key, audit=trail
            )

        effective = banking.request_iban_change(
            session, platform.keystore, platform.settings, actor=actor(utcnow()), new_iban=NEW_IBAN, audit=trail
        )
        assert dt.timedelta(hours=71) < effective - utcnow() <= dt.timedelta(hours=72)
        assert banking.payable_iban(session, platform.keystore, professional_id=pro.id, at=utcnow()) == OLD_IBAN
        later = effective + dt.timedelta(seconds=1)
        assert banking.payable_iban(session, platform.keystore, professional_id=pro.id, at=later) == NEW_IBAN

        notice = session.scalars(select(OutboxMessage)).one()
        key = platform.keystore.field_key(session, notice.dek_id)
        assert fields.decrypt(key, "outbox", "recipient", str(notice.id), notice.recipient_ct) == (
            "anne.durand@pharmacie.example"
        )
        assert NEW_IBAN not in notice.body and OLD_IBAN not in notice.body
        kinds = session.scalars(select(SecurityEvent.kind).where(SecurityEvent.account_id == account.id)).all()
        assert "iban_change_requested" in kinds
        session.commit()

    # The pending IBAN follows key rotation like every other ciphertext.
    with platform.session() as session:
        platform.keystore.rotate(session, "platform")
        session.commit()
        assert (
            rekey.rewrap(session, platform.keystore, audit=platform.audit.for_platform("test")) >= 3
        )  # professional, IBAN change, outbox message
        assert rekey.retire_unused(session, platform.keystore)
    platform.keystore.forget()
    with platform.session() as session:
        assert banking.payable_iban(session, platform.keystore, professional_id=pro.id, at=later) == NEW_IBAN


def test_t6_the_notice_reaches_the_previous_contact_by_email(platform: Platform) -> None:
    """Delivered through a real SMTP server on loopback (aiosmtpd), at least once, marked sent
    only when accepted, and each sending audited."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    from rempart.registry import outbox

    received: list[Any] = []

    class Inbox(Message):
        def handle_message(self, message: Any) -> None:
            received.append(message)

    with platform.session() as session:
        shop, pro, account = pharmacist(session, platform)
        actor = service.CurrentUser(account.id, "professional", pro.id, shop.id, None, utcnow(), utcnow(), b"")
        trail = platform.audit.for_request(actor.audit_context(ip="198.51.100.7", request_id="iban-2"))
        banking.request_iban_change(session, platform.keystore, platform.settings, actor=actor, new_iban=NEW_IBAN,
                                    audit=trail)  # fmt: skip
        session.commit()

    port = free_port()
    settings = platform.settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port,
                                                    "smtp_starttls": False})  # fmt: skip
    down: list[str] = []

    def deliver(on_error: Any = None) -> int:
        with platform.session() as session:
            return outbox.deliver(session, platform.keystore, sender=settings.smtp_sender,
                                  mailer=outbox.SmtpMailer(settings), audit=platform.audit.for_platform("outbox"),
                                  on_error=on_error)  # fmt: skip

    assert deliver(down.append) == 0  # the mail server is not there yet: nothing is lost
    assert len(down) == 1 and "@" not in down[0]
    controller = Controller(Inbox(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        assert deliver() == 0  # not due yet: a failed message waits a minute before its next try
        with platform.session() as session:
            session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))
            session.commit()
        sent, again = deliver(), deliver()
    finally:
        controller.stop()
    assert (sent, again) == (1, 0)
    (mail,) = received
    assert mail["To"] == "anne.durand@pharmacie.example"
    from email.header import decode_header, make_header

    assert "coordonnées bancaires" in str(make_header(decode_header(mail["Subject"])))
    assert NEW_IBAN not in mail.get_payload() and OLD_IBAN not in mail.get_payload()
    with platform.session() as session:
        assert session.scalars(select(OutboxMessage.sent_at)).one() is not None


def test_t6_a_refused_address_holds_up_no_other_notice_and_is_given_up(platform: Platform) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from rempart.crypto.keystore import PLATFORM_KEK
    from rempart.identity.models import Notice
    from rempart.registry import outbox

    delivered: list[str] = []

    class Server:
        async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                              options: list[str]) -> str:  # fmt: skip
            if address.startswith("gone@"):
                return "550 5.1.1 no such user"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            delivered.extend(envelope.rcpt_tos)
            return "250 Message accepted"

    with platform.session() as session:
        registry.ensure_platform_keys(session, platform.keystore)
        key = platform.keystore.active_field_key(session, PLATFORM_KEK)
        for address in ("gone@pharmacie.example", "anne.durand@pharmacie.example"):
            message_id = uuid.uuid4()
            recipient = fields.encrypt(key, "outbox", "recipient", str(message_id), address)
            session.add(OutboxMessage(id=message_id, dek_id=key.id, recipient_ct=recipient, subject="Avis",
                                      body="Bonjour"))  # fmt: skip
            session.flush()  # created in this order
        operator = Account(role="platform_operator")
        session.add(operator)
        session.commit()

    port = free_port()
    settings = platform.settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port,
                                                    "smtp_starttls": False})  # fmt: skip
    controller = Controller(Server(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        for _ in range(outbox.MAX_ATTEMPTS):
            with platform.session() as session:
                mailer = outbox.SmtpMailer(settings)
                outbox.deliver(session, platform.keystore, sender=settings.smtp_sender, mailer=mailer,
                               audit=platform.audit.for_platform("outbox"))  # fmt: skip
                session.execute(update(OutboxMessage).values(next_attempt_at=utcnow()))  # time passes
                session.commit()
    finally:
        controller.stop()
    assert delivered == ["anne.durand@pharmacie.example"]  # the good one went at the first round
    with platform.session() as session:
        refused = session.scalars(select(OutboxMessage).where(OutboxMessage.sent_at.is_(None))).one()
        assert refused.attempts == outbox.MAX_ATTEMPTS and refused.given_up_at is not None
        assert refused.last_error == "SMTPRecipientsRefused"
        (told,) = session.scalars(select(Notice.text).where(Notice.account_id == operator.id)).all()
        assert str(refused.id) in told and "gone@" not in told
