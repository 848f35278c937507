"""The professionals' care pages, end to end in Chromium: check rights (typed or scanned card),
request a prior agreement, send the invoice, list and cancel it; and who may open them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from rempart.care.card import Card
from rempart.platform import Platform

from apikit import PracticeSoftware
from carekit import MEMBER_BIRTH, TODAY, TWINS_BIRTH, pharmacy
from feedkit import AMC_A
from portal_server import passkey_session

pytestmark = pytest.mark.integration


Pharmacist = tuple[Platform, httpx.Client, str, PracticeSoftware]


@pytest.fixture
def pharmacist(portal_client: tuple[Platform, httpx.Client], tmp_path: Path) -> Pharmacist:
    """The platform, an HTTP client, a pharmacist's session cookie, the pharmacy's software."""
    platform, client = portal_client
    _, software = pharmacy(portal_client, tmp_path)
    cookie, _ = passkey_session(platform, "professional", establishment_id=software.establishment_id,
                                professional_id=software.professional_id)  # fmt: skip
    return platform, client, cookie["cookie"].split("=", 1)[1], software


def logged_in(browser: Browser, platform: Platform, token: str) -> Page:
    origin = platform.settings.portal_origin
    context = browser.new_context(base_url=origin)
    context.add_cookies([{"name": "rempart_session", "value": token, "url": origin, "httpOnly": True,
                          "secure": True, "sameSite": "Strict"}])  # fmt: skip
    return context.new_page()


def check_rights(page: Page, *, member: str = "M0000001", birth: dt.date = MEMBER_BIRTH, rank: int = 1,
                 domains: tuple[str, ...] = ("pharmacy",), card_2d: str = "") -> None:  # fmt: skip
    page.goto("/care")
    if card_2d:
        page.fill("#card_2d", card_2d)
    else:
        page.fill("#amc_number", AMC_A)
        page.fill("#member_number", member)
    page.fill("#birth_date", birth.isoformat())
    page.fill("#birth_rank", str(rank))
    for box in page.locator("input[name=domains]").all():
        box.set_checked(box.get_attribute("value") in domains)
    page.click("#check")


def fill_line(page: Page, row: int, domain: str, act: str, price: str, br: str, rate: str) -> None:
    page.select_option(f"select[name=domain-{row}]", domain)
    page.fill(f"input[name=act-{row}]", act)
    page.fill(f"input[name=price-{row}]", price)
    page.fill(f"input[name=br-{row}]", br)
    page.fill(f"input[name=amo_rate-{row}]", rate)


def test_a_pharmacist_checks_rights_gets_an_agreement_and_is_paid(browser: Browser, pharmacist: Pharmacist) -> None:
    platform, _, token, _ = pharmacist
    page = logged_in(browser, platform, token)
    check_rights(page, domains=("pharmacy", "optical"))
    expect(page.locator("#answer")).to_have_attribute("data-outcome", "covered")
    expect(page.locator("tr[data-domain=optical]")).to_have_attribute("data-covered", "yes")
    expect(page.locator("tr[data-domain=optical]")).to_contain_text("forfait 250.00 €")
    engagement = page.locator("#engagement").inner_text()
    assert engagement.startswith("E")
    for secret in ("Lefebvre", "Julien"):
        expect(page.locator("body")).not_to_contain_text(secret)

    page.click("tr[data-domain=optical] a")  # the quote, for the optical domain
    expect(page.locator("#engagement")).to_have_value(engagement)
    fill_line(page, 0, "optical", "frame", "150,00", "0,05", "60")
    fill_line(page, 1, "optical", "lens", "200.00", "0.05", "60")
    page.click("#request-agreement")
    expect(page.locator("#amc-total")).to_have_text("250.00 €")
    agreement = page.locator("#agreement").inner_text()
    assert agreement.startswith("A")

    page.click("#to-invoice")
    expect(page.locator("#agreement")).to_have_value(agreement)
    fill_line(page, 0, "optical", "frame", "150.00", "0.05", "60")
    fill_line(page, 1, "optical", "lens", "200.00", "0.05", "60")
    page.click("#send-invoice")
    expect(page.locator("#answer")).to_have_attribute("data-state", "accepted")
    expect(page.locator("#amc-total")).to_have_text("250.00")

    page.goto("/care/invoices")
    row = page.locator("tr.invoice").first
    expect(row).to_have_attribute("data-state", "accepted")
    row.locator("button.cancel-invoice").click()
    expect(page.locator("tr.invoice").first).to_have_attribute("data-state", "cancelled")


def test_a_scanned_card_a_miss_and_a_refused_field(browser: Browser, pharmacist: Pharmacist) -> None:
    platform, _, token, _ = pharmacist
    page = logged_in(browser, platform, token)
    card = Card(AMC_A, ("TP",), "01", "M0000002", dt.date(TODAY.year, 1, 1), dt.date(TODAY.year, 12, 31))
    check_rights(page, card_2d=card.payload(), birth=TWINS_BIRTH, rank=2)
    expect(page.locator("#answer")).to_have_attribute("data-outcome", "covered")
    engagement = page.locator("#engagement").inner_text()

    check_rights(page, member="M0999999")
    expect(page.locator("#answer")).to_have_attribute("data-outcome", "not_found")
    expect(page.locator("#answer")).to_contain_text("Aucun bénéficiaire ne correspond")

    check_rights(page, card_2d="RMP1|bad")
    expect(page.locator("#error")).to_contain_text("code 2D de la carte")
    expect(page.locator("#birth_date")).to_have_value(MEMBER_BIRTH.isoformat())  # the form kept what was typed

    page.goto("/care/invoices")
    page.fill("#engagement", engagement)
    fill_line(page, 0, "pharmacy", "PHA", "10.001", "10", "65")
    page.click("#send-invoice")
    expect(page.locator("#error")).to_contain_text("« ligne 1, prix » : plus de deux décimales")
    page.fill("#engagement", "E0000-0000-0000-0000")
    fill_line(page, 0, "pharmacy", "PHA", "10.00", "10", "65")
    page.click("#send-invoice")
    expect(page.locator("#error")).to_contain_text("numéro d'engagement")


def test_only_professionals_open_the_care_pages(pharmacist: Pharmacist) -> None:
    platform, client, token, _ = pharmacist
    assert client.get("/care", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/care", headers={"cookie": f"rempart_session={token}"}).status_code == 200
    for role in ("security_officer", "dpo", "establishment_admin"):
        other, _ = passkey_session(platform, role)
        assert client.get("/care", headers=other).status_code == 403
        refused = client.post("/care/rights", headers=other, data={"amc_number": AMC_A, "member_number": "M0000001",
                              "birth_date": MEMBER_BIRTH.isoformat(), "birth_rank": "1",
                              "care_date": TODAY.isoformat(), "domains": "pharmacy"})  # fmt: skip
        assert refused.status_code == 403 and "ESSENTIEL" not in refused.text


def test_software_and_pages_share_one_use_case(pharmacist: Pharmacist) -> None:
    """An engagement from the portal is good for the establishment's software, and back."""
    _, client, token, software = pharmacist
    page = client.post("/care/rights", headers={"cookie": f"rempart_session={token}"},
                       data={"amc_number": AMC_A, "member_number": "M0000003", "birth_date": MEMBER_BIRTH.isoformat(),
                             "birth_rank": "1", "care_date": TODAY.isoformat(), "domains": "pharmacy"})  # fmt: skip
    assert page.status_code == 200 and 'data-outcome="covered"' in page.text
    engagement = page.text.split('id="engagement">', 1)[1].split("<", 1)[0]
    line = {"domain": "pharmacy", "act": "PHA", "date": TODAY.isoformat(), "price": "10.00", "br": "10.00",
            "amo_rate": 65}  # fmt: skip
    sent = software.post("/api/v1/care/invoices", {"engagement": engagement, "lines": [line]},
                         **{"Idempotency-Key": "portal-then-software"})  # fmt: skip
    assert sent.status_code == 201 and sent.json()["state"] == "accepted", sent.text
    listed = client.get("/care/invoices", headers={"cookie": f"rempart_session={token}"})
    assert sent.json()["id"] in listed.text


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"birth_rank": "²"}, "« rang de naissance » : un chiffre de 1 à 9"),
        ({"card_2d": Card(AMC_A, ("TP",), "01", "M0000001", dt.date(2020, 1, 1), dt.date(2020, 12, 31)).payload()},
         "code 2D de la carte"),
        ({"nir": "180057505600147"}, "identification"),
    ],
)  # fmt: skip
def test_the_portal_refuses_what_the_api_refuses(pharmacist: Pharmacist, change: dict[str, str], field: str) -> None:
    _, client, token, _ = pharmacist
    form = {"amc_number": AMC_A, "member_number": "M0000001", "birth_date": MEMBER_BIRTH.isoformat(),
            "birth_rank": "1", "care_date": TODAY.isoformat(), "domains": "pharmacy", **change}  # fmt: skip
    page = client.post("/care/rights", headers={"cookie": f"rempart_session={token}"}, data=form)
    assert page.status_code == 200 and 'id="error"' in page.text and field in page.text, page.text[-500:]
    assert 'id="engagement"' not in page.text  # nothing was checked
