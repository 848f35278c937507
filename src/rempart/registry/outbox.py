"""Delivering the outbox: e-mails the platform owes someone (an IBAN change announced to the
professional's previous contact). Messages are written in the same transaction as what
caused them; delivery comes after, at least once: a message is marked sent only once the mail
server has accepted it.

The recipient is stored encrypted and opened only here, one message at a time; each message
sent is an audit event, committed with its `sent_at`."""

from __future__ import annotations

import datetime as dt
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Protocol

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder
from rempart.crypto import fields
from rempart.crypto.keystore import Keystore
from rempart.db.base import utcnow
from rempart.identity.models import Account, Notice
from rempart.registry.models import OutboxMessage
from rempart.settings import Settings


class Mailer(Protocol):
    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Sends through the configured SMTP server (STARTTLS by default)."""

    def __init__(self, settings: Settings) -> None:
        if not settings.smtp_host:
            raise ValueError("REMPART_SMTP_HOST is not set")
        self.settings = settings

    def send(self, message: EmailMessage) -> None:
        settings = self.settings
        assert settings.smtp_host is not None
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as server:
            if settings.smtp_starttls:
                server.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                server.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            server.send_message(message)


MAX_ATTEMPTS = 8
FIRST_RETRY = dt.timedelta(minutes=1)  # then doubling: about four hours from the first try to the last


def deliver(
    session: Session,
    keystore: Keystore,
    *,
    sender: str,
    mailer: Mailer,
    audit: Recorder,
    limit: int = 100,
    on_error: Callable[[str], None] | None = None,
) -> int:
    """Try up to `limit` messages that are due; returns how many the mail server accepted.

    A message that fails (a refused address, a server down, a key gone) is put back with a
    later due time and the next one is tried: one bad message never holds up the others.
    After MAX_ATTEMPTS it is given up and the platform operators get a notice. Errors name the
    message id, never the address."""
    sent = tried = 0
    while tried < limit:
        now = utcnow()
        message = session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.sent_at.is_(None),
                OutboxMessage.given_up_at.is_(None),
                or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
            )
            .order_by(OutboxMessage.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if message is None:
            break
        tried += 1
        try:
            key = keystore.field_key(session, message.dek_id)
            mail = EmailMessage()
            mail["From"] = sender
            mail["To"] = fields.decrypt(key, "outbox", "recipient", str(message.id), message.recipient_ct)
            mail["Subject"] = message.subject
            mail.set_content(message.body)
            mailer.send(mail)
        except Exception as exc:
            _failed(session, message, type(exc).__name__, now)
            session.commit()
            if on_error is not None:
                on_error(f"message {message.id}: {type(exc).__name__} (attempt {message.attempts})")
            continue
        message.sent_at = utcnow()
        message.attempts += 1
        audit.wrote(session, "outbox.deliver", purpose="notice", count=1, detail={"message": str(message.id)})
        session.commit()
        sent += 1
    return sent


def _failed(session: Session, message: OutboxMessage, error: str, now: dt.datetime) -> None:
    message.attempts += 1
    message.last_error = error[:200]
    if message.attempts >= MAX_ATTEMPTS:
        message.given_up_at = now
        text = f"Un message sortant ({message.id}) n'a pas pu être remis après {message.attempts} tentatives : {error}."
        for operator in session.scalars(
            select(Account.id).where(Account.role == "platform_operator", Account.disabled_at.is_(None))
        ):
            session.add(Notice(account_id=operator, kind="outbox_given_up", text=text))
    else:
        message.next_attempt_at = now + FIRST_RETRY * 2 ** (message.attempts - 1)
