"""Identifier checks (rempart.registry.identifiers): examples, every error code, masking, and
hypothesis properties (builders round-trip through the validators; single-digit errors are
caught). stdnum is used as an independent oracle where it implements the same rule."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum.fr import nir as stdnum_nir

from rempart.registry.identifiers import (
    IdentifierError,
    Nir,
    check_nir_matches_birth,
    luhn_valid,
    make_finess,
    make_french_iban,
    make_nir,
    make_rpps,
    mask,
    nir_check_key,
    normalize_nir,
    parse_nir,
    validate_adeli,
    validate_amc_number,
    validate_finess,
    validate_iban,
    validate_rpps,
    validate_siren,
    validate_siret,
)

Check = Callable[[str], object]


def error_of(func: Check, value: str) -> IdentifierError:
    with pytest.raises(IdentifierError) as info:
        func(value)
    return info.value


def with_key(first13: str) -> str:
    return first13 + nir_check_key(first13)


# -- NIR: valid examples -----------------------------------------------------------------------

# Worked example published on mathweb.fr ("comment calculer la clé…"): 1891275125012 -> key 82.
PUBLISHED_NIR = "189127512501282"


def test_published_example() -> None:
    nir = parse_nir(PUBLISHED_NIR)
    assert nir == Nir(
        value=PUBLISHED_NIR,
        sex=1,
        year="89",
        month=12,
        month_known=True,
        department="75",
        commune="125",
        order="012",
        key="82",
        temporary=False,
    )
    assert stdnum_nir.is_valid(PUBLISHED_NIR)


def test_separators_and_case_are_normalised() -> None:
    nir = parse_nir(" 2 76 06 2a 004 012.89 ")
    assert nir.value == "276062A00401289"
    assert normalize_nir("1-89-12-75\u00a0125 012 82") == PUBLISHED_NIR


@pytest.mark.parametrize(
    ("value", "department", "commune"),
    [
        ("276062A00401289", "2A", "004"),  # Corse-du-Sud
        ("169022B03300765", "2B", "033"),  # Haute-Corse
    ],
)
def test_corsica(value: str, department: str, commune: str) -> None:
    nir = parse_nir(value)
    assert (nir.department, nir.commune) == (department, commune)
    assert stdnum_nir.is_valid(value)  # same key rule: 2A -> 19, 2B -> 18
    # The key is computed on 19/18, not on the digits 20 that a naive replacement would give.
    assert nir.key == f"{97 - int(value[:5] + ('19' if department == '2A' else '18') + value[7:13]) % 97:02d}"


def test_corsica_before_1976_keeps_department_20() -> None:
    assert parse_nir(with_key("1680220004007")).department == "20"


def test_overseas_department_has_three_digits_and_a_two_digit_commune() -> None:
    nir = parse_nir("201129741104287")
    assert (nir.department, nir.commune, nir.order) == ("974", "11", "042")
    assert parse_nir(with_key("1990598510001")).department == "985"  # Mayotte before 2011


def test_born_abroad_carries_a_country_code() -> None:
    nir = parse_nir("152099935208143")
    assert (nir.department, nir.commune, nir.order) == ("99", "352", "081")
    assert nir.born_abroad


@pytest.mark.parametrize("month", [20, 30, 42, 50, 99])
def test_unknown_month(month: int) -> None:
    nir = parse_nir(with_key(f"185{month:02d}75056123"))
    assert nir.month == month
    assert not nir.month_known
    check_nir_matches_birth(nir, dt.date(1985, 7, 14))  # only the year is compared


@pytest.mark.parametrize(("sex", "temporary"), [(1, False), (2, False), (3, False), (4, False), (7, True), (8, True)])
def test_sex_digits(sex: int, temporary: bool) -> None:
    nir = parse_nir(with_key(f"{sex}8505750561{sex}3"))
    assert (nir.sex, nir.temporary) == (sex, temporary)


def test_nir_repr_is_masked() -> None:
    nir = parse_nir(PUBLISHED_NIR)
    assert PUBLISHED_NIR not in repr(nir)
    assert repr(nir) == "Nir(18••••••••••••2)"


def test_nir_is_frozen_and_hashable() -> None:
    nir = parse_nir(PUBLISHED_NIR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        nir.sex = 2  # type: ignore[misc]
    assert hash(nir) == hash(parse_nir("1 89 12 75 125 012 82"))


def test_check_nir_matches_birth() -> None:
    nir = parse_nir(PUBLISHED_NIR)
    check_nir_matches_birth(nir, dt.date(1989, 12, 3))
    check_nir_matches_birth(nir, dt.date(1889, 12, 3))  # only two digits of the year are known


# -- NIR: every error code ---------------------------------------------------------------------

NIR_ERRORS: list[tuple[str, str]] = [
    ("18912751250128", "nir.length"),
    ("1891275125012", "nir.length"),  # the key is missing
    ("1891275125012820", "nir.length"),
    ("", "nir.length"),
    ("18912751250128O", "nir.characters"),  # letter O instead of zero
    ("1891227A2501282", "nir.characters"),  # a letter outside the department
    ("18912 2C 125 012 82", "nir.characters"),
    ("١٨٩١٢٧٥١٢٥٠١٢٨٢", "nir.characters"),  # non-ASCII digits
    (with_key("5891275125012"), "nir.sex"),
    (with_key("0891275125012"), "nir.sex"),
    (with_key("9891275125012"), "nir.sex"),
    (with_key("1890075125012"), "nir.month"),
    (with_key("1891375125012"), "nir.month"),
    (with_key("1891975125012"), "nir.month"),
    (with_key("1894375125012"), "nir.month"),
    (with_key("1894975125012"), "nir.month"),
    (with_key("1891200125012"), "nir.department"),
    (with_key("1891297012012"), "nir.department"),
    (with_key("1891297912012"), "nir.department"),
    (with_key("1891298312012"), "nir.department"),
    (with_key("1891299000012"), "nir.department"),  # abroad without a country code
    ("189127512501283", "nir.key"),
    ("189127512501200", "nir.key"),
    ("276062B00401289", "nir.key"),  # 2A's key on 2B
]


@pytest.mark.parametrize(("value", "code"), NIR_ERRORS)
def test_nir_errors(value: str, code: str) -> None:
    error = error_of(parse_nir, value)
    assert error.code == code
    assert error.message
    assert str(error) == error.message


def test_nir_birth_date_mismatch() -> None:
    nir = parse_nir(PUBLISHED_NIR)
    for birth in (dt.date(1988, 12, 3), dt.date(1989, 11, 3)):
        with pytest.raises(IdentifierError) as info:
            check_nir_matches_birth(nir, birth)
        assert info.value.code == "nir.birth_date_mismatch"
        assert PUBLISHED_NIR not in info.value.message


def test_nir_check_key() -> None:
    assert nir_check_key("1891275125012") == "82"
    assert nir_check_key("1 89 12 75 125 012") == "82"
    assert error_of(nir_check_key, "189127512501").code == "nir.length"
    assert error_of(nir_check_key, "18912751250X2").code == "nir.characters"


def test_make_nir_refuses_impossible_inputs() -> None:
    birth = dt.date(1980, 1, 1)
    with pytest.raises(ValueError, match="sex"):
        make_nir(5, birth, "75", "056", 1)
    with pytest.raises(ValueError, match="order"):
        make_nir(1, birth, "75", "056", 0)
    with pytest.raises(ValueError, match="order"):
        make_nir(1, birth, "75", "056", 1000)
    with pytest.raises(ValueError, match="commune"):
        make_nir(1, birth, "971", "056", 1)
    with pytest.raises(ValueError, match="commune"):
        make_nir(1, birth, "75", "05", 1)
    with pytest.raises(ValueError, match="department"):
        make_nir(1, birth, "2C", "056", 1)
    with pytest.raises(IdentifierError) as info:
        make_nir(1, birth, "00", "056", 1)
    assert info.value.code == "nir.department"


# -- other identifiers: examples and every error code -------------------------------------------

# Establishment numbers published by the ARS de Corse (prefectures' official bulletins).
CORSICAN_FINESS = [
    "2A0000014",  # CH d'Ajaccio
    "2A0000170",  # CH de Bonifacio
    "2A0000261",
    "2A0000386",  # CH de Castelluccio
    "2A0002051",
    "2A0002606",  # CH de Sartène
    "2B0000020",  # CH de Bastia
    "2B0000442",
    "2B0000459",
    "2B0000939",
    "2B0001341",
    "2B0003057",
    "2B0003073",
    "2B0003107",
    "2B0003628",
    "2B0004238",
    "2B0004246",  # CHI de Corte-Tattone
    "2B0005342",  # CH de Calvi
]


def test_finess_examples() -> None:
    assert validate_finess("750712184") == "750712184"  # AP-HP, legal entity
    assert validate_finess("75 071 218 4") == "750712184"
    assert validate_finess("2b0000020") == "2B0000020"


@pytest.mark.parametrize("finess", CORSICAN_FINESS)
def test_corsican_finess_use_21_and_22(finess: str) -> None:
    assert validate_finess(finess) == finess
    assert make_finess(finess[:8]) == finess
    assert luhn_valid(finess.replace("2A", "21").replace("2B", "22"))
    assert not luhn_valid(finess.replace("2A", "20").replace("2B", "20"))


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("")
    assert not luhn_valid("7992739871A")
    assert luhn_valid("0")


def test_rpps_adeli_siren_siret_amc_examples() -> None:
    assert validate_rpps("1000000000 9") == "10000000009"
    assert validate_rpps(make_rpps("1234567890")) == "12345678903"
    assert validate_adeli("75 1 23456 7") == "751234567"
    assert validate_adeli("2a1234567") == "2A1234567"
    assert validate_siren("732 829 320") == "732829320"
    assert validate_siret("732 829 320 00074") == "73282932000074"
    assert validate_amc_number("12345678") == "12345678"
    assert validate_amc_number("1234567890") == "1234567890"


def test_iban_examples() -> None:
    assert validate_iban("FR76 3000 6000 0112 3456 7890 189") == "FR7630006000011234567890189"
    assert validate_iban("fr7630006000011234567890189") == "FR7630006000011234567890189"
    assert validate_iban("MC58 1122 2000 0101 2345 6789 030") == "MC5811222000010123456789030"
    assert validate_iban("DE89 3704 0044 0532 0130 00") == "DE89370400440532013000"  # no RIB outside FR/MC


def _iban_with_bad_rib_key() -> str:
    good = make_french_iban("30006", "00001", "12345678901")
    bban = good[4:25] + f"{(int(good[25:]) % 97) + 1:02d}"
    return "FR" + stdnum_iban.calc_check_digits("FR00" + bban) + bban


OTHER_ERRORS: list[tuple[Check, str, str]] = [
    (validate_rpps, "1000000000", "rpps.length"),
    (validate_rpps, "100000000099", "rpps.length"),
    (validate_rpps, "1000000000A", "rpps.characters"),
    (validate_rpps, "10000000008", "rpps.luhn"),
    (validate_adeli, "75123456", "adeli.format"),
    (validate_adeli, "7512345678", "adeli.format"),
    (validate_adeli, "2C1234567", "adeli.format"),
    (validate_adeli, "75A234567", "adeli.format"),
    (validate_finess, "75071218", "finess.format"),
    (validate_finess, "2C0000020", "finess.format"),
    (validate_finess, "7507121840", "finess.format"),
    (validate_finess, "750712185", "finess.luhn"),
    (validate_finess, "2A0000020", "finess.luhn"),  # Bastia's number with the wrong Corsican letter
    (validate_siren, "732829321", "siren.invalid"),
    (validate_siren, "73282932", "siren.invalid"),
    (validate_siren, "73282932A", "siren.invalid"),
    (validate_siret, "73282932000075", "siret.invalid"),
    (validate_siret, "7328293200007", "siret.invalid"),
    (validate_iban, "FR7630006000011234567890188", "iban.invalid"),  # mod-97
    (validate_iban, "FR763000600001123456789018", "iban.invalid"),  # 26 characters
    (validate_iban, "XX7630006000011234567890189", "iban.invalid"),  # unknown country
    (validate_iban, "FR76300060000112345678901!9", "iban.invalid"),
    (validate_iban, "DE8937040044053201300", "iban.invalid"),  # too short for Germany
    (validate_iban, _iban_with_bad_rib_key(), "iban.rib_key"),
    (validate_amc_number, "1234567", "amc.format"),
    (validate_amc_number, "12345678901", "amc.format"),
    (validate_amc_number, "1234567A", "amc.format"),
]


@pytest.mark.parametrize(("func", "value", "code"), OTHER_ERRORS)
def test_other_errors(func: Check, value: str, code: str) -> None:
    assert error_of(func, value).code == code


ALL_ERRORS: list[tuple[Check, str, str]] = [(parse_nir, value, code) for value, code in NIR_ERRORS] + OTHER_ERRORS


@pytest.mark.parametrize(("func", "value", "code"), ALL_ERRORS)
def test_messages_never_contain_the_value(func: Check, value: str, code: str) -> None:
    error = error_of(func, value)
    for form in {value, value.strip(), value.replace(" ", ""), value.replace(" ", "").upper()}:
        if form:
            assert form not in error.message
            assert form not in str(error)
            assert form not in repr(error)


def test_every_documented_code_is_exercised() -> None:
    codes = {code for _, _, code in ALL_ERRORS} | {"nir.birth_date_mismatch"}
    assert codes >= {
        "nir.length",
        "nir.characters",
        "nir.key",
        "nir.sex",
        "nir.month",
        "nir.department",
        "nir.birth_date_mismatch",
        "rpps.length",
        "rpps.luhn",
        "adeli.format",
        "finess.format",
        "finess.luhn",
        "siren.invalid",
        "siret.invalid",
        "iban.invalid",
        "iban.rib_key",
        "amc.format",
    }


def test_identifier_error_pickles() -> None:
    error = error_of(parse_nir, "189127512501283")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message) == (error.code, error.message)
    assert isinstance(copy, ValueError)


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("", ""),
        ("a", "•"),
        ("1234567", "•••••••"),
        ("12345678", "12•••••8"),
        ("1980-05-17", "19•••••••7"),
        (PUBLISHED_NIR, "18••••••••••••2"),
    ],
)
def test_mask(value: str, masked: str) -> None:
    assert mask(value) == masked


# -- properties -----------------------------------------------------------------------------------

metropolitan = st.tuples(
    st.one_of(st.integers(1, 96).map(lambda d: f"{d:02d}"), st.sampled_from(["2A", "2B"])),
    st.integers(0, 999).map(lambda c: f"{c:03d}"),
)
overseas = st.tuples(
    st.sampled_from([f"97{d}" for d in range(1, 9)] + [f"98{d}" for d in range(4, 10)]),
    st.integers(0, 99).map(lambda c: f"{c:02d}"),
)
abroad = st.tuples(st.just("99"), st.integers(1, 999).map(lambda c: f"{c:03d}"))
birthplaces = st.one_of(metropolitan, overseas, abroad)
sexes = st.sampled_from([1, 2, 3, 4, 7, 8])
births = st.dates(dt.date(1890, 1, 1), dt.date(2030, 12, 31))
orders = st.integers(1, 999)


@given(sex=sexes, birth=births, place=birthplaces, order=orders)
def test_make_nir_round_trips(sex: int, birth: dt.date, place: tuple[str, str], order: int) -> None:
    department, commune = place
    value = make_nir(sex, birth, department, commune, order)
    nir = parse_nir(value)
    assert nir.value == value
    assert len(value) == 15
    assert nir.sex == sex
    assert nir.year == f"{birth.year % 100:02d}"
    assert nir.month == birth.month
    assert nir.month_known
    assert (nir.department, nir.commune) == (department, commune)
    assert nir.order == f"{order:03d}"
    assert nir.temporary == (sex in (7, 8))
    check_nir_matches_birth(nir, birth)
    # stdnum is the oracle for the key (it does not check sex, month or department).
    assert stdnum_nir.is_valid(value)
    assert nir.key == nir_check_key(value[:13]) == stdnum_nir.calc_check_digits(value)
    # parse_nir's fast constructor gives the same object as the dataclass's own __init__.
    assert nir == Nir(**{f.name: getattr(nir, f.name) for f in dataclasses.fields(Nir)})
    assert parse_nir(" ".join([value[:1], value[1:3], value[3:5], value[5:7], value[7:10], value[10:]])) == nir


def _digit_flips(value: str) -> Iterator[str]:
    for i, ch in enumerate(value):
        if ch.isdigit():
            for d in "0123456789":
                if d != ch:
                    yield value[:i] + d + value[i + 1 :]


@given(sex=sexes, birth=births, place=birthplaces, order=orders)
def test_any_single_digit_change_breaks_a_nir(sex: int, birth: dt.date, place: tuple[str, str], order: int) -> None:
    value = make_nir(sex, birth, *place, order)
    for changed in _digit_flips(value):
        with pytest.raises(IdentifierError) as info:
            parse_nir(changed)
        # Either the layout no longer holds or the key catches it; the key alone always does.
        assert info.value.code in {"nir.key", "nir.sex", "nir.month", "nir.department", "nir.characters"}
        assert not stdnum_nir.is_valid(changed)


@given(body=st.text("0123456789", min_size=10, max_size=10))
def test_rpps_round_trip_and_single_digit_changes(body: str) -> None:
    rpps = make_rpps(body)
    assert validate_rpps(rpps) == rpps
    for changed in _digit_flips(rpps):
        assert error_of(validate_rpps, changed).code == "rpps.luhn"


finess_bodies = st.tuples(
    st.one_of(st.text("0123456789", min_size=2, max_size=2), st.sampled_from(["2A", "2B"])),
    st.text("0123456789", min_size=6, max_size=6),
).map("".join)


@given(body=finess_bodies)
def test_finess_round_trip_and_single_digit_changes(body: str) -> None:
    finess = make_finess(body)
    assert validate_finess(finess) == finess
    for changed in _digit_flips(finess):  # e.g. 2A -> 3A is a format error, the rest fail Luhn
        assert error_of(validate_finess, changed).code in {"finess.luhn", "finess.format"}


accounts = st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=11, max_size=11)
codes5 = st.text("0123456789", min_size=5, max_size=5)


@given(bank=codes5, branch=codes5, account=accounts)
def test_make_french_iban_round_trips(bank: str, branch: str, account: str) -> None:
    value = make_french_iban(bank, branch, account)
    assert len(value) == 27
    assert validate_iban(value) == value
    assert stdnum_iban.is_valid(value)
    key = int(value[25:])
    letters = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "12345678912345678923456789")
    assert (89 * int(bank) + 15 * int(branch) + 3 * int(account.translate(letters)) + key) % 97 == 0
    assert 1 <= key <= 97
    for changed in _digit_flips(value):
        assert error_of(validate_iban, changed).code == "iban.invalid"


@given(st.text("0123456789AB -.", min_size=9, max_size=24))
def test_refusals_never_echo_the_value(text: str) -> None:
    compact = text.replace(" ", "").replace("-", "").replace(".", "")
    funcs: tuple[Check, ...] = (
        parse_nir,
        validate_rpps,
        validate_finess,
        validate_adeli,
        validate_iban,
        validate_siret,
    )
    messages: list[str] = []
    for func in funcs:
        try:
            func(text)
        except IdentifierError as error:
            messages.append(error.message)
    for message in messages:
        assert text not in message
        if len(compact) >= 5:
            assert compact not in message
