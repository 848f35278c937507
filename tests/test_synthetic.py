"""The synthetic population (rempart.registry.synthetic): determinism, identifier validity and
consistency, uniqueness, family structure, places of birth, canaries, schedules, professionals.

Most checks run on one sample of more than 20,000 rows (every insurer of one seed); identifiers
are checked with rempart.registry.identifiers and, where it implements the same rule, stdnum."""

from __future__ import annotations

import collections
import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

import pytest
from faker.providers.person.fr_FR import Provider as FrenchNames
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum.fr import nir as stdnum_nir
from stdnum.fr import siren as stdnum_siren
from stdnum.fr import siret as stdnum_siret

from rempart.coverage.schedule import parse_schedule
from rempart.registry import feed, synthetic
from rempart.registry.identifiers import (
    check_nir_matches_birth,
    parse_nir,
    validate_amc_number,
    validate_finess,
    validate_iban,
    validate_rpps,
    validate_siren,
    validate_siret,
)

SEED = 2024
TODAY = dt.date(2026, 11, 23)
FAMILIES = 8_800  # about 21,000 rows over all the insurers

Row = dict[str, str]
Sample = list[tuple[str, Row, bool]]  # (AMC number, row, is_canary)


def rows_of(insurer: synthetic.SyntheticInsurer, seed: int = SEED, **kwargs: float) -> list[tuple[Row, bool]]:
    return list(synthetic.generate_feed_rows(seed, insurer, today=TODAY, **kwargs))


def age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


@pytest.fixture(scope="module")
def insurers() -> list[synthetic.SyntheticInsurer]:
    return synthetic.generate_insurers(SEED, FAMILIES)


@pytest.fixture(scope="module")
def sample(insurers: list[synthetic.SyntheticInsurer]) -> Sample:
    return [(insurer.amc_number, row, canary) for insurer in insurers for row, canary in rows_of(insurer)]


def families_of(sample: Iterable[tuple[str, Row, bool]]) -> dict[tuple[str, str], list[Row]]:
    families: dict[tuple[str, str], list[Row]] = collections.defaultdict(list)
    for amc, row, _ in sample:
        families[(amc, row["member_number"])].append(row)
    return families


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_population_and_different_seed_differs() -> None:
    first = synthetic.generate_insurers(5, 300)
    assert synthetic.generate_insurers(5, 300) == first
    assert synthetic.generate_insurers(6, 300) != first
    smallest = first[-1]
    assert rows_of(smallest, seed=5) == rows_of(smallest, seed=5)
    other = rows_of(smallest, seed=6)
    assert other != rows_of(smallest, seed=5)
    assert {r["member_nir"] for r, _ in other}.isdisjoint({r["member_nir"] for r, _ in rows_of(smallest, seed=5)})
    assert synthetic.generate_professionals(5, 50) == synthetic.generate_professionals(5, 50)
    assert synthetic.generate_professionals(5, 50) != synthetic.generate_professionals(6, 50)


def test_canary_flags_do_not_change_the_rows(insurers: list[synthetic.SyntheticInsurer]) -> None:
    insurer = insurers[-1]
    without = rows_of(insurer, canary_share=0.0)
    many = rows_of(insurer, canary_share=0.5)
    assert [r for r, _ in without] == [r for r, _ in many]
    assert not any(c for _, c in without)
    assert 0.4 < sum(c for _, c in many) / len(many) < 0.6
    assert all(c for _, c in rows_of(insurer, canary_share=1.0))
    with pytest.raises(ValueError):
        synthetic.generate_feed_rows(SEED, insurer, today=TODAY, canary_share=1.5)


def test_canary_share_about_right(sample: Sample) -> None:
    canaries = [row for _, row, canary in sample if canary]
    assert 0.0012 < len(canaries) / len(sample) < 0.003
    # Canary rows look like any other row: same columns, same kinds of values.
    assert {r["relationship"] for r in canaries} <= {"member", "spouse", "child"}
    assert all(set(r) == set(synthetic.FEED_COLUMNS) for r in canaries)


# -- insurers ------------------------------------------------------------------------------------


def test_insurers_sizes_and_identifiers(insurers: list[synthetic.SyntheticInsurer]) -> None:
    assert 4 <= len(insurers) <= 6
    sizes = [i.families for i in insurers]
    assert sum(sizes) == FAMILIES
    assert sizes == sorted(sizes, reverse=True)
    assert 0.4 < sizes[0] / FAMILIES < 0.6  # one big insurer
    assert sizes[-1] < sizes[0] / 4  # and clearly smaller ones
    assert len({i.name for i in insurers}) == len(insurers)
    assert len({i.amc_number for i in insurers}) == len(insurers)
    for insurer in insurers:
        assert len(insurer.amc_number) == 8
        validate_amc_number(insurer.amc_number)
        validate_siren(insurer.siren)
        assert stdnum_siren.is_valid(insurer.siren)
        assert insurer.contracts
        assert len({c.code for c in insurer.contracts}) == len(insurer.contracts)
    # Each insurer of a population draws its NIR order numbers from its own slot.
    assert len({int(i.amc_number) % 6 for i in insurers}) == len(insurers)


@given(seed=st.integers(min_value=0, max_value=2**63), total=st.integers(min_value=0, max_value=100_000))
@settings(max_examples=50, deadline=None)
def test_insurer_families_always_sum_to_the_total(seed: int, total: int) -> None:
    insurers = synthetic.generate_insurers(seed, total)
    assert 4 <= len(insurers) <= 6
    assert sum(i.families for i in insurers) == total
    if total >= len(insurers):
        assert all(i.families >= 1 for i in insurers)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        synthetic.generate_insurers(1, -1)
    with pytest.raises(ValueError):
        synthetic.generate_professionals(1, -1)


# -- schedules -------------------------------------------------------------------------------------

RULE_FIELDS = {"domain", "kind", "percent", "amount", "per", "acts", "amo_rates", "basket", "plus_flat"}
CEILING_FIELDS = {"domain", "amount", "per", "acts"}
KINDS = {"br_percent_incl", "br_percent_extra", "flat", "real_cost"}
DOCTOR_DOMAINS = {"consultation", "radiology", "hospital"}


def all_contracts() -> list[synthetic.SyntheticContract]:
    return [c for seed in range(20) for insurer in synthetic.generate_insurers(seed, 100) for c in insurer.contracts]


def test_schedules_use_only_format_1() -> None:
    for contract in all_contracts():
        schedule = contract.schedule
        assert set(schedule) <= {"code", "rules", "ceilings"}
        assert schedule["code"] == contract.code
        parse_schedule(schedule)  # the platform's own reader (extra fields are refused)
        for rule in schedule["rules"]:
            assert set(rule) <= RULE_FIELDS
            assert rule["kind"] in KINDS
            if rule["kind"] == "flat":
                assert rule["per"] in ("act", "calendar_year", "2y")
            if "basket" in rule:
                assert rule["basket"] == "100_sante"
        for ceiling in schedule.get("ceilings", []):
            assert set(ceiling) <= CEILING_FIELDS
            assert ceiling["per"] in ("calendar_year", "2y")


def first_rule(schedule: dict[str, Any], domain: str, **filters: object) -> dict[str, Any] | None:
    for rule in schedule["rules"]:
        if rule["domain"] == domain and all(rule.get(k) == v for k, v in filters.items()):
            return dict(rule)
    return None


def rule_of(schedule: dict[str, Any], domain: str, **filters: object) -> dict[str, Any]:
    rule = first_rule(schedule, domain, **filters)
    assert rule is not None, (schedule["code"], domain, filters)
    return rule


def test_responsable_contracts_follow_the_rules() -> None:
    responsable = [c for c in all_contracts() if c.responsable]
    assert {c.code for c in responsable} == {"ESSENTIEL", "CONFORT", "PREMIUM"}
    assert any(not c.responsable for c in all_contracts())
    for contract in responsable:
        schedule = contract.schedule
        rules = schedule["rules"]
        # The hospital daily fee at real cost, before any other hospital rule.
        hospital = [r for r in rules if r["domain"] == "hospital"]
        assert hospital[0] == {"domain": "hospital", "acts": ["FJH"], "kind": "real_cost"}
        # 100% Santé baskets leave nothing to pay.
        for domain in ("optical", "dental", "audio"):
            basket = first_rule(schedule, domain, basket="100_sante")
            assert basket is not None and basket["kind"] == "real_cost"
        for rule in rules:
            if rule["kind"] == "br_percent_incl":
                assert rule["percent"] >= 100  # the ticket modérateur is covered
                if rule["domain"] in DOCTOR_DOMAINS:
                    assert rule["percent"] <= 200  # excess fees at most 100% BR
            if rule["domain"] in DOCTOR_DOMAINS:
                assert rule["kind"] != "br_percent_extra" or rule["percent"] <= 100
            if rule["domain"] == "optical" and rule["kind"] == "flat":
                assert 50 <= float(rule["amount"]) <= 420  # simple lenses: at most 420 €
                assert rule["per"] == "2y"
            if rule["domain"] == "audio" and rule["kind"] == "flat":
                assert 240 + float(rule["amount"]) <= 1700  # class II: AMO + AMC at most 1,700 €
        for ceiling in schedule["ceilings"]:
            if ceiling["domain"] == "optical" and ceiling.get("acts") == ["frame"]:
                assert float(ceiling["amount"]) <= 100
        for domain in ("consultation", "pharmacy", "lab", "nursing", "physiotherapy", "midwifery"):
            assert first_rule(schedule, domain) is not None, (contract.code, domain)


def test_contract_levels() -> None:
    for insurer in synthetic.generate_insurers(SEED, 100):
        by_code = {c.code: c.schedule for c in insurer.contracts}
        essentiel = by_code["ESSENTIEL"]
        assert first_rule(essentiel, "consultation") == {
            "domain": "consultation",
            "kind": "br_percent_incl",
            "percent": 100,
        }
        assert rule_of(essentiel, "optical", kind="flat")["amount"] in ("100.00", "120.00")
        confort = by_code["CONFORT"]
        assert rule_of(confort, "consultation")["percent"] in (150, 200)
        assert {"domain": "optical", "acts": ["frame"], "amount": "100.00", "per": "2y"} in confort["ceilings"]
        assert any(c["domain"] == "dental_implant" and c["per"] == "calendar_year" for c in confort["ceilings"])
        if "PREMIUM" in by_code:
            assert rule_of(by_code["PREMIUM"], "dental", kind="br_percent_extra")["percent"] == 300


# -- feed rows: format ---------------------------------------------------------------------------


def test_sample_is_large_enough(sample: Sample) -> None:
    assert len(sample) >= 20_000


def test_rows_have_the_feed_columns_as_strings(sample: Sample) -> None:
    assert synthetic.FEED_COLUMNS == feed.FEED_COLUMNS
    for _, row, _ in sample:
        assert tuple(row) == synthetic.FEED_COLUMNS
        assert all(isinstance(v, str) for v in row.values())


def test_every_row_passes_the_feed_validation(sample: Sample) -> None:
    for line, (_, row, _) in enumerate(sample, start=2):
        result = feed.validate_row(line, row, today=TODAY)
        assert isinstance(result, feed.FeedRow), result


def test_contracts_belong_to_the_insurer(insurers: list[synthetic.SyntheticInsurer], sample: Sample) -> None:
    codes = {i.amc_number: {c.code for c in i.contracts} for i in insurers}
    used: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for amc, row, _ in sample:
        assert row["contract"] in codes[amc]
        used[amc][row["contract"]] += 1
    biggest = used[insurers[0].amc_number]
    assert biggest.most_common(1)[0][0] == "CONFORT"
    assert biggest["HOSPI"] < biggest["ESSENTIEL"]


# -- feed rows: NIRs -------------------------------------------------------------------------------

MALE_NAMES = frozenset(FrenchNames.first_names_male)
FEMALE_NAMES = frozenset(FrenchNames.first_names_female)


def own_nirs(sample: Sample) -> Iterable[tuple[Row, str]]:
    for _, row, _ in sample:
        if row["beneficiary_nir"]:
            yield row, row["beneficiary_nir"]


def test_nirs_are_valid_and_consistent(sample: Sample) -> None:
    for row, value in own_nirs(sample):
        nir = parse_nir(value)
        assert stdnum_nir.is_valid(value)
        assert nir.sex in (1, 2) and not nir.temporary
        birth = dt.date.fromisoformat(row["birth_date"])
        check_nir_matches_birth(nir, birth)
        assert int(nir.year) == birth.year % 100
        if nir.month_known:
            assert nir.month == birth.month
        else:
            assert nir.born_abroad and (birth.month, birth.day) == (1, 1)
        # Sex digit, first name and relationship agree.
        assert row["first_name"] in (MALE_NAMES if nir.sex == 1 else FEMALE_NAMES)
        # Department and commune layout.
        if len(nir.department) == 3:
            assert nir.department in {"971", "972", "973", "974", "975", "976"}
            assert len(nir.commune) == 2
        elif nir.department == "99":
            assert len(nir.commune) == 3 and nir.commune != "000"
        elif nir.department in ("2A", "2B"):
            assert birth.year >= 1976
        elif nir.department == "20":
            assert birth.year < 1976  # Corsica before its split


def test_unknown_months_are_rare(sample: Sample) -> None:
    nirs = [parse_nir(value) for _, value in own_nirs(sample)]
    unknown = sum(not n.month_known for n in nirs)
    assert unknown / len(nirs) < 0.005


def test_first_names_come_from_the_french_lists(sample: Sample) -> None:
    for _, row, _ in sample:
        assert row["first_name"] in MALE_NAMES | FEMALE_NAMES


def test_nirs_are_unique_across_the_population(sample: Sample) -> None:
    values = [value for _, value in own_nirs(sample)]
    assert len(values) == len(set(values))


def test_nirs_of_one_member_and_of_the_member_row(sample: Sample) -> None:
    for family in families_of(sample).values():
        member_nirs = {r["member_nir"] for r in family}
        assert len(member_nirs) == 1
        members = [r for r in family if r["relationship"] == "member"]
        assert len(members) == 1 and family[0] is members[0]
        assert members[0]["beneficiary_nir"] == members[0]["member_nir"]
        assert sum(r["relationship"] == "spouse" for r in family) <= 1


def test_places_of_birth(sample: Sample) -> None:
    departments = collections.Counter(parse_nir(value).department for _, value in own_nirs(sample))
    total = sum(departments.values())
    assert departments["2A"] > 0 and departments["2B"] > 0
    assert sum(departments[d] for d in ("971", "972", "973", "974", "976")) > 0.01 * total
    assert all(departments[d] > 0 for d in ("971", "972", "973", "974", "976"))
    assert 0.05 * total < departments["99"] < 0.2 * total
    # Roughly by population: Paris and the Nord well ahead of Lozère and the Creuse.
    assert departments["75"] > 5 * departments["48"]
    assert departments["59"] > 5 * departments["23"]
    metropolitan = {d for d in departments if len(d) == 2 and d != "99"}
    assert len(metropolitan) > 80


# -- feed rows: uniqueness, ranks, families --------------------------------------------------------


def test_card_keys_are_unique_per_insurer(sample: Sample) -> None:
    keys = [(amc, r["member_number"], r["birth_date"], r["birth_rank"]) for amc, r, _ in sample]
    assert len(keys) == len(set(keys))


def test_member_numbers_follow_an_insurer_format(insurers: list[synthetic.SyntheticInsurer], sample: Sample) -> None:
    by_insurer: dict[str, set[str]] = collections.defaultdict(set)
    for amc, row, _ in sample:
        by_insurer[amc].add(row["member_number"])
    for insurer in insurers:
        numbers = by_insurer[insurer.amc_number]
        assert len(numbers) == insurer.families  # one member number per family
        assert all(n.isdigit() for n in numbers)
        lengths = {len(n) for n in numbers}
        assert len(lengths) == 1 and 8 <= lengths.pop() <= 10
        assert len({n[0] for n in numbers}) == 1  # a fixed leading digit


def test_feeds_of_consecutive_seeds_share_no_member_number(insurers: list[synthetic.SyntheticInsurer]) -> None:
    """Benchmarks stitch feeds of seeds s, s+1… for one insurer into one file: a member
    number seen twice with two different NIRs would make the file refused."""
    insurer = insurers[-1]
    numbers = [{r["member_number"] for r, _ in rows_of(insurer, seed=seed)} for seed in (40, 41, 42)]
    assert all(len(n) == insurer.families for n in numbers)
    assert len(numbers[0] | numbers[1] | numbers[2]) == 3 * insurer.families


def test_birth_ranks_separate_same_day_births(sample: Sample) -> None:
    twins = 0
    for family in families_of(sample).values():
        by_date: dict[str, list[Row]] = collections.defaultdict(list)
        for row in family:
            by_date[row["birth_date"]].append(row)
        for rows in by_date.values():
            assert [r["birth_rank"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
            relationships = [r["relationship"] for r in rows]
            if relationships.count("child") >= 2:
                twins += 1
                assert len({r["first_name"] for r in rows}) == len(rows)
            if relationships[:2] == ["member", "spouse"]:
                assert rows[1]["birth_rank"] == "2"
    assert twins >= 20


def test_a_spouse_born_the_same_day_as_the_member_gets_rank_2() -> None:
    """Rare (about one row in 7,000): looked for in a larger feed, stopping at the first."""
    insurer = synthetic.generate_insurers(SEED, 200_000)[0]
    member: Row | None = None
    for row, _ in itertools.islice(synthetic.generate_feed_rows(SEED, insurer, today=TODAY), 300_000):
        if row["relationship"] == "member":
            member = row
        elif row["relationship"] == "spouse" and member and row["birth_date"] == member["birth_date"]:
            assert (member["birth_rank"], row["birth_rank"]) == ("1", "2")
            assert row["member_number"] == member["member_number"]
            assert feed.validate_row(2, row, today=TODAY)
            return
    pytest.fail("no spouse born the same day as the member")


def test_ages_and_families(sample: Sample) -> None:
    sizes: collections.Counter[int] = collections.Counter()
    for family in families_of(sample).values():
        sizes[len(family)] += 1
        member = dt.date.fromisoformat(family[0]["birth_date"])
        spouse_rows = [r for r in family if r["relationship"] == "spouse"]
        parents = [member] + [dt.date.fromisoformat(r["birth_date"]) for r in spouse_rows]
        for parent in parents:
            assert 18 <= age_on(parent, TODAY) <= 95
        children = [r for r in family if r["relationship"] == "child"]
        assert len(children) <= 5  # up to four, one pair of twins possibly on top
        for child in children:
            birth = dt.date.fromisoformat(child["birth_date"])
            assert 0 <= age_on(birth, TODAY) <= 25
            for parent in parents:
                assert 18 <= age_on(parent, birth) <= 45
            if age_on(birth, TODAY) >= 18:
                assert child["beneficiary_nir"], "adults always have their own NIR"
    assert sizes[1] > 0 and sizes[2] > 0 and sizes[3] > 0 and sizes[4] > 0 and sizes[5] > 0
    assert 2.0 < sum(n * k for n, k in sizes.items()) / sum(sizes.values()) < 3.0


def test_young_children_are_mostly_known_by_the_member_nir(sample: Sample) -> None:
    young = [
        r
        for _, r, _ in sample
        if r["relationship"] == "child" and age_on(dt.date.fromisoformat(r["birth_date"]), TODAY) < 16
    ]
    without = sum(not r["beneficiary_nir"] for r in young)
    assert len(young) > 1000
    assert 0.5 < without / len(young) < 0.95


def test_birth_names_of_married_women(sample: Sample) -> None:
    spouses = [r for _, r, _ in sample if r["relationship"] == "spouse" and parse_nir(r["beneficiary_nir"]).sex == 2]
    differing = [r for r in spouses if r["birth_name"] and r["birth_name"] != r["family_name"]]
    assert 0.3 < len(differing) / len(spouses) < 0.8
    for _, row, _ in sample:
        if row["birth_name"] and row["birth_name"] != row["family_name"]:
            nir = row["beneficiary_nir"]
            assert nir and parse_nir(nir).sex == 2


def test_coverage_periods(sample: Sample) -> None:
    ends: collections.Counter[str] = collections.Counter()
    for _, row, _ in sample:
        start = dt.date.fromisoformat(row["coverage_start"])
        birth = dt.date.fromisoformat(row["birth_date"])
        assert birth <= start <= TODAY + dt.timedelta(days=366)
        if row["relationship"] != "child":
            assert age_on(birth, start) >= 18 or start == TODAY
        if row["coverage_end"]:
            end = dt.date.fromisoformat(row["coverage_end"])
            assert end >= start
            ends["past" if end < TODAY else "future"] += 1
        else:
            ends["open"] += 1
    assert ends["open"] > 0.85 * len(sample)
    assert ends["past"] > 0 and ends["future"] > 0
    starts = [dt.date.fromisoformat(r["coverage_start"]) for _, r, _ in sample]
    assert min(starts) < TODAY - dt.timedelta(days=365 * 10)


# -- professionals ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def professionals() -> tuple[list[synthetic.SyntheticEstablishment], list[synthetic.SyntheticProfessional]]:
    return synthetic.generate_professionals(SEED, 1000)


def test_professionals_identifiers_are_valid(
    professionals: tuple[list[synthetic.SyntheticEstablishment], list[synthetic.SyntheticProfessional]],
) -> None:
    establishments, pros = professionals
    assert len(pros) == 1000
    for place in establishments:
        assert validate_finess(place.finess) == place.finess and len(place.finess) == 9
        assert validate_siret(place.siret) == place.siret
        assert stdnum_siret.is_valid(place.siret)
        assert place.name and place.kind
    for pro in pros:
        assert validate_rpps(pro.rpps) == pro.rpps and len(pro.rpps) == 11
        assert validate_iban(pro.iban) == pro.iban and len(pro.iban) == 27
        assert stdnum_iban.is_valid(pro.iban)
        assert "@" in pro.email and pro.phone
        assert pro.first_name in (MALE_NAMES | FEMALE_NAMES)
    assert len({p.rpps for p in pros}) == len(pros)
    assert len({p.email for p in pros}) == len(pros)
    assert len({e.finess for e in establishments}) == len(establishments)
    assert len({e.siret for e in establishments}) == len(establishments)
    assert any(e.finess.startswith(("2A", "2B")) for e in establishments)


def test_professionals_by_profession(
    professionals: tuple[list[synthetic.SyntheticEstablishment], list[synthetic.SyntheticProfessional]],
) -> None:
    establishments, pros = professionals
    kinds = {e.finess: e.kind for e in establishments}
    professions = collections.Counter(p.profession for p in pros)
    assert professions.most_common(1)[0] == ("pharmacist", 300)
    assert professions["nurse"] == 200
    specialties = collections.Counter(p.specialty for p in pros if p.profession == "physician")
    assert specialties["general_medicine"] == 120
    assert sum(specialties.values()) == 200
    for profession in ("physiotherapist", "dentist", "optician", "biologist", "midwife", "audiologist"):
        assert professions[profession] > 0
    expected_kind = {
        "pharmacist": {"pharmacy"},
        "optician": {"optician"},
        "biologist": {"lab"},
        "audiologist": {"audiology"},
        "dentist": {"dental_practice"},
        "physician": {"medical_practice", "hospital"},
    }
    for pro in pros:
        assert pro.establishment_finess in kinds
        if pro.profession in expected_kind:
            assert kinds[pro.establishment_finess] in expected_kind[pro.profession]
    # Pharmacists of one pharmacy are paid to the pharmacy's account.
    by_pharmacy = collections.defaultdict(set)
    for pro in pros:
        if pro.profession == "pharmacist":
            by_pharmacy[pro.establishment_finess].add(pro.iban)
    assert all(len(ibans) == 1 for ibans in by_pharmacy.values())


@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_small_professional_counts(count: int) -> None:
    establishments, pros = synthetic.generate_professionals(7, count)
    assert len(pros) == count
    assert {p.establishment_finess for p in pros} <= {e.finess for e in establishments}


def test_feed_of_a_hand_made_insurer() -> None:
    """Works for any insurer object, e.g. one a benchmark builds, and with a zero count."""
    contract = synthetic.generate_insurers(1, 10)[0].contracts[0]
    insurer = synthetic.SyntheticInsurer("12345678", "Test", "732829320", 25, (contract,))
    rows = rows_of(insurer)
    assert len({r["member_number"] for r, _ in rows}) == 25
    assert all(r["contract"] == contract.code for r, _ in rows)
    empty = synthetic.SyntheticInsurer("12345678", "Test", "732829320", 0, (contract,))
    assert rows_of(empty) == []


def test_generator_is_lazy(insurers: list[synthetic.SyntheticInsurer]) -> None:
    first = list(itertools.islice(synthetic.generate_feed_rows(SEED, insurers[0], today=TODAY), 10))
    assert len(first) == 10
    assert [r for r, _ in first] == [r for r, _ in rows_of(insurers[0])[:10]]
