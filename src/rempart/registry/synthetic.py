"""A deterministic synthetic population: insurers and their contracts, beneficiary feeds, and
health professionals with their establishments.

Pure: no database, no I/O; everything is returned as Python objects. Every function derives
all its randomness from the integer ``seed`` it is given, through its own ``random.Random``
and ``Faker('fr_FR')`` instances (never the global ones): the same seed gives the same
output, in any process.

How the population is made realistic (and what is simplified):

* **Insurers** (:func:`generate_insurers`): 4 to 6 made-up mutuelles and institutions de
  prévoyance of clearly different sizes (the first holds about half of the families), each
  with 2 to 4 contracts whose guarantee schedules are written in format 1
  (``shared/vectors/README.md``) and follow the contrat responsable rules when
  ``responsable`` is true: ticket modérateur covered, hospital daily fee (``FJH``) at real
  cost, 100% Santé baskets at real cost, doctors' fees at most 200% BR (mandatory part
  included), optics at most 420 € per equipment with the frame at most 100 €, hearing aids
  class II well under 1,700 € an ear.
* **Families** (:func:`generate_feed_rows`): a member aged 18-95 (age pyramid of French
  adults), an optional spouse (mostly of the other sex, a few years apart), 0 to 4 children
  aged 0-25 born while their parents were 18-45, about 1.7% of births being twins. First
  names follow the sex, which is the NIR's sex digit; married women often use their
  husband's name (``birth_name`` then holds their own); children under 16 are mostly known
  by the member's NIR, date and rank of birth only.
* **Places of birth**: metropolitan departments weighted by population (Corsica as 2A/2B, or
  20 before 1976; Paris, Marseille and Lyon by arrondissement), overseas departments 971-976
  (2-digit commune), abroad (99 + INSEE country code, with some people born in French
  Algeria before 1962 under the old departments 91-94), and, rarely, an unknown month of
  birth (NIR month 20-42 or 50-99, date of birth set to 1 January).
* **Uniqueness**: within one call, every NIR is unique because order numbers are counted per
  (sex, year, month, department, commune); across the insurers of one population, each
  insurer draws its order numbers from its own sixth of 001-996, picked by its AMC number
  modulo 6 (the AMC numbers made by :func:`generate_insurers` have distinct residues).
  Member numbers are an affine permutation of a family counter, hence unique per insurer,
  in an insurer-specific format (8 to 10 digits, fixed leading digits); the counter of seed
  ``s`` starts at ``s`` times the number of families, so feeds of consecutive seeds for one
  insurer share no member number.
* **Canaries**: about ``canary_share`` of the rows are flagged; they are drawn from a
  separate random stream, so the rows themselves do not depend on the share and a canary
  row is indistinguishable from the others.

Speed matters (benchmarks generate a million rows): names are drawn from Faker once per seed
into pools, and the per-row work is plain arithmetic on date ordinals and pool look-ups.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import random
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

from faker import Faker
from stdnum import luhn

from rempart.registry.feed import FEED_COLUMNS
from rempart.registry.identifiers import make_finess, make_french_iban, make_nir, make_rpps, nir_check_key

__all__ = [
    "FEED_COLUMNS",
    "SyntheticContract",
    "SyntheticEstablishment",
    "SyntheticInsurer",
    "SyntheticProfessional",
    "generate_feed_rows",
    "generate_insurers",
    "generate_professionals",
]


# -- public data types ------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticContract:
    code: str
    label: str
    responsable: bool
    schedule: dict[str, Any]  # guarantee schedule, format 1: {"code", "rules", "ceilings"}


@dataclass(frozen=True)
class SyntheticInsurer:
    amc_number: str  # 8 digits
    name: str
    siren: str
    families: int
    contracts: tuple[SyntheticContract, ...]


@dataclass(frozen=True)
class SyntheticEstablishment:
    finess: str
    siret: str
    name: str
    kind: str


@dataclass(frozen=True)
class SyntheticProfessional:
    rpps: str
    family_name: str
    first_name: str
    profession: str
    specialty: str | None
    establishment_finess: str
    iban: str
    email: str
    phone: str


# -- reference tables -------------------------------------------------------------------------

# Metropolitan departments and their population (thousands, rounded, early 2020s).
_METRO_DEPARTMENTS: Final[tuple[tuple[str, int], ...]] = (
    ("01", 660), ("02", 530), ("03", 335), ("04", 165), ("05", 141), ("06", 1100), ("07", 330),
    ("08", 270), ("09", 155), ("10", 310), ("11", 375), ("12", 280), ("13", 2040), ("14", 695),
    ("15", 145), ("16", 350), ("17", 655), ("18", 300), ("19", 240), ("2A", 160), ("2B", 185),
    ("21", 535), ("22", 600), ("23", 115), ("24", 415), ("25", 545), ("26", 520), ("27", 600),
    ("28", 430), ("29", 915), ("30", 750), ("31", 1420), ("32", 190), ("33", 1650), ("34", 1190),
    ("35", 1090), ("36", 220), ("37", 610), ("38", 1270), ("39", 260), ("40", 415), ("41", 330),
    ("42", 765), ("43", 228), ("44", 1450), ("45", 680), ("46", 174), ("47", 330), ("48", 76),
    ("49", 820), ("50", 495), ("51", 565), ("52", 172), ("53", 307), ("54", 735), ("55", 184),
    ("56", 760), ("57", 1045), ("58", 204), ("59", 2610), ("60", 830), ("61", 280), ("62", 1460),
    ("63", 660), ("64", 690), ("65", 230), ("66", 480), ("67", 1140), ("68", 765), ("69", 1880),
    ("70", 235), ("71", 550), ("72", 565), ("73", 435), ("74", 830), ("75", 2130), ("76", 1255),
    ("77", 1420), ("78", 1450), ("79", 375), ("80", 570), ("81", 390), ("82", 260), ("83", 1080),
    ("84", 560), ("85", 690), ("86", 440), ("87", 372), ("88", 362), ("89", 335), ("90", 140),
    ("91", 1300), ("92", 1625), ("93", 1650), ("94", 1410), ("95", 1250),
)  # fmt: skip
# Overseas departments: code, population (thousands), number of 2-digit commune codes used.
_OVERSEAS: Final[tuple[tuple[str, int, int], ...]] = (
    ("971", 384, 34),
    ("972", 360, 34),
    ("973", 290, 62),
    ("974", 870, 24),
    ("975", 6, 2),
    ("976", 300, 17),
)
# Countries of birth (INSEE country codes, 99 + these 3 digits) with rough weights among the
# people born abroad who live in France.
_COUNTRIES: Final[tuple[tuple[str, float], ...]] = (
    ("352", 12.7),  # Algérie
    ("350", 11.9),  # Maroc
    ("139", 8.6),  # Portugal
    ("351", 4.5),  # Tunisie
    ("127", 4.0),  # Italie
    ("208", 3.6),  # Turquie
    ("134", 3.5),  # Espagne
    ("109", 2.5),  # Allemagne
    ("132", 2.0),  # Royaume-Uni
    ("131", 2.0),  # Belgique
    ("114", 2.0),  # Roumanie
    ("341", 1.8),  # Sénégal
    ("326", 1.7),  # Côte d'Ivoire
    ("216", 1.5),  # Chine
    ("322", 1.5),  # Cameroun
    ("335", 1.4),  # Mali
    ("243", 1.2),  # Viet Nam
    ("122", 0.8),  # Pologne
    ("140", 0.8),  # Suisse
    ("404", 0.6),  # États-Unis
)
_ALGERIA: Final = "352"
# French Algeria's departments before independence (5 July 1962): many people born there kept
# 91-94 (Alger, Oran, Constantine, Territoires du Sud) as their NIR department.
_ALGERIA_INDEPENDENCE: Final = dt.date(1962, 7, 5).toordinal()
_CORSICA_SPLIT_YEAR: Final = 1976  # before, Corsica was department 20 (still valid in NIRs)

# Shares of the places of birth: (metropolitan, overseas, abroad).
_ADULT_PLACE_SHARES: Final = (0.855, 0.03, 0.115)
_CHILD_PLACE_SHARES: Final = (0.935, 0.035, 0.03)
_COMMUNES_DEFAULT: Final = 400  # commune codes drawn in 001..400 (not every one exists)
_COMMUNES_CORSICA: Final = 240

# Adults' age bands (inclusive) with weights: the age pyramid of French adults, with fewer
# 18-24 year-olds as members (most are still on their parents' contract).
_MEMBER_AGE_BANDS: Final[tuple[tuple[int, int, float], ...]] = (
    (18, 24, 4.0), (25, 29, 7.0), (30, 34, 7.8), (35, 39, 8.2), (40, 44, 8.2), (45, 49, 8.3),
    (50, 54, 8.5), (55, 59, 8.4), (60, 64, 8.0), (65, 69, 7.4), (70, 74, 7.0), (75, 79, 5.2),
    (80, 84, 3.6), (85, 89, 2.4), (90, 95, 1.0),
)  # fmt: skip
_ADULT_MIN_AGE: Final = 18
_ADULT_MAX_AGE: Final = 95
_CHILD_MAX_AGE: Final = 25
_PARENT_MIN_AGE: Final = 18
_PARENT_MAX_AGE: Final = 45
# Number of children on the contract (0..4), with and without a spouse on it.
_CHILDREN_COUPLE: Final = (0.28, 0.24, 0.30, 0.13, 0.05)
_CHILDREN_SINGLE: Final = (0.60, 0.20, 0.14, 0.05, 0.01)
_TWIN_SHARE: Final = 0.017
_MIN_SIBLING_GAP_DAYS: Final = 330
_UNKNOWN_MONTH_SHARE: Final = 0.03  # of adults born abroad before 1980

_NIR_SLOTS: Final = 6
_NIR_SLOT_SIZE: Final = 166  # 6 x 166 = 996 order numbers (001-996)

# Contract levels and their weights (young members favour cheaper contracts, older ones the
# richer ones). Codes not listed weigh 1.
_CONTRACT_WEIGHTS: Final[dict[str, tuple[float, float, float]]] = {
    # code: (under 30, 30-59, 60 and over)
    "ESSENTIEL": (0.45, 0.30, 0.22),
    "CONFORT": (0.40, 0.46, 0.42),
    "PREMIUM": (0.10, 0.20, 0.30),
    "HOSPI": (0.05, 0.04, 0.06),
}

_INSURER_NAMES: Final = (
    "Mutuelle des Quatre Vents",
    "Union Mutualiste Cap Estuaire",
    "Mutuelle Ardoise et Granit",
    "Prévoyance Horizon Bleu",
    "Mutuelle du Haut-Vallon",
    "Mutuelle Familiale des Trois Rivières",
    "Institution de Prévoyance des Métiers du Bois",
    "Mutuelle Phare Atlantique",
    "Entraide Santé des Coteaux",
    "Mutuelle Solidaire du Pays des Lacs",
)
# Share of the families per insurer, largest first, by number of insurers.
_INSURER_SHARES: Final[dict[int, tuple[float, ...]]] = {
    4: (0.50, 0.27, 0.15, 0.08),
    5: (0.48, 0.24, 0.14, 0.09, 0.05),
    6: (0.46, 0.22, 0.14, 0.09, 0.06, 0.03),
}


# -- small helpers ----------------------------------------------------------------------------


def _cumulative(weights: Sequence[float]) -> list[float]:
    return list(accumulate(weights))


def _pick(cum: Sequence[float], u: float) -> int:
    """Index drawn from cumulative weights ``cum`` given a uniform ``u`` in [0, 1)."""
    return min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)


def _add_years(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a non-leap year
        return day.replace(year=day.year + years, day=28)


def _luhn_complete(body: str) -> str:
    return body + str(luhn.calc_check_digit(body))


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum())


def _apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Split ``total`` by ``shares`` (largest remainder), at least 1 each when possible."""
    norm = sum(shares)
    raw = [total * s / norm for s in shares]
    counts = [int(x) for x in raw]
    order = sorted(range(len(shares)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    if total >= len(shares):
        for i, c in enumerate(counts):
            if c == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] = 1
    return counts


def _siren(rng: random.Random, first: str, used: set[str]) -> str:
    while True:
        body = first + "".join(str(rng.randrange(10)) for _ in range(8 - len(first)))
        siren = _luhn_complete(body)
        # 356000000 is La Poste, whose SIRETs follow another rule.
        if siren not in used and siren != "356000000":
            used.add(siren)
            return siren


# -- guarantee schedules ----------------------------------------------------------------------


def _pct(domain: str, percent: int, **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "kind": "br_percent_incl", "percent": percent, **extra}


def _flat(domain: str, amount: int, per: str, **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "kind": "flat", "amount": f"{amount}.00", "per": per, **extra}


def _real(domain: str, **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "kind": "real_cost", **extra}


def _ceiling(domain: str, amount: int, per: str, **extra: Any) -> dict[str, Any]:
    return {"domain": domain, "amount": f"{amount}.00", "per": per, **extra}


def _baskets() -> list[dict[str, Any]]:
    """100% Santé baskets: nothing left to pay (required of contrats responsables)."""
    return [_real(domain, basket="100_sante") for domain in ("optical", "dental", "audio")]


def _essentiel(rng: random.Random) -> dict[str, Any]:
    dental = rng.choice((100, 125))
    optical = rng.choice((100, 100, 120))
    rules = [
        _real("hospital", acts=["FJH"]),
        _pct("hospital", 100),
        _pct("pharmacy", 100, amo_rates=[65]),
        _pct("consultation", 100),
        *(_pct(domain, 100) for domain in ("lab", "radiology", "nursing", "physiotherapy", "midwifery")),
        _pct("transport", 100),
        *_baskets(),
        _pct("dental", dental),
        _pct("orthodontics", 100),
        _flat("optical", optical, "2y"),
        _pct("audio", 100),
    ]
    return {"code": "ESSENTIEL", "rules": rules, "ceilings": []}


def _confort(rng: random.Random) -> dict[str, Any]:
    consultation = rng.choice((150, 200, 200))
    dental = rng.choice((250, 300, 300))
    optical = rng.choice((200, 250, 250, 300))
    implant = rng.choice((500, 600, 600))
    rules = [
        _real("hospital", acts=["FJH"]),
        _flat("hospital", rng.choice((40, 45, 50)), "act", acts=["CHP"]),  # private room, per day
        _pct("hospital", consultation),
        _pct("pharmacy", 100),
        _pct("consultation", consultation),
        _pct("radiology", consultation),
        _pct("lab", 100),
        _pct("nursing", 100),
        _pct("physiotherapy", 150),
        _pct("midwifery", 100),
        _pct("transport", 100),
        *_baskets(),
        _pct("dental", dental),
        _real("dental_implant"),
        _pct("orthodontics", 250),
        _flat("optical", optical, "2y"),
        _flat("audio", 400, "act"),  # class II, per ear
        _flat("alternative_medicine", 30, "act"),
    ]
    ceilings = [
        _ceiling("optical", 100, "2y", acts=["frame"]),
        _ceiling("dental_implant", implant, "calendar_year"),
        _ceiling("alternative_medicine", 120, "calendar_year"),
    ]
    return {"code": "CONFORT", "rules": rules, "ceilings": ceilings}


def _premium(rng: random.Random) -> dict[str, Any]:
    optical = rng.choice((350, 400, 420))
    rules = [
        _real("hospital", acts=["FJH"]),
        _flat("hospital", rng.choice((70, 80)), "act", acts=["CHP"]),
        # Doctors' fees: at most 100% BR above the mandatory scheme's (contrat responsable).
        _pct("hospital", 200),
        _pct("pharmacy", 100),
        _pct("consultation", 200),
        _pct("radiology", 200),
        _pct("lab", 150),
        _pct("nursing", 150),
        _pct("physiotherapy", 200),
        _pct("midwifery", 200),
        _pct("transport", 100),
        *_baskets(),
        {"domain": "dental", "kind": "br_percent_extra", "percent": 300},
        _real("dental_implant"),
        _pct("orthodontics", 350),
        _flat("optical", optical, "2y"),
        _flat("audio", rng.choice((700, 800)), "act"),
        _flat("alternative_medicine", 50, "act"),
    ]
    ceilings = [
        _ceiling("optical", 100, "2y", acts=["frame"]),
        _ceiling("dental_implant", rng.choice((1000, 1200)), "calendar_year"),
        _ceiling("alternative_medicine", 250, "calendar_year"),
    ]
    return {"code": "PREMIUM", "rules": rules, "ceilings": ceilings}


def _hospi(rng: random.Random) -> dict[str, Any]:
    """Hospital-only cover, sold as a non-responsable contract."""
    rules = [
        _real("hospital", acts=["FJH"]),
        _flat("hospital", rng.choice((40, 50)), "act", acts=["CHP"]),
        _pct("hospital", rng.choice((250, 300))),
    ]
    return {"code": "HOSPI", "rules": rules, "ceilings": []}


def _contracts(rng: random.Random, size_rank: int) -> tuple[SyntheticContract, ...]:
    contracts = [
        SyntheticContract("ESSENTIEL", "Essentiel", True, _essentiel(rng)),
        SyntheticContract("CONFORT", "Confort", True, _confort(rng)),
    ]
    if size_rank <= 1 or rng.random() < 0.5:
        contracts.append(SyntheticContract("PREMIUM", "Premium", True, _premium(rng)))
    if size_rank == 0 or rng.random() < 0.3:
        contracts.append(SyntheticContract("HOSPI", "Hospi Sécurité", False, _hospi(rng)))
    return tuple(contracts)


# -- insurers ---------------------------------------------------------------------------------


def generate_insurers(seed: int, total_families: int) -> list[SyntheticInsurer]:
    """4 to 6 insurers of clearly different sizes, largest first, whose ``families`` sum to
    ``total_families``. Names, numbers and contracts depend on ``seed`` only."""
    if total_families < 0:
        raise ValueError("total_families must not be negative")
    rng = random.Random(f"rempart-insurers:{seed}")
    count = rng.randint(4, 6)
    names = rng.sample(_INSURER_NAMES, count)
    slots = rng.sample(range(_NIR_SLOTS), count)
    used_amc: set[str] = set()
    used_siren: set[str] = set()
    shares = [s * rng.uniform(0.92, 1.08) for s in _INSURER_SHARES[count]]
    shares.sort(reverse=True)
    families = _apportion(total_families, shares)
    insurers = []
    for rank, (name, slot, n_families) in enumerate(zip(names, slots, families, strict=True)):
        while True:
            value = rng.randrange(10_000_010, 99_999_990)
            amc = str(value - value % _NIR_SLOTS + slot)  # residue mod 6 = the insurer's NIR slot
            if amc not in used_amc:
                used_amc.add(amc)
                break
        siren = _siren(rng, "3" if name.startswith(("Institution", "Prévoyance")) else "77", used_siren)
        insurers.append(SyntheticInsurer(amc, name, siren, n_families, _contracts(rng, rank)))
    return insurers


# -- name pools -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _NamePools:
    male: tuple[str, ...]
    female: tuple[str, ...]
    family: tuple[str, ...]


@functools.lru_cache(maxsize=4)
def _name_pools(seed: int) -> _NamePools:
    """Names drawn from Faker once per seed (Faker is far too slow to call per row)."""
    fake = Faker("fr_FR")
    fake.seed_instance(f"rempart-names:{seed}")
    male = tuple(fake.first_name_male() for _ in range(3000))
    female = tuple(fake.first_name_female() for _ in range(3000))
    family = [fake.last_name() for _ in range(5000)]
    # Some double family names (both parents' names), as French law allows since 2005.
    family += [f"{fake.last_name()}-{fake.last_name()}" for _ in range(150)]
    return _NamePools(male, female, tuple(family))


# -- beneficiary feeds ------------------------------------------------------------------------


@dataclass(frozen=True)
class _InsurerFormat:
    """How an insurer writes its feeds (fixed per insurer, whatever the feed's seed)."""

    prefix: str  # fixed leading digits of member numbers
    width: int  # digits after the prefix
    multiplier: int  # member number = prefix + (multiplier * index + shift) mod 10**width
    shift: int
    fill_birth_name: bool  # whether the insurer repeats family_name as birth_name

    def member_number(self, index: int) -> str:
        modulus = 10**self.width
        return self.prefix + str((self.multiplier * (index % modulus) + self.shift) % modulus).zfill(self.width)


def _insurer_format(amc_number: str) -> _InsurerFormat:
    rng = random.Random(f"rempart-format:{amc_number}")
    length, prefix_len = rng.choice(((8, 1), (9, 1), (9, 2), (10, 2), (10, 3)))
    prefix = str(rng.randint(1, 9)) + "".join(str(rng.randrange(10)) for _ in range(prefix_len - 1))
    width = length - prefix_len
    modulus = 10**width
    multiplier = rng.randrange(modulus // 10, modulus) | 1
    if multiplier % 5 == 0:
        multiplier += 2  # coprime with 10**width: index -> number is a permutation
    return _InsurerFormat(prefix, width, multiplier, rng.randrange(modulus), rng.random() < 0.4)


class _Places:
    """Draws places of birth as (NIR department, commune) pairs."""

    def __init__(self, shares: tuple[float, float, float]) -> None:
        metro_total = sum(p for _, p in _METRO_DEPARTMENTS)
        overseas_total = sum(p for _, p, _ in _OVERSEAS)
        abroad_total = sum(w for _, w in _COUNTRIES)
        entries: list[tuple[str, str, int]] = []  # (department, country code or "", communes)
        weights: list[float] = []
        for code, pop in _METRO_DEPARTMENTS:
            entries.append((code, "", _COMMUNES_CORSICA if code in ("2A", "2B") else _COMMUNES_DEFAULT))
            weights.append(shares[0] * pop / metro_total)
        for code, pop, communes in _OVERSEAS:
            entries.append((code, "", communes))
            weights.append(shares[1] * pop / overseas_total)
        for country, weight in _COUNTRIES:
            entries.append(("99", country, 0))
            weights.append(shares[2] * weight / abroad_total)
        self.entries = entries
        self.cum = _cumulative(weights)

    def draw(self, rng: random.Random, birth_ordinal: int) -> tuple[str, str]:
        u = rng.random
        dept, country, communes = self.entries[_pick(self.cum, u())]
        if country:
            if country == _ALGERIA and birth_ordinal < _ALGERIA_INDEPENDENCE and u() < 0.6:
                return str(91 + int(u() * 4)), f"{1 + int(u() * 350):03d}"
            return dept, country
        if len(dept) == 3:
            return dept, f"{1 + int(u() * communes):02d}"
        if dept == "75":
            return dept, str(101 + int(u() * 20))  # arrondissements 75101-75120
        if dept == "13" and u() < 0.5:
            return dept, str(201 + int(u() * 16))  # Marseille 13201-13216
        if dept == "69" and u() < 0.4:
            return dept, str(381 + int(u() * 9))  # Lyon 69381-69389
        if dept in ("2A", "2B") and dt.date.fromordinal(birth_ordinal).year < _CORSICA_SPLIT_YEAR:
            dept = "20"
        return dept, f"{1 + int(u() * communes):03d}"


_ADULT_PLACES: Final = _Places(_ADULT_PLACE_SHARES)
_CHILD_PLACES: Final = _Places(_CHILD_PLACE_SHARES)


class _NirFactory:
    """Builds NIRs unique within one generator: order numbers are counted per NIR cell
    (sex, year, month, department, commune) inside the insurer's slot of order numbers."""

    def __init__(self, rng: random.Random, slot: int) -> None:
        self.rng = rng
        self.base = slot * _NIR_SLOT_SIZE + 1
        self.counts: dict[str, int] = {}  # cell -> used * slot size + first order offset

    def make(
        self, sex: int, birth: dt.date, places: _Places, *, unknown_month_share: float = 0.0
    ) -> tuple[dt.date, str]:
        """A NIR for someone of this sex born on ``birth``; returns the date of birth to record
        with it, which is 1 January of the same year when the month of birth is unknown (only
        drawn, with probability ``unknown_month_share``, for people born abroad)."""
        rng = self.rng
        birth_ordinal = birth.toordinal()
        yy = birth.year % 100
        for _ in range(50):
            dept, commune = places.draw(rng, birth_ordinal)
            unknown = dept == "99" and unknown_month_share > 0 and rng.random() < unknown_month_share
            if unknown:
                month = 20 + int(rng.random() * 23) if rng.random() < 0.5 else 50 + int(rng.random() * 50)
            else:
                month = birth.month
            cell = f"{sex}{yy:02d}{month:02d}{dept}{commune}"
            # Per cell: a random first order number in the slot, then the following ones.
            packed = self.counts.get(cell)
            if packed is None:
                packed = int(rng.random() * _NIR_SLOT_SIZE)
            n, first = divmod(packed, _NIR_SLOT_SIZE)
            if n >= _NIR_SLOT_SIZE:
                continue  # this cell is full for this insurer: another commune
            self.counts[cell] = packed + _NIR_SLOT_SIZE
            order = self.base + (first + n) % _NIR_SLOT_SIZE
            if unknown:
                body = f"{cell}{order:03d}"
                return dt.date(birth.year, 1, 1), body + nir_check_key(body)
            return birth, make_nir(sex, birth, dept, commune, order)
        raise RuntimeError("could not find a free NIR order number (population far too large)")


def _contract_tables(insurer: SyntheticInsurer) -> tuple[list[str], list[list[float]]]:
    """Contract codes and, per age band (under 30, 30-59, 60+), their cumulative weights."""
    codes = [c.code for c in insurer.contracts]
    if not codes:
        raise ValueError(f"insurer {insurer.amc_number} has no contract")
    weights = [_CONTRACT_WEIGHTS.get(code, (1.0, 1.0, 1.0)) for code in codes]
    return codes, [_cumulative([w[band] for w in weights]) for band in range(3)]


def generate_feed_rows(
    seed: int, insurer: SyntheticInsurer, *, today: dt.date, canary_share: float = 0.002
) -> Iterator[tuple[dict[str, str], bool]]:
    """The beneficiary feed of ``insurer``: one row per beneficiary of its ``families``
    families, member first, then spouse and children.

    Yields ``(row, is_canary)``; ``row`` maps every name of :data:`FEED_COLUMNS` to a string
    (ISO dates, ``""`` for absent values). About ``canary_share`` of the rows are canaries.
    """
    if not 0.0 <= canary_share <= 1.0:
        raise ValueError("canary_share must be between 0 and 1")
    return _feed_rows(seed, insurer, today, canary_share)


def _feed_rows(  # one family at a time, in one loop: speed matters here
    seed: int, insurer: SyntheticInsurer, today: dt.date, canary_share: float
) -> Iterator[tuple[dict[str, str], bool]]:
    rng = random.Random(f"rempart-feed:{seed}:{insurer.amc_number}")
    canary_rng = random.Random(f"rempart-canary:{seed}:{insurer.amc_number}")
    u = rng.random
    pools = _name_pools(seed)
    males, females, surnames = pools.male, pools.female, pools.family
    n_males, n_females, n_surnames = len(males), len(females), len(surnames)
    fmt = _insurer_format(insurer.amc_number)
    if insurer.families > 10**fmt.width:
        raise ValueError("too many families for this insurer's member number format")
    # Family indexes of seed s are s*F .. s*F+F-1 (F families): feeds made with consecutive
    # seeds for one insurer (benchmarks stitch them together) share no member number.
    first_index = seed * insurer.families
    slot = int(insurer.amc_number) % _NIR_SLOTS if insurer.amc_number.isdigit() else 0
    nirs = _NirFactory(rng, slot)
    codes, contract_cums = _contract_tables(insurer)
    fill_birth_name = fmt.fill_birth_name

    today_ord = today.toordinal()
    oldest_adult = _add_years(today, -(_ADULT_MAX_AGE + 1)).toordinal() + 1
    youngest_adult = _add_years(today, -_ADULT_MIN_AGE).toordinal()
    oldest_child = _add_years(today, -(_CHILD_MAX_AGE + 1)).toordinal() + 1
    age_cum = _cumulative([w for _, _, w in _MEMBER_AGE_BANDS])
    age_ranges = [
        (_add_years(today, -(hi + 1)).toordinal() + 1, _add_years(today, -lo).toordinal())
        for lo, hi, _ in _MEMBER_AGE_BANDS
    ]
    age30 = _add_years(today, -30).toordinal()
    age60 = _add_years(today, -60).toordinal()
    age16 = _add_years(today, -16).toordinal()
    age18 = youngest_adult
    age24 = _add_years(today, -24).toordinal()
    born_1980 = dt.date(1980, 1, 1).toordinal()
    oldest_year = dt.date.fromordinal(oldest_adult).year
    children_couple = _cumulative(_CHILDREN_COUPLE)
    children_single = _cumulative(_CHILDREN_SINGLE)
    next_month = (today.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    this_year_end = dt.date(today.year, 12, 31)
    fromordinal = dt.date.fromordinal

    # Canaries: gaps between canary rows drawn uniformly in [1, 2/share - 1] (mean 1/share).
    max_gap = max(1, round(2 / canary_share) - 1) if canary_share > 0 else 0
    next_canary = canary_rng.randint(1, max_gap) if max_gap else -1
    row_no = 0

    def adult(sex: int, birth_ord: int) -> tuple[dt.date, str]:
        """A date of birth and a NIR for an adult born on ``birth_ord``."""
        birth = fromordinal(birth_ord)
        # Rare unknown months of birth, for people born abroad before 1980 (and not made
        # older than the oldest adults by the 1 January convention).
        share = _UNKNOWN_MONTH_SHARE if birth_ord < born_1980 and birth.year > oldest_year else 0.0
        return nirs.make(sex, birth, _ADULT_PLACES, unknown_month_share=share)

    def first_name(sex: int, taken: set[str]) -> str:
        for _ in range(20):
            name = males[int(u() * n_males)] if sex == 1 else females[int(u() * n_females)]
            if name not in taken:
                break
        taken.add(name)
        return name

    def surname() -> str:
        return surnames[int(u() * n_surnames)]

    def month_start(ordinal: int, january: bool) -> int:
        day = fromordinal(ordinal)
        return dt.date(day.year, 1 if january else day.month, 1).toordinal()

    for family_no in range(insurer.families):
        member_number = fmt.member_number(first_index + family_no)

        # -- member
        lo, hi = age_ranges[_pick(age_cum, u())]
        m_sex = 1 if u() < 0.5 else 2
        m_birth, m_nir = adult(m_sex, lo + int(u() * (hi - lo + 1)))
        m_ord = m_birth.toordinal()
        band = 0 if m_ord > age30 else (2 if m_ord <= age60 else 1)

        # -- spouse
        member_age = (today_ord - m_ord) / 365.25
        p_spouse = 0.1 if member_age < 25 else 0.35 if member_age < 30 else 0.58 if member_age < 80 else 0.35
        spouse: tuple[int, dt.date, str] | None = None
        if u() < p_spouse:
            s_sex = (3 - m_sex) if u() < 0.97 else m_sex
            mean_gap = 0.0 if s_sex == m_sex else (2.0 if m_sex == 1 else -2.0)  # years younger
            s_ord = m_ord + int(rng.gauss(mean_gap, 4.0) * 365.25)
            s_ord = min(max(s_ord, oldest_adult), youngest_adult)
            s_birth, s_nir = adult(s_sex, s_ord)
            spouse = (s_sex, s_birth, s_nir)

        # -- names
        m_own = surname()
        m_family, m_birth_name = m_own, m_own
        taken: set[str] = set()
        m_first = first_name(m_sex, taken)
        s_family = s_birth_name = s_first = ""
        if spouse is not None:
            s_own = surname()
            s_family, s_birth_name = s_own, s_own
            s_first = first_name(spouse[0], taken)
            if spouse[0] != m_sex:
                married = u() < 0.7
                if m_sex == 1:
                    if married and u() < 0.85:
                        s_family = m_own  # the wife uses her husband's name
                    father_name = m_own
                else:
                    if married and u() < 0.85:
                        m_family = s_own
                    father_name = s_own
                mother_name = s_own if m_sex == 1 else m_own
                r = u()
                kids_name = (
                    father_name
                    if r < 0.88
                    else f"{father_name}-{mother_name}"
                    if r < 0.95 and father_name != mother_name
                    else mother_name
                )
            else:
                kids_name = m_own
        elif m_sex == 2 and member_age >= 28 and u() < 0.4:
            m_family = surname()  # name of a former or late husband
            kids_name = m_family if u() < 0.7 else m_own
        else:
            kids_name = m_own if (m_sex == 2 or u() < 0.9) else surname()

        # -- children: born while the parent(s) were 18-45, aged 0-25 today
        lo = max(oldest_child, _add_years(m_birth, _PARENT_MIN_AGE).toordinal())
        hi = min(today_ord, _add_years(m_birth, _PARENT_MAX_AGE + 1).toordinal() - 1)
        if spouse is not None:
            lo = max(lo, _add_years(spouse[1], _PARENT_MIN_AGE).toordinal())
            hi = min(hi, _add_years(spouse[1], _PARENT_MAX_AGE + 1).toordinal() - 1)
        child_ords: list[int] = []
        if lo <= hi:
            wanted = _pick(children_couple if spouse is not None else children_single, u())
            if hi - lo < 730:
                wanted = min(wanted, 1)
            draws = sorted(lo + int(u() * (hi - lo + 1)) for _ in range(wanted))
            previous = -(10**9)
            twins = False
            for d in draws:
                if d - previous < _MIN_SIBLING_GAP_DAYS:
                    d = previous + _MIN_SIBLING_GAP_DAYS + int(u() * 400)
                if d > hi:
                    break
                child_ords.append(d)
                previous = d
                if u() < _TWIN_SHARE and not twins:  # at most one pair of twins
                    child_ords.append(d)
                    twins = True

        # -- contract and coverage
        contract = codes[_pick(contract_cums[band], u())]
        member_from18 = _add_years(m_birth, _ADULT_MIN_AGE).toordinal()
        if u() < 0.01:
            family_start = next_month.toordinal()
        else:
            years_ago = min(rng.expovariate(1 / 7.0), 25.0)
            family_start = month_start(today_ord - int(years_ago * 365.25), u() < 0.35)
            if family_start < member_from18:
                family_start = month_start(member_from18 + 31, False)
            family_start = min(family_start, today_ord)
        starts = [family_start]
        s_start = family_start
        if spouse is not None:
            spouse_from18 = _add_years(spouse[1], _ADULT_MIN_AGE).toordinal()
            if u() < 0.25 and family_start < today_ord:
                s_start = month_start(family_start + int(u() * (today_ord - family_start)), False)
                s_start = max(s_start, family_start)
            if s_start < spouse_from18:
                s_start = min(max(month_start(spouse_from18 + 31, False), family_start), max(today_ord, family_start))
            starts.append(s_start)
        child_starts = [max(family_start, c) for c in child_ords]
        latest_start = max(starts + child_starts)
        family_end = ""
        r = u()
        if r < 0.05 and latest_start < today_ord - 1:
            end_day = fromordinal(latest_start + int(u() * (today_ord - 1 - latest_start)))
            end_day = (end_day.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
            if end_day.toordinal() >= today_ord:
                end_day = fromordinal(today_ord - 1)
            family_end = end_day.isoformat()
        elif r < 0.07:
            end_day = this_year_end if this_year_end.toordinal() >= latest_start else dt.date(today.year + 1, 12, 31)
            family_end = end_day.isoformat()

        # -- rows
        people: list[tuple[str, str, str, str, dt.date, str, int, str]] = [
            ("member", m_family, m_first, m_birth_name, m_birth, m_nir, family_start, family_end)
        ]
        if spouse is not None:
            people.append(("spouse", s_family, s_first, s_birth_name, spouse[1], spouse[2], s_start, family_end))
        for c_ord, c_start in zip(child_ords, child_starts, strict=True):
            c_sex = 1 if u() < 0.512 else 2
            c_birth = fromordinal(c_ord)
            if c_ord <= age18:
                has_nir = True
            elif c_ord <= age16:
                has_nir = u() < 0.85
            else:
                has_nir = u() < 0.25
            c_nir = nirs.make(c_sex, c_birth, _CHILD_PLACES)[1] if has_nir else ""
            c_end = family_end
            if not c_end and c_ord <= age24 and u() < 0.5:
                c_end = (_add_years(c_birth, _CHILD_MAX_AGE + 1) - dt.timedelta(days=1)).isoformat()
            people.append(("child", kids_name, first_name(c_sex, taken), kids_name, c_birth, c_nir, c_start, c_end))

        seen: dict[dt.date, int] = {}
        for relationship, family, first, birth_name, birth, own_nir, start, end in people:
            rank = seen.get(birth, 0) + 1
            seen[birth] = rank
            row_no += 1
            is_canary = row_no == next_canary
            if is_canary:
                next_canary = row_no + canary_rng.randint(1, max_gap)
            yield (
                {
                    "member_number": member_number,
                    "member_nir": m_nir,
                    "beneficiary_nir": own_nir,
                    "family_name": family,
                    "first_name": first,
                    "birth_name": birth_name if birth_name != family else (family if fill_birth_name else ""),
                    "birth_date": birth.isoformat(),
                    "birth_rank": str(rank),
                    "relationship": relationship,
                    "contract": contract,
                    "coverage_start": fromordinal(start).isoformat(),
                    "coverage_end": end,
                },
                is_canary,
            )


# -- professionals and establishments ---------------------------------------------------------


@dataclass(frozen=True)
class _ProfessionSpec:
    share: float
    profession: str
    specialties: tuple[str | None, ...]
    female_share: float
    kind: str
    group: tuple[int, int]  # professionals per establishment (min, max)
    shared_account: bool  # paid to the establishment's account


_SPECIALTIES: Final = (
    "cardiology",
    "dermatology",
    "gynaecology",
    "ophthalmology",
    "paediatrics",
    "psychiatry",
    "radiology",
    "otorhinolaryngology",
    "rheumatology",
    "gastroenterology",
    "anaesthesiology",
    "general_surgery",
)
_PROFESSIONS: Final[tuple[_ProfessionSpec, ...]] = (
    _ProfessionSpec(0.30, "pharmacist", (None,), 0.68, "pharmacy", (1, 3), True),
    _ProfessionSpec(0.20, "nurse", (None,), 0.87, "nursing_practice", (1, 4), False),
    _ProfessionSpec(0.12, "physician", ("general_medicine",), 0.50, "medical_practice", (1, 5), False),
    _ProfessionSpec(0.10, "physiotherapist", (None,), 0.50, "physio_practice", (1, 3), False),
    _ProfessionSpec(0.08, "dentist", (None, None, None, None, "orthodontics"), 0.50, "dental_practice", (1, 3), False),
    _ProfessionSpec(0.04, "physician", _SPECIALTIES, 0.45, "medical_practice", (1, 3), False),
    _ProfessionSpec(0.04, "physician", _SPECIALTIES, 0.45, "hospital", (2, 12), True),
    _ProfessionSpec(0.05, "optician", (None,), 0.60, "optician", (1, 2), True),
    _ProfessionSpec(0.03, "biologist", ("medical_biology",), 0.55, "lab", (1, 4), True),
    _ProfessionSpec(0.02, "midwife", (None,), 0.97, "midwifery_practice", (1, 2), False),
    _ProfessionSpec(0.02, "audiologist", (None,), 0.50, "audiology", (1, 2), True),
)
_ESTABLISHMENT_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "pharmacy": ("Pharmacie {place}", "Grande Pharmacie {place}", "Pharmacie {place}"),
    "nursing_practice": ("Cabinet infirmier {place}", "Soins infirmiers {place}"),
    "medical_practice": ("Maison de santé {place}", "Cabinet médical {place}", "Centre médical {place}"),
    "physio_practice": ("Cabinet de kinésithérapie {place}", "Kiné {place}"),
    "dental_practice": ("Cabinet dentaire {place}", "Centre dentaire {place}"),
    "hospital": ("Centre hospitalier {place}", "Clinique {place}", "Polyclinique {place}"),
    "optician": ("Optique {place}", "Les Lunettes {place}", "Vision {place}"),
    "lab": ("Laboratoire d'analyses {place}", "Biolab {place}"),
    "midwifery_practice": ("Cabinet de sage-femme {place}",),
    "audiology": ("Centre auditif {place}", "Audition {place}"),
}
_PLACE_NAMES: Final = (
    "du Centre", "de la Gare", "du Marché", "des Halles", "du Port", "des Tilleuls", "du Parc",
    "de la Mairie", "du Château", "des Arcades", "de la Poste", "du Lac", "des Remparts",
    "de la Cathédrale", "du Pont", "des Quais", "de la Fontaine", "du Val", "des Écoles", "du Stade",
)  # fmt: skip
# Towns for establishment names, with their department (the FINESS number's first characters).
_TOWNS: Final[tuple[tuple[str, str], ...]] = (
    ("Paris", "75"), ("Marseille", "13"), ("Lyon", "69"), ("Toulouse", "31"), ("Nice", "06"),
    ("Nantes", "44"), ("Strasbourg", "67"), ("Montpellier", "34"), ("Bordeaux", "33"), ("Lille", "59"),
    ("Rennes", "35"), ("Reims", "51"), ("Toulon", "83"), ("Grenoble", "38"), ("Dijon", "21"),
    ("Angers", "49"), ("Nîmes", "30"), ("Clermont-Ferrand", "63"), ("Le Mans", "72"), ("Brest", "29"),
    ("Tours", "37"), ("Amiens", "80"), ("Limoges", "87"), ("Metz", "57"), ("Besançon", "25"),
    ("Perpignan", "66"), ("Orléans", "45"), ("Rouen", "76"), ("Mulhouse", "68"), ("Caen", "14"),
    ("Nanterre", "92"), ("Créteil", "94"), ("Versailles", "78"), ("Avignon", "84"), ("Poitiers", "86"),
    ("Pau", "64"), ("Bayonne", "64"), ("La Rochelle", "17"), ("Annecy", "74"), ("Chambéry", "73"),
    ("Valence", "26"), ("Colmar", "68"), ("Troyes", "10"), ("Auxerre", "89"), ("Niort", "79"),
    ("Agen", "47"), ("Albi", "81"), ("Rodez", "12"), ("Cahors", "46"), ("Tarbes", "65"), ("Bourges", "18"),
    ("Blois", "41"), ("Chartres", "28"), ("Évreux", "27"), ("Cherbourg", "50"), ("Lorient", "56"),
    ("Vannes", "56"), ("Quimper", "29"), ("Ajaccio", "2A"), ("Bastia", "2B"), ("Cergy", "95"),
    ("Évry", "91"), ("Bobigny", "93"), ("Melun", "77"), ("Beauvais", "60"), ("Arras", "62"),
)  # fmt: skip
_BANKS: Final = ("30004", "30003", "30002", "20041", "10278", "30066", "10107", "18206", "17515", "30076")
_DEPARTMENT_POPULATION: Final = dict(_METRO_DEPARTMENTS)
# Towns weighted by their department's population, shared between the department's towns.
_TOWN_WEIGHTS: Final = _cumulative(
    [_DEPARTMENT_POPULATION[d] / sum(1 for _, d2 in _TOWNS if d2 == d) for _, d in _TOWNS]
)


def generate_professionals(seed: int, count: int) -> tuple[list[SyntheticEstablishment], list[SyntheticProfessional]]:
    """``count`` professionals (pharmacists first, then nurses, GPs…) and the establishments
    they practise in, with valid RPPS, FINESS, SIRET and French IBANs."""
    if count < 0:
        raise ValueError("count must not be negative")
    rng = random.Random(f"rempart-professionals:{seed}")
    fake = Faker("fr_FR")
    fake.seed_instance(f"rempart-professionals:{seed}")
    per_profession = _apportion(count, [spec.share for spec in _PROFESSIONS]) if count else [0] * len(_PROFESSIONS)
    rpps_bodies = rng.sample(range(10**8), count)
    used_finess: set[str] = set()
    used_siren: set[str] = set()
    used_email: set[str] = set()
    establishments: list[SyntheticEstablishment] = []
    professionals: list[SyntheticProfessional] = []

    def iban() -> str:
        account = "".join(str(rng.randrange(10)) for _ in range(11))
        branch = f"{rng.randrange(100000):05d}"
        return make_french_iban(rng.choice(_BANKS), branch, account)

    def establishment(kind: str) -> SyntheticEstablishment:
        town, dept = _TOWNS[_pick(_TOWN_WEIGHTS, rng.random())]
        while True:
            finess = make_finess(dept + f"{rng.randrange(10**6):06d}")
            if finess not in used_finess:
                used_finess.add(finess)
                break
        public = kind == "hospital" and rng.random() < 0.6
        siren = _siren(rng, "26" if public else str(rng.randint(3, 8)), used_siren)
        siret = _luhn_complete(siren + f"{rng.randint(1, 9):04d}")
        template = rng.choice(_ESTABLISHMENT_NAMES[kind])
        name = template.format(place=rng.choice(_PLACE_NAMES)) + f" – {town}"
        if kind == "hospital" and not public and name.startswith("Centre hospitalier"):
            name = "Clinique" + name.removeprefix("Centre hospitalier")
        created = SyntheticEstablishment(finess, siret, name, kind)
        establishments.append(created)
        return created

    def email(first: str, last: str) -> str:
        base = f"{_slug(first)}.{_slug(last)}"
        domain = fake.free_email_domain()
        candidate = f"{base}@{domain}"
        n = 1
        while candidate in used_email:
            n += 1
            candidate = f"{base}{n}@{domain}"
        used_email.add(candidate)
        return candidate

    next_rpps = iter(rpps_bodies)
    for spec, n in zip(_PROFESSIONS, per_profession, strict=True):
        remaining = n
        while remaining > 0:
            place = establishment(spec.kind)
            account = iban()
            size = min(remaining, rng.randint(*spec.group))
            remaining -= size
            for _ in range(size):
                female = rng.random() < spec.female_share
                first = fake.first_name_female() if female else fake.first_name_male()
                last = fake.last_name()
                professionals.append(
                    SyntheticProfessional(
                        rpps=make_rpps(f"10{next(next_rpps):08d}"),
                        family_name=last,
                        first_name=first,
                        profession=spec.profession,
                        specialty=rng.choice(spec.specialties),
                        establishment_finess=place.finess,
                        iban=account if spec.shared_account else iban(),
                        email=email(first, last),
                        phone=fake.phone_number(),
                    )
                )
    rng.shuffle(professionals)
    return establishments, professionals
