"""Checks for the French identifiers the registry handles (pure: no I/O, no framework, no DB).

Every refusal is an :class:`IdentifierError` carrying a stable machine ``code`` (``"nir.key"``,
``"iban.rib_key"``…) and an English ``message`` that says what is wrong and what is expected.
Messages never contain the value: values are personal data and messages end up in logs and
import reports. Use :func:`mask` when a report must hint at which value was refused.

What each check does, and the decisions taken where the rules are loose:

* **NIR** (:func:`parse_nir`): 15 characters once spaces, dots and dashes are removed
  (13 + a 2-digit key). Sex digit 1 or 2, or 3, 4, 7, 8 for special and temporary numbers
  (7 and 8, NIA-like, flagged ``temporary``; they must follow the NIR layout and key, the old
  NNP layout, gone since the end of 2022, is refused). Month 01-12, or 20-42 / 50-99 when the
  month is unknown or fictitious; 00, 13-19 and 43-49 are refused. Department: two
  characters 01-96 (20 stays valid: Corsica before 1976), 2A or 2B (Corsica, the only place
  letters are allowed), 97x/98x overseas (3-digit department 971-978 or 984-989, then a 2-digit
  commune), 99 for people born abroad (then a 3-digit country code, not 000); 00 is refused.
  Key = 97 - (first 13 as a number mod 97) with 2A -> 19 and 2B -> 18 for the computation.
  ``stdnum.fr.nir`` computes the same key (the tests use it as the oracle) but checks neither
  the sex digit, the month nor the department; the key is computed here without it to keep the
  per-row cost low (one regex, one ``int`` and one modulo on the happy path).
* **RPPS** (:func:`validate_rpps`): 11 digits, Luhn over all 11.
* **ADELI** (:func:`validate_adeli`): format only: 9 characters, a 2-character department
  (two digits, or 2A/2B for Corsica) then 7 digits. The last digit is a check key, but no
  authoritative public description of its algorithm was found, so it is not checked (a wrong
  guess would refuse real professionals; ADELI is being replaced by RPPS anyway).
* **FINESS** (:func:`validate_finess`): 9 characters, a 2-character department (two digits, or
  2A/2B for Corsica) then 7 digits, the last a Luhn check digit over the 9 characters. For
  Corsica the letter is replaced by its rank in the alphabet, 2A -> 21 and 2B -> 22, before the
  Luhn computation. This was established on 18 establishment numbers published by the ARS de
  Corse in the prefectures' official bulletins (e.g. CH de Bastia 2B0000020, CH d'Ajaccio
  2A0000014, CH de Bonifacio 2A0000170, CH de Calvi 2B0005342): all pass with 21/22 while
  none passes with 20, 19/18 or 00 in place of 2A/2B.
* **SIREN / SIRET**: ``stdnum.fr.siren`` / ``stdnum.fr.siret`` (Luhn; La Poste's SIRET rule).
* **IBAN** (:func:`validate_iban`): ``stdnum.iban`` (ISO 13616 structure and mod-97), plus for
  French-format IBANs (FR and MC, the countries whose BBAN is bank 5 + branch 5 + account 11 +
  RIB key 2) the length 27 and the French RIB key.
* **AMC number** (:func:`validate_amc_number`): 8 to 10 digits.

The ``make_*`` helpers build valid numbers for synthetic data and tests.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, fields
from typing import Final

from stdnum import iban as _stdnum_iban
from stdnum.exceptions import (
    InvalidChecksum,
    InvalidComponent,
    InvalidFormat,
    InvalidLength,
    ValidationError,
)
from stdnum.fr import siren as _stdnum_siren
from stdnum.fr import siret as _stdnum_siret

__all__ = [
    "IdentifierError",
    "Nir",
    "check_nir_matches_birth",
    "luhn_valid",
    "make_finess",
    "make_french_iban",
    "make_nir",
    "make_rpps",
    "mask",
    "nir_check_key",
    "normalize_nir",
    "parse_nir",
    "validate_adeli",
    "validate_amc_number",
    "validate_finess",
    "validate_iban",
    "validate_rpps",
    "validate_siren",
    "validate_siret",
]


class IdentifierError(ValueError):
    """An identifier refused by a check.

    ``code`` is stable and meant for machines (tests, metrics, API error bodies); ``message`` is
    English, says what is expected, and never contains the value.
    """

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[IdentifierError], tuple[str, str]]:
        # Keeps the exception picklable (worker processes) despite the two-argument constructor.
        return (type(self), (self.code, self.message))


# -- shared helpers ---------------------------------------------------------------------------

# Separators people type or copy from cards and documents: spaces (incl. no-break and narrow
# no-break spaces used in French typography), tabs, dots and dashes.
_SEPARATORS: Final = str.maketrans("", "", " \t.-\u00a0\u202f")
_DIGITS: Final = re.compile(r"[0-9]+")
# Luhn: the value of a digit once doubled (2 * d, minus 9 when above 9).
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _compact(value: str) -> str:
    return value.translate(_SEPARATORS).upper()


def _luhn_sum(digits: str, *, double_last: bool) -> int:
    """Luhn sum of ASCII digits; doubling starts at the last digit when ``double_last``."""
    total = 0
    double = double_last
    for ch in reversed(digits):
        d = ord(ch) - 48
        total += _DOUBLED[d] if double else d
        double = not double
    return total


def luhn_valid(digits: str) -> bool:
    """Plain Luhn (mod 10) check over a string of ASCII digits, check digit last.

    Returns False for an empty string or anything that is not made only of ASCII digits.
    """
    if not _DIGITS.fullmatch(digits):
        return False
    return _luhn_sum(digits, double_last=False) % 10 == 0


def _luhn_check_digit(body: str) -> str:
    """The digit that, appended to ``body`` (ASCII digits), makes it pass :func:`luhn_valid`."""
    return str(-_luhn_sum(body, double_last=True) % 10)


def mask(value: str) -> str:
    """Mask a value for reports and logs: at most the first 2 and the last character are kept.

    Values shorter than 8 characters are fully masked (keeping 3 of them would reveal too
    much). The length is preserved so that a reader can still spot a length problem, e.g.
    ``mask("185057512345678") == "18••••••••••••8"``.
    """
    n = len(value)
    if n < 8:
        return "•" * n
    return value[:2] + "•" * (n - 3) + value[-1]


# -- NIR ----------------------------------------------------------------------------------------

_NIR_LENGTH: Final = 15
_NIR_SEXES: Final = frozenset("123478")
_NIR_TEMPORARY_SEXES: Final = frozenset({7, 8})

# Happy path: one regex for the whole layout (sex, month, department and commune); the key is
# checked arithmetically afterwards. Department groups: 2 characters + 3-digit commune, or
# 3-digit overseas department + 2-digit commune. [0-9], not \d: \d matches non-ASCII digits.
_NIR_RE: Final = re.compile(
    r"([1-478])([0-9]{2})(0[1-9]|1[0-2]|[23][0-9]|4[0-2]|[5-9][0-9])"
    r"(?:(0[1-9]|[1-8][0-9]|9[0-6]|2[AB])([0-9]{3})|(99)(?!000)([0-9]{3})|(97[1-8]|98[4-9])([0-9]{2}))"
    r"([0-9]{3})([0-9]{2})"
)
# Characters allowed, whatever their meaning: digits, and 2A/2B at the department position.
_NIR_CHARACTERS: Final = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}")
_NIR_FIRST13: Final = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{6}")


@dataclass(frozen=True, slots=True, repr=False)
class Nir:
    """A parsed NIR. ``repr`` is masked: the value is personal data.

    ``department`` is '01'..'96', '2A', '2B', a 3-digit overseas code ('971'..'978',
    '984'..'989') or '99' (born abroad; ``commune`` then holds the country code). ``commune``
    has 3 digits, or 2 for overseas departments.
    """

    value: str  # 15 characters, normalised (uppercase, no separators)
    sex: int  # 1, 2, or 3, 4, 7, 8 for special and temporary numbers
    year: str  # 2 digits
    month: int  # 1-12 when known, 20-42 or 50-99 when unknown or fictitious
    month_known: bool
    department: str
    commune: str
    order: str  # 3 digits
    key: str  # 2 digits
    temporary: bool  # sex digit 7 or 8: temporary (NIA-like) number

    def __repr__(self) -> str:
        return f"Nir({mask(self.value)})"

    @property
    def born_abroad(self) -> bool:
        return self.department == "99"


def normalize_nir(value: str) -> str:
    """Remove spaces, dots and dashes, and uppercase (``2a`` -> ``2A``). No check is made."""
    return (value if value.isalnum() else value.translate(_SEPARATORS)).upper()


# parse_nir builds one Nir per feed row. The dataclass's generated __init__ goes through
# object.__setattr__ for every field (the price of frozen=True): ~1.2 µs for 10 fields. Setting
# the slots through their descriptors gives the same object at less than half the cost; the
# tests check that it equals Nir(...) built the ordinary way.
_NIR_SLOTS: Final = {f.name: getattr(Nir, f.name).__set__ for f in fields(Nir)}
_set_value, _set_sex, _set_year, _set_month, _set_month_known = (
    _NIR_SLOTS[name] for name in ("value", "sex", "year", "month", "month_known")
)
_set_department, _set_commune, _set_order, _set_key, _set_temporary = (
    _NIR_SLOTS[name] for name in ("department", "commune", "order", "key", "temporary")
)


def _new_nir(
    value: str,
    sex: int,
    year: str,
    month: int,
    month_known: bool,
    department: str,
    commune: str,
    order: str,
    key: str,
    temporary: bool,
) -> Nir:
    nir = object.__new__(Nir)
    _set_value(nir, value)
    _set_sex(nir, sex)
    _set_year(nir, year)
    _set_month(nir, month)
    _set_month_known(nir, month_known)
    _set_department(nir, department)
    _set_commune(nir, commune)
    _set_order(nir, order)
    _set_key(nir, key)
    _set_temporary(nir, temporary)
    return nir


def _nir_key(first13: str) -> int:
    """Key of a well-formed 13-character NIR body (2A -> 19, 2B -> 18 for the computation)."""
    dept_tail = first13[6]
    if dept_tail == "A":
        first13 = first13[:5] + "19" + first13[7:]
    elif dept_tail == "B":
        first13 = first13[:5] + "18" + first13[7:]
    return 97 - int(first13) % 97


def nir_check_key(first13: str) -> str:
    """The 2-digit key of a NIR's first 13 characters (separators allowed, 2A/2B handled)."""
    body = normalize_nir(first13)
    if len(body) != 13:
        raise IdentifierError("nir.length", "a NIR without its key must be 13 characters")
    if not _NIR_FIRST13.fullmatch(body):
        raise IdentifierError(
            "nir.characters", "a NIR must contain only digits, except 2A or 2B as the department of birth"
        )
    return f"{_nir_key(body):02d}"


def parse_nir(value: str) -> Nir:
    """Check a NIR and split it into its parts. Raises :class:`IdentifierError`.

    Codes: ``nir.length``, ``nir.characters``, ``nir.sex``, ``nir.month``, ``nir.department``,
    ``nir.key`` (checked in that order, so the first problem found is the one reported).
    """
    nir = (value if value.isalnum() else value.translate(_SEPARATORS)).upper()
    m = _NIR_RE.fullmatch(nir)
    if m is None:
        raise _nir_layout_error(nir)
    _, year, month_s, dept2, commune3, abroad, country, dept3, commune2, order, key = m.groups()
    if int(key) != _nir_key(nir[:13]):
        raise IdentifierError(
            "nir.key",
            "NIR key does not match the first 13 characters (check for a mistyped or swapped digit)",
        )
    sex = ord(nir[0]) - 48
    month = int(month_s)
    if dept2 is not None:
        department, commune = dept2, commune3
    elif abroad is not None:
        department, commune = abroad, country
    else:
        department, commune = dept3, commune2
    return _new_nir(nir, sex, year, month, month <= 12, department, commune, order, key, sex in _NIR_TEMPORARY_SEXES)


def _nir_layout_error(nir: str) -> IdentifierError:
    """Explain why a normalised NIR does not match the layout (slow path, errors only)."""
    n = len(nir)
    if n != _NIR_LENGTH:
        if n == 13:
            return IdentifierError(
                "nir.length", "NIR has 13 characters: its 2-digit key is missing (expected 15 characters)"
            )
        return IdentifierError(
            "nir.length", f"NIR must be 15 characters (13 + a 2-digit key) once spaces are removed; got {n}"
        )
    if not _NIR_CHARACTERS.fullmatch(nir):
        return IdentifierError(
            "nir.characters", "NIR must contain only digits, except 2A or 2B as the department of birth"
        )
    if nir[0] not in _NIR_SEXES:
        return IdentifierError(
            "nir.sex",
            "NIR first digit (sex) must be 1 or 2 (or 3, 4, 7, 8 for special and temporary numbers)",
        )
    month = int(nir[3:5])
    if not (1 <= month <= 12 or 20 <= month <= 42 or month >= 50):
        return IdentifierError(
            "nir.month",
            "NIR month of birth (4th-5th digits) must be 01-12, or 20-42 or 50-99 when the month is unknown",
        )
    department = nir[5:7]
    if department == "99":
        return IdentifierError(
            "nir.department",
            "NIR for a person born abroad (department 99) must carry a country code, not 000",
        )
    if department in ("97", "98"):
        return IdentifierError(
            "nir.department",
            "NIR overseas department of birth must be 971-978 or 984-989 (3 digits, then a 2-digit commune)",
        )
    return IdentifierError(
        "nir.department",
        "NIR department of birth (6th-7th characters) must be 01-96, 2A, 2B, 97x/98x overseas or 99 abroad",
    )


def check_nir_matches_birth(nir: Nir, birth_date: dt.date) -> None:
    """Check the NIR's year (and month, when known) of birth against a date of birth.

    Raises :class:`IdentifierError` with code ``nir.birth_date_mismatch``.
    """
    if int(nir.year) != birth_date.year % 100:
        raise IdentifierError(
            "nir.birth_date_mismatch", "NIR year of birth (2nd-3rd digits) differs from the birth date"
        )
    if nir.month_known and nir.month != birth_date.month:
        raise IdentifierError(
            "nir.birth_date_mismatch", "NIR month of birth (4th-5th digits) differs from the birth date"
        )


def make_nir(sex: int, birth_date: dt.date, department: str, commune: str, order: int) -> str:
    """Build a valid 15-character NIR (for synthetic data).

    ``department``: '01'..'96', '2A'/'2B' (3-digit ``commune``), '971'..'978' or '984'..'989'
    (2-digit ``commune``), or '99' with a 3-digit country code as ``commune``. ``order`` is
    1..999. Raises ValueError on inputs that cannot make a valid NIR.
    """
    if sex not in (1, 2, 3, 4, 7, 8):
        raise ValueError("sex must be 1, 2, 3, 4, 7 or 8")
    if not 1 <= order <= 999:
        raise ValueError("order must be from 1 to 999")
    department = department.upper()
    expected = 2 if len(department) == 3 else 3
    if len(department) not in (2, 3) or len(commune) != expected or not _DIGITS.fullmatch(commune):
        raise ValueError(
            "a 2-character department needs a 3-digit commune, a 3-digit (overseas) department a 2-digit one"
        )
    body = f"{sex}{birth_date.year % 100:02d}{birth_date.month:02d}{department}{commune}{order:03d}"
    if not _NIR_FIRST13.fullmatch(body):
        raise ValueError("department must be digits, 2A or 2B")
    nir = body + f"{_nir_key(body):02d}"
    parse_nir(nir)  # raises IdentifierError (a ValueError) if, e.g., the department does not exist
    return nir


# -- health professionals and establishments ------------------------------------------------------

_RPPS: Final = re.compile(r"[0-9]{11}")
_DEPT_THEN_7: Final = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}")
_AMC: Final = re.compile(r"[0-9]{8,10}")


def validate_rpps(value: str) -> str:
    """Check an RPPS number (11 digits, Luhn over all 11) and return it without separators."""
    rpps = _compact(value)
    if len(rpps) != 11:
        raise IdentifierError("rpps.length", f"RPPS number must be 11 digits; got {len(rpps)} characters")
    if not _RPPS.fullmatch(rpps):
        raise IdentifierError("rpps.characters", "RPPS number must contain only digits")
    if _luhn_sum(rpps, double_last=False) % 10:
        raise IdentifierError("rpps.luhn", "RPPS check digit (last digit) does not match the first 10 digits")
    return rpps


def make_rpps(body10: str) -> str:
    """Append the Luhn check digit to 10 digits, giving a valid RPPS number."""
    if len(body10) != 10 or not _DIGITS.fullmatch(body10):
        raise ValueError("an RPPS body is 10 digits")
    return body10 + _luhn_check_digit(body10)


def validate_adeli(value: str) -> str:
    """Check an ADELI number's format and return it without separators, uppercase.

    Checked: 9 characters, a department (two digits, or 2A/2B for Corsica) then 7 digits. Not
    checked: the final key, whose algorithm is not publicly documented (see the module notes).
    """
    adeli = _compact(value)
    if not _DEPT_THEN_7.fullmatch(adeli):
        raise IdentifierError(
            "adeli.format",
            "ADELI number must be 9 characters: a department (2 digits, or 2A/2B) then 7 digits",
        )
    return adeli


def _finess_luhn_digits(finess: str) -> str:
    # Corsica: 2A -> 21, 2B -> 22 (see the module notes for the evidence).
    letter = finess[1]
    if letter == "A":
        return "21" + finess[2:]
    if letter == "B":
        return "22" + finess[2:]
    return finess


def validate_finess(value: str) -> str:
    """Check a FINESS number and return it without separators, uppercase.

    9 characters: a department (2 digits, or 2A/2B for Corsica) then 7 digits, the last being a
    Luhn check digit over all 9, computed with 2A read as 21 and 2B as 22. AP-HP's legal entity
    750712184 passes; so do Corsican numbers such as 2B0000020 (CH de Bastia).
    """
    finess = _compact(value)
    if not _DEPT_THEN_7.fullmatch(finess):
        raise IdentifierError(
            "finess.format",
            "FINESS number must be 9 characters: a department (2 digits, or 2A/2B) then 7 digits",
        )
    if _luhn_sum(_finess_luhn_digits(finess), double_last=False) % 10:
        raise IdentifierError("finess.luhn", "FINESS check digit (last digit) does not match the first 8 characters")
    return finess


def make_finess(body8: str) -> str:
    """Append the Luhn check digit to 8 characters (2 digits or 2A/2B, then 6 digits)."""
    body8 = body8.upper()
    if len(body8) != 8 or not _DEPT_THEN_7.fullmatch(body8 + "0"):
        raise ValueError("a FINESS body is a department (2 digits, or 2A/2B) then 6 digits")
    return body8 + _luhn_check_digit(_finess_luhn_digits(body8))


# -- companies --------------------------------------------------------------------------------


def _stdnum_reason(exc: ValidationError, what: str, length: str) -> str:
    if isinstance(exc, InvalidLength):
        return f"{what} must be {length}"
    if isinstance(exc, InvalidFormat):
        return f"{what} must contain only digits"
    if isinstance(exc, InvalidChecksum):
        return f"{what} check digit (Luhn) does not match the other digits"
    return f"{what} is not valid"


def validate_siren(value: str) -> str:
    """Check a SIREN (9 digits, Luhn) with ``stdnum.fr.siren``; return it without separators."""
    try:
        return str(_stdnum_siren.validate(_compact(value)))
    except ValidationError as exc:
        raise IdentifierError("siren.invalid", _stdnum_reason(exc, "SIREN number", "9 digits")) from None


def validate_siret(value: str) -> str:
    """Check a SIRET (14 digits, Luhn, La Poste rule) with ``stdnum.fr.siret``; return it compact."""
    try:
        return str(_stdnum_siret.validate(_compact(value)))
    except ValidationError as exc:
        raise IdentifierError(
            "siret.invalid",
            _stdnum_reason(exc, "SIRET number", "14 digits (SIREN + 5-digit establishment number)"),
        ) from None


def validate_amc_number(value: str) -> str:
    """Check an insurer's AMC number (8 to 10 digits); return it without separators."""
    amc = _compact(value)
    if not _AMC.fullmatch(amc):
        raise IdentifierError("amc.format", "AMC number must be 8 to 10 digits")
    return amc


# -- IBAN -------------------------------------------------------------------------------------

# Countries whose IBAN has the French layout (bank 5, branch 5, account 11, RIB key 2) in the
# IBAN registry known to stdnum. French overseas departments and collectivities use FR.
_RIB_COUNTRIES: Final = frozenset({"FR", "MC"})
_IBAN_SHAPE: Final = re.compile(r"[A-Z]{2}[0-9]{2}[0-9A-Z]{11,30}")
# Letters of a RIB account number: A-I -> 1-9, J-R -> 1-9, S-Z -> 2-9.
_RIB_LETTERS: Final = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "12345678912345678923456789",
)
_RIB_BANK_BRANCH: Final = re.compile(r"[0-9]{5}")
_RIB_ACCOUNT: Final = re.compile(r"[0-9A-Z]{11}")


def _rib_key(bank: str, branch: str, account: str) -> int:
    return 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account.translate(_RIB_LETTERS))) % 97


def validate_iban(value: str) -> str:
    """Check an IBAN and return it compact and uppercase.

    ``stdnum.iban`` checks the country, the per-country structure and the mod-97 check digits;
    for French-format IBANs (FR, MC) the length 27 and the RIB key are checked as well.
    Codes: ``iban.invalid``, ``iban.rib_key``.
    """
    number = _compact(value)
    if not _IBAN_SHAPE.fullmatch(number):
        raise IdentifierError(
            "iban.invalid",
            "IBAN must be a 2-letter country code, 2 check digits, then 11 to 30 letters or digits",
        )
    country = number[:2]
    if country in _RIB_COUNTRIES and len(number) != 27:
        raise IdentifierError(
            "iban.invalid", f"a French IBAN must be 27 characters; got {len(number)} once spaces are removed"
        )
    try:
        _stdnum_iban.validate(number)
    except InvalidChecksum:
        raise IdentifierError(
            "iban.invalid", "IBAN check digits (3rd-4th characters) do not match the rest (mod-97 check)"
        ) from None
    except InvalidComponent:
        raise IdentifierError("iban.invalid", "IBAN country code is not an IBAN country") from None
    except (InvalidFormat, InvalidLength):
        raise IdentifierError(
            "iban.invalid", "IBAN length or account layout does not match what its country requires"
        ) from None
    except ValidationError:
        raise IdentifierError("iban.invalid", "IBAN is not valid") from None
    if country in _RIB_COUNTRIES and _rib_key(number[4:9], number[9:14], number[14:25]) != int(number[25:27]):
        raise IdentifierError(
            "iban.rib_key",
            "French RIB key (last 2 digits) does not match the bank, branch and account numbers",
        )
    return number


def make_french_iban(bank: str, branch: str, account: str) -> str:
    """Build a valid French IBAN: computes the RIB key and the IBAN check digits.

    ``bank`` and ``branch`` are 5 digits, ``account`` 11 digits or letters.
    """
    account = account.upper()
    if not (_RIB_BANK_BRANCH.fullmatch(bank) and _RIB_BANK_BRANCH.fullmatch(branch)):
        raise ValueError("bank and branch codes are 5 digits each")
    if not _RIB_ACCOUNT.fullmatch(account):
        raise ValueError("an account number is 11 digits or letters")
    bban = f"{bank}{branch}{account}{_rib_key(bank, branch, account):02d}"
    return "FR" + str(_stdnum_iban.calc_check_digits("FR00" + bban)) + bban
