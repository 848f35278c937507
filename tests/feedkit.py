"""Small builders for feed files used by the tests."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

from rempart.registry.feed import FEED_COLUMNS
from rempart.registry.identifiers import make_nir

AMC_A = "12345678"
AMC_B = "87654321"
SIREN_A = "732829320"
SIREN_B = "552100554"


def person_nir(sex: int, birth: dt.date, order: int, department: str = "75") -> str:
    commune = "056" if len(department) == 2 else "05"
    return make_nir(sex, birth, department, commune, order)


def family(
    member_number: str, *, order: int, contract: str = "ESSENTIEL", start: str = "2025-01-01"
) -> list[dict[str, str]]:
    """A member, a spouse and twins without NIRs of their own."""
    member_birth = dt.date(1980, 5, 17)
    spouse_birth = dt.date(1982, 11, 3)
    twins_birth = dt.date(2018, 2, 9)
    member_nir = person_nir(1, member_birth, order)
    base = {
        "member_number": member_number,
        "member_nir": member_nir,
        "contract": contract,
        "coverage_start": start,
        "coverage_end": "",
        "birth_name": "",
    }
    return [
        {
            **base,
            "beneficiary_nir": member_nir,
            "family_name": "Lefebvre",
            "first_name": "Julien",
            "birth_date": member_birth.isoformat(),
            "birth_rank": "1",
            "relationship": "member",
        },
        {
            **base,
            "beneficiary_nir": person_nir(2, spouse_birth, order, "2A"),
            "family_name": "Lefebvre",
            "first_name": "Camille",
            "birth_name": "Rossi",
            "birth_date": spouse_birth.isoformat(),
            "birth_rank": "1",
            "relationship": "spouse",
        },
        {
            **base,
            "beneficiary_nir": "",
            "family_name": "Lefebvre",
            "first_name": "Léa",
            "birth_date": twins_birth.isoformat(),
            "birth_rank": "1",
            "relationship": "child",
        },
        {
            **base,
            "beneficiary_nir": "",
            "family_name": "Lefebvre",
            "first_name": "Hugo",
            "birth_date": twins_birth.isoformat(),
            "birth_rank": "2",
            "relationship": "child",
        },
    ]


def families(count: int, *, first: int = 1, contract: str = "ESSENTIEL") -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for i in range(first, first + count):
        rows.extend(family(f"M{i:07d}", order=i, contract=contract))
    return rows


def csv_text(rows: list[dict[str, str]], *, delimiter: str = ",", columns: tuple[str, ...] = FEED_COLUMNS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), delimiter=delimiter, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_feed(path: Path, rows: list[dict[str, str]], *, delimiter: str = ",", bom: bool = False) -> Path:
    data = csv_text(rows, delimiter=delimiter).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


SCHEDULE_ESSENTIEL = {
    "code": "ESSENTIEL",
    "rules": [
        {"domain": "pharmacy", "kind": "br_percent_incl", "percent": 100},
        {"domain": "hospital", "acts": ["FJH"], "kind": "real_cost"},
    ],
}
SCHEDULE_CONFORT = {
    "code": "CONFORT",
    "rules": [{"domain": "consultation", "kind": "br_percent_incl", "percent": 200}],
    "ceilings": [{"domain": "optical", "acts": ["frame"], "amount": "100.00", "per": "2y"}],
}
