"""Care in the portal, for professionals (server-rendered, in French): check a patient's rights
(typing the card's fields or pasting its 2D-code payload), request a prior agreement, send an
invoice, list the establishment's invoices. Thin: parse the form, call the same use cases as
the REST and FHIR doors, render."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from rempart.audit.service import Recorder
from rempart.care import agreements, invoices
from rempart.care import eligibility as rights
from rempart.care.caller import CareCaller
from rempart.care.errors import CareInputError
from rempart.care.lines import LineIn
from rempart.coverage.schedule import KNOWN_DOMAINS
from rempart.identity import service
from rempart.platform import Platform

SESSION_COOKIE = "rempart_session"
PAGES = Jinja2Templates(directory=Path(__file__).parents[1] / "portal" / "templates")
LINE_ROWS = 4  # line rows offered by the quote and invoice forms

DOMAINS_FR = {
    "pharmacy": "Pharmacie", "consultation": "Consultation", "dental": "Dentaire", "dental_implant": "Implantologie",
    "orthodontics": "Orthodontie", "optical": "Optique", "audio": "Audioprothèse", "hospital": "Hospitalisation",
    "lab": "Biologie", "radiology": "Radiologie", "nursing": "Soins infirmiers", "physiotherapy": "Kinésithérapie",
    "midwifery": "Sage-femme", "transport": "Transport",
}  # fmt: skip
OUTCOMES_FR = {
    "covered": "Droits ouverts",
    "not_covered": "Pas de droits à la date des soins",
    "not_found": "Aucun bénéficiaire ne correspond : vérifiez la carte, la date et le rang de naissance",
}
REASONS_FR = {
    "no_coverage_on_date": "hors période de couverture",
    "no_guarantee": "non couvert par la garantie",
    "engagement_expired": "l'engagement a expiré : vérifiez de nouveau les droits du patient",
    "domain_not_engaged": "un acte relève d'un domaine que l'engagement ne couvre pas",
    "agreement_required": "ce domaine demande une prise en charge préalable (devis)",
    "agreement_invalid": "la prise en charge est utilisée, annulée, expirée, ou pour un autre patient ou domaine",
    "duplicate": "le même acte, à la même date, pour le même patient, a déjà été facturé",
    "nothing_to_pay": "aucun acte n'est couvert par la garantie du patient",
}
STATES_FR = {"received": "reçue", "accepted": "acceptée", "rejected": "rejetée", "paid": "payée",
             "cancelled": "annulée", "granted": "accordée"}  # fmt: skip
FIELDS_FR = {
    "amc_number": "numéro AMC", "member_number": "numéro d'adhérent", "birth_rank": "rang de naissance",
    "birth_date": "date de naissance", "care_date": "date des soins", "nir": "NIR", "domains": "domaines",
    "identification": "identification", "card_2d": "code 2D de la carte", "engagement": "numéro d'engagement",
    "agreement": "numéro de prise en charge", "lines": "lignes", "Idempotency-Key": "envoi",
}  # fmt: skip


# The use cases refuse in English (the API's words); the portal says the same in French.
REFUSALS_FR = {
    "no insurer with this AMC number uses Rempart": "aucun assureur utilisant Rempart n'a ce numéro AMC",
    "more than two years ago": "il y a plus de deux ans",
    "in the future": "dans le futur",
    "a domain is named twice": "un domaine est coché deux fois",
    "give either the member number with the rank of birth, or a NIR":
        "indiquez soit le numéro d'adhérent avec le rang de naissance, soit un NIR",
    "give either the card (or its numbers) or a NIR, not both":
        "indiquez soit la carte (ou ses numéros), soit un NIR, pas les deux",
    "1 to 20 letters or digits, as printed on the card": "1 à 20 lettres ou chiffres, comme sur la carte",
    "the rank of birth is a digit from 1 to 9 (1 unless twins)": "un chiffre de 1 à 9 (1 sauf jumeaux)",
    "a digit from 1 to 9": "un chiffre de 1 à 9",
    "the card is not valid on the care date": "la carte n'est pas valable à la date des soins",
    "unknown, or not issued to this establishment": "inconnu, ou délivré à un autre établissement",
    "unknown, or not granted to this establishment": "inconnue, ou accordée à un autre établissement",
    "unknown, or not sent by this establishment": "inconnue, ou envoyée par un autre établissement",
    "expired: check the patient's rights again": "expiré : vérifiez de nouveau les droits du patient",
    "a quote is for one care domain": "un devis porte sur un seul domaine de soins",
    "the engagement does not cover this domain": "l'engagement ne couvre pas ce domaine",
    "not a number": "ce n'est pas un nombre",
    "negative": "montant négatif",
    "more than two decimals": "plus de deux décimales",
    "a rate is at most 100 (percent)": "un taux est d'au plus 100 (%)",
    "unknown care domain": "domaine de soins inconnu",
    "a date (YYYY-MM-DD)": "une date (AAAA-MM-JJ)",
    "larger than what the mandatory scheme pays": "supérieure à ce que verse l'assurance maladie obligatoire",
    "below what the mandatory scheme pays on this line": "inférieur à ce que verse l'assurance maladie obligatoire",
    "already used for a different invoice": "déjà utilisé pour une autre facture : rechargez la page",
}  # fmt: skip


def refusal_fr(reason: str) -> str:
    """A refusal's reason in French when it is one of the known wordings (else as given)."""
    if reason in REFUSALS_FR:
        return REFUSALS_FR[reason]
    for english, french in (
        ("at most ", "au plus "),
        ("after ", "après le "),
        ("before ", "avant le "),
        ("between ", "entre "),
        ("already ", "déjà "),
        ("unknown care domain", "domaine inconnu"),
    ):
        if reason.startswith(english):
            return french + reason[len(english) :].replace(" days ahead", " jours à l'avance")
    return reason


def field_fr(field: str) -> str:
    """A refused field, named in French ("ligne 2, prix")."""
    if field.startswith("lines["):
        index, _, element = field[len("lines[") :].partition("].")
        names = {"price": "prix", "br": "base de remboursement", "amo_rate": "taux AMO", "date": "date",
                 "amo_deductible": "franchise / participation", "domain": "domaine", "act": "acte",
                 "basket": "panier"}  # fmt: skip
        return f"ligne {int(index) + 1}, {names.get(element, element)}"
    return FIELDS_FR.get(field.split(".")[0], field)


def _date(value: str, field: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise CareInputError(field, "a date (YYYY-MM-DD)") from None


def _lines(form: Any) -> list[LineIn]:
    rows: list[LineIn] = []
    for i in range(LINE_ROWS):
        act = str(form.get(f"act-{i}", "")).strip()
        if not act:
            continue
        rows.append(LineIn(
            domain=str(form.get(f"domain-{i}", "")), act=act,
            date=_date(str(form.get(f"date-{i}", "")), f"lines[{len(rows)}].date"),
            price=str(form.get(f"price-{i}", "")).replace(",", "."), br=str(form.get(f"br-{i}", "")).replace(",", "."),
            amo_rate=str(form.get(f"amo_rate-{i}", "")).replace(",", "."),
            amo_deductible=str(form.get(f"amo_deductible-{i}", "") or "0").replace(",", "."),
            basket=str(form.get(f"basket-{i}", "")) or None,
        ))  # fmt: skip
    return rows


def build_router(platform: Platform) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    settings = platform.settings

    def page(request: Request, name: str, context: dict[str, Any]) -> Response:
        base = {"domains_fr": DOMAINS_FR, "outcomes_fr": OUTCOMES_FR, "reasons_fr": REASONS_FR,
                "states_fr": STATES_FR, "known_domains": KNOWN_DOMAINS, "today": dt.date.today(),
                "line_rows": range(LINE_ROWS)}  # fmt: skip
        return PAGES.TemplateResponse(request, name, {**base, **context})

    def professional(request: Request, session: Session) -> tuple[CareCaller, Recorder] | None:
        user = service.authenticate(session, settings, token=request.cookies.get(SESSION_COOKIE))
        session.commit()
        if user is None:
            return None
        caller = CareCaller.of_user(user)
        context = caller.audit_context(ip=request.client.host if request.client else None,
                                       request_id=getattr(request.state, "request_id", None))  # fmt: skip
        return caller, platform.audit.for_request(context)

    def refused(request: Request, name: str, error: CareInputError, context: dict[str, Any]) -> Response:
        message = f"« {field_fr(error.field)} » : {refusal_fr(error.reason)}"
        return page(request, name, {**context, "error": message, "error_field": error.field})

    @router.get("/care", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        """The rights check form."""
        with platform.session() as session:
            if professional(request, session) is None:
                return RedirectResponse("/login", status_code=303)
        return page(request, "care_rights.html", {"title": "Vérifier les droits d'un patient", "form": {}})

    @router.post("/care/rights", response_class=HTMLResponse)
    async def check(request: Request) -> Response:
        form = await request.form()
        return await _threaded(lambda: _check(request, form))

    def _check(request: Request, form: Any) -> Response:
        title = "Vérifier les droits d'un patient"
        names = ("card_2d", "amc_number", "member_number", "birth_rank", "nir", "birth_date", "care_date")
        values = {key: str(form.get(key, "")).strip() for key in names}
        domains = [str(d) for d in form.getlist("domains")]
        with platform.session() as session:
            found = professional(request, session)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            caller, audit = found
            try:
                asked = _rights_request(values, domains)
                answer = rights.check_rights(session, platform.keystore, caller=caller, request=asked, audit=audit)
            except CareInputError as error:
                return refused(request, "care_rights.html", error, {"title": title, "form": values,
                                                                     "chosen": domains})  # fmt: skip
        return page(request, "care_rights.html", {"title": title, "form": {}, "answer": answer})

    @router.get("/care/agreements/new", response_class=HTMLResponse)
    def agreement_form(request: Request, engagement: str = "") -> Response:
        with platform.session() as session:
            if professional(request, session) is None:
                return RedirectResponse("/login", status_code=303)
        return page(request, "care_agreement.html", {"title": "Demander une prise en charge",
                                                      "engagement": engagement[:24]})  # fmt: skip

    @router.post("/care/agreements", response_class=HTMLResponse)
    async def agreement(request: Request) -> Response:
        form = await request.form()
        return await _threaded(lambda: _agreement(request, form))

    def _agreement(request: Request, form: Any) -> Response:
        title, engagement = "Demander une prise en charge", str(form.get("engagement", ""))[:24]
        with platform.session() as session:
            found = professional(request, session)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            caller, audit = found
            try:
                answer = agreements.request_agreement(session, caller=caller, engagement=engagement,
                                                      lines=_lines(form), audit=audit)  # fmt: skip
            except CareInputError as error:
                return refused(request, "care_agreement.html", error, {"title": title, "engagement": engagement})
        return page(request, "care_agreement.html", {"title": title, "engagement": engagement, "answer": answer})

    @router.get("/care/invoices", response_class=HTMLResponse)
    def invoice_list(request: Request, engagement: str = "", agreement: str = "") -> Response:
        """The establishment's invoices, and the form to send one."""
        with platform.session() as session:
            found = professional(request, session)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            listed = invoices.list_invoices(session, caller=found[0])
        return page(request, "care_invoices.html", {
            "title": "Factures", "invoices": listed, "engagement": engagement[:24], "agreement": agreement[:24],
            "key": uuid.uuid4().hex,
        })  # fmt: skip

    @router.post("/care/invoices", response_class=HTMLResponse)
    async def invoice(request: Request) -> Response:
        form = await request.form()
        return await _threaded(lambda: _invoice(request, form))

    def _invoice(request: Request, form: Any) -> Response:
        engagement, agreement = str(form.get("engagement", ""))[:24], str(form.get("agreement", ""))[:24]
        with platform.session() as session:
            found = professional(request, session)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            caller, audit = found
            try:
                answer = invoices.submit_invoice(
                    session, caller=caller, idempotency_key=str(form.get("key", ""))[:100], engagement=engagement,
                    agreement=agreement or None, lines=_lines(form), audit=audit,
                )  # fmt: skip
            except CareInputError as error:
                listed = invoices.list_invoices(session, caller=caller)
                return refused(request, "care_invoices.html", error, {
                    "title": "Factures", "invoices": listed, "engagement": engagement, "agreement": agreement,
                    "key": str(form.get("key", ""))[:100],
                })  # fmt: skip
        return page(request, "care_invoice.html", {"title": "Facture", "answer": answer})

    @router.post("/care/invoices/{invoice_id}/cancel")
    def cancel(request: Request, invoice_id: uuid.UUID) -> Response:
        with platform.session() as session:
            found = professional(request, session)
            if found is None:
                return RedirectResponse("/login", status_code=303)
            caller, audit = found
            with contextlib.suppress(CareInputError):  # already cancelled or paid: the list shows it
                invoices.cancel_invoice(session, caller=caller, invoice_id=invoice_id, audit=audit)
        return RedirectResponse("/care/invoices", status_code=303)

    return router


def _rights_request(values: dict[str, str], domains: list[str]) -> rights.RightsRequest:
    """The form's fields as the use case's request (which refuses what the REST door refuses)."""
    nir, rank = values["nir"] or None, values["birth_rank"]
    if nir is None and (len(rank) != 1 or rank not in "123456789"):
        raise CareInputError("birth_rank", "a digit from 1 to 9")
    return rights.RightsRequest(
        amc_number=values["amc_number"] or None, birth_date=_date(values["birth_date"], "birth_date"),
        care_date=_date(values["care_date"], "care_date"), domains=tuple(domains),
        member_number=values["member_number"] or None,
        birth_rank=int(rank) if nir is None else None, nir=nir, card_2d=values["card_2d"] or None,
    )  # fmt: skip


async def _threaded(work: Any) -> Response:
    """Forms are read asynchronously; the use cases (database, audit wait) run in the pool."""
    from fastapi.concurrency import run_in_threadpool

    result: Response = await run_in_threadpool(work)
    return result
