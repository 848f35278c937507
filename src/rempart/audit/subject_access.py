""" "Who accessed my data?": the answer to a GDPR Article 15 request, in JSON and as a page in
French. The person is found only by the identifiers a DPO is given (NIR and birth date, or the
card's AMC number, member number, birth date and rank); the lookup itself is an access to
their data, so it is audited like any other."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from rempart.audit import events as ev
from rempart.audit.queries import Access, accesses_to
from rempart.audit.service import Recorder
from rempart.crypto.keystore import Keystore
from rempart.identity.permissions import Permission, requires
from rempart.registry import service as registry
from rempart.registry.models import Establishment

PURPOSE = "gdpr-article-15"

ROLE_LABELS = {
    "professional": "Professionnel de santé",
    "establishment_admin": "Administrateur d'établissement de santé",
    "insurer_staff": "Personnel de votre organisme complémentaire",
    "platform_operator": "Opérateur de la plateforme Rempart",
    "security_officer": "Responsable de la sécurité de Rempart",
    "dpo": "Délégué à la protection des données",
    "platform:import": "Chargement du fichier de votre organisme",
    "platform:cli": "Maintenance de la plateforme",
}
PURPOSE_LABELS = {
    "tiers-payant": "Tiers payant (vérification de droits, facturation)",
    "break-glass": "Accès exceptionnel motivé (bris de glace)",
    "gdpr-article-15": "Réponse à une demande d'accès (RGPD, article 15)",
    "insurer-feed": "Mise à jour de votre contrat par votre organisme",
    "key-rotation": "Renouvellement des clés de chiffrement",
    "crypto-shredding": "Effacement cryptographique",
    "bank-details": "Coordonnées bancaires",
}
DECISION_LABELS = {ev.ALLOWED: "autorisé", ev.DENIED: "refusé", ev.CONTAINED: "bloqué par la protection"}


@dataclass(frozen=True)
class SubjectLookup:
    nir: str | None = None
    birth_date: dt.date | None = None
    amc_number: str | None = None
    member_number: str | None = None
    birth_rank: int | None = None


@dataclass(frozen=True)
class AccessLine:
    date: str  # UTC, ISO 8601
    who: str  # the kind of professional or staff, never a name
    establishment: str | None
    purpose: str
    action: str
    decision: str
    fields: list[str]


@dataclass(frozen=True)
class Article15Report:
    generated_at: str
    records: int  # how many beneficiary records matched (one per insurer covering the person)
    accesses: list[AccessLine]

    def as_json(self) -> dict[str, Any]:
        return {"generated_at": self.generated_at, "records": self.records,
                "accesses": [asdict(line) for line in self.accesses]}  # fmt: skip

    def as_html(self) -> str:
        environment = Environment(
            loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape(["html"])
        )
        return environment.get_template("article15.html").render(report=self)


class NotFound(LookupError):
    """No beneficiary matches: said the same way whatever was wrong."""


def _subjects(session: Session, keystore: Keystore, lookup: SubjectLookup, amc_number: str | None) -> list[uuid.UUID]:
    if lookup.nir and lookup.birth_date:
        found = registry.find_by_nir(session, keystore, nir=lookup.nir, birth_date=lookup.birth_date,
                                     amc_number=amc_number or lookup.amc_number)  # fmt: skip
        return [view.id for view in found]
    if lookup.amc_number and lookup.member_number and lookup.birth_date and lookup.birth_rank:
        if amc_number is not None and lookup.amc_number != amc_number:
            return []
        view = registry.find_by_card(session, keystore, amc_number=lookup.amc_number,
                                     member_number=lookup.member_number, birth_date=lookup.birth_date,
                                     birth_rank=lookup.birth_rank)  # fmt: skip
        return [view.id] if view else []
    raise ValueError("give the NIR and birth date, or the AMC number, member number, birth date and rank")


def build_report(
    session: Session, data_session: Session, keystore: Keystore, *, lookup: SubjectLookup, audit: Recorder,
    amc_number: str | None = None,
) -> Article15Report:  # fmt: skip
    """The report for one person. `data_session` finds the person (for insurer staff: their
    tenant connection); `session` reads the log. Audited before it is returned."""
    subjects = _subjects(data_session, keystore, lookup, amc_number)
    if not subjects:
        audit.refused("subject.access-report", purpose=PURPOSE, reason="no matching beneficiary")
        raise NotFound("no beneficiary matches these identifiers")
    accesses = accesses_to(session, subjects)
    names = dict(session.execute(select(Establishment.id, Establishment.name)).all()) if accesses else {}
    lines = [_line(access, names) for access in accesses]
    audit.disclosed("subject.access-report", purpose=PURPOSE, subjects=[(ev.BENEFICIARY, s) for s in subjects],
                    fields=("access-history",))  # fmt: skip
    return Article15Report(dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), len(subjects), lines)


@requires(Permission.AUDIT_SUBJECT_ACCESS)
def article15_report(
    session: Session, data_session: Session, keystore: Keystore, *, actor: Any, lookup: SubjectLookup, audit: Recorder
) -> Article15Report:
    """For the DPO (every insurer) and insurer staff (their own insurer's beneficiaries)."""
    amc = None
    if actor.role == "insurer_staff":
        amc = registry.insurer_amc(data_session, actor.insurer_id)
    return build_report(session, data_session, keystore, lookup=lookup, audit=audit, amc_number=amc)


def _line(access: Access, names: dict[uuid.UUID, str]) -> AccessLine:
    establishment = names.get(uuid.UUID(access.establishment_id)) if access.establishment_id else None
    who = ROLE_LABELS.get(access.role or "", access.role or "inconnu")
    if access.api_client_id:
        who += " (logiciel de l'établissement)"
    return AccessLine(
        access.at.isoformat(timespec="seconds"), who, establishment, PURPOSE_LABELS.get(access.purpose, access.purpose),
        access.action, DECISION_LABELS.get(access.decision, access.decision), list(access.fields),
    )  # fmt: skip
