"""The tiers-payant card's 2D-code payload, as Rempart defines it (pure).

The inter-insurer card carries a normalised block of five fields, repeated in a Datamatrix
that practice software reads: the insurer's AMC number, the type(s) of agreement, the
secondary routing criterion (CSR), the member number and the validity period. Rempart's
payload writes exactly those, and nothing about the people on the card:

    RMP1|<AMC number>|<agreement types, comma-separated>|<CSR>|<member number>|<from>|<to>

with dates as YYYYMMDD, for example `RMP1|12345678|TP,SP|01|0001234567|20260101|20261231`.
A scanned payload replaces typing the AMC and member numbers; the patient still gives their
birth date and rank of birth, so a lost card alone identifies nobody.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

PREFIX = "RMP1"
MAX_LENGTH = 200
_AMC = re.compile(r"\d{8,10}")
_MEMBER = re.compile(r"[0-9A-Z]{1,20}")  # as feeds write it: no spaces, upper case
_CONVENTION = re.compile(r"[A-Z0-9]{1,4}")
_CSR = re.compile(r"[0-9A-Za-z]{0,10}")


class CardError(ValueError):
    """The payload is not a card: `part` names the piece at fault (never echoing its value)."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Card:
    amc_number: str
    conventions: tuple[str, ...]
    csr: str
    member_number: str
    valid_from: dt.date
    valid_to: dt.date

    def payload(self) -> str:
        return "|".join((PREFIX, self.amc_number, ",".join(self.conventions), self.csr, self.member_number,
                         f"{self.valid_from:%Y%m%d}", f"{self.valid_to:%Y%m%d}"))  # fmt: skip

    def valid_on(self, day: dt.date) -> bool:
        return self.valid_from <= day <= self.valid_to


def _date(text: str, part: str) -> dt.date:
    if not re.fullmatch(r"\d{8}", text):
        raise CardError(part, "expected a date as YYYYMMDD")
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise CardError(part, "not a calendar date") from None


def parse_card(payload: str) -> Card:
    """Read a scanned payload; every refusal names the part (and never repeats the value)."""
    text = payload.strip()
    if len(text) > MAX_LENGTH:
        raise CardError("card", f"a payload is at most {MAX_LENGTH} characters")
    parts = text.split("|")
    if parts[0] != PREFIX:
        raise CardError("card", f"not a Rempart card payload (it starts with {PREFIX}|)")
    if len(parts) != 7:
        raise CardError("card", "expected 7 parts separated by '|'")
    _, amc, conventions, csr, member, start, end = parts
    member = member.replace(" ", "").upper()
    if not _AMC.fullmatch(amc):
        raise CardError("amc_number", "expected 8 to 10 digits")
    kinds = tuple(conventions.split(",")) if conventions else ()
    if not kinds or not all(_CONVENTION.fullmatch(kind) for kind in kinds):
        raise CardError("conventions", "expected agreement type codes separated by commas")
    if not _CSR.fullmatch(csr):
        raise CardError("csr", "expected up to 10 letters or digits")
    if not _MEMBER.fullmatch(member):
        raise CardError("member_number", "expected 1 to 20 letters or digits")
    valid_from, valid_to = _date(start, "valid_from"), _date(end, "valid_to")
    if valid_to < valid_from:
        raise CardError("valid_to", "the card ends before it starts")
    return Card(amc, kinds, csr, member, valid_from, valid_to)
