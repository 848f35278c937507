"""Guarantee schedules, format version 1 (shared/vectors/README.md): parsed and checked.

Pure: no I/O. A schedule is a list of rules (the first matching rule applies to a line)
and optional ceilings. Amounts are decimal strings in euros with at most two decimals.
"""

from __future__ import annotations

import hashlib
import json
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEDULE_FORMAT = 1

# Care domains are data, not code: insurers name their own (the brief: domain codes are not
# standardised nationally). Well-known ones are listed for documentation and forms.
KNOWN_DOMAINS = (
    "pharmacy",
    "consultation",
    "dental",
    "dental_implant",
    "orthodontics",
    "optical",
    "audio",
    "hospital",
    "lab",
    "radiology",
    "nursing",
    "physiotherapy",
    "midwifery",
    "transport",
)
DOMAIN_PATTERN = re.compile(r"[a-z][a-z0-9_]{1,39}")
PERIODS = ("act", "calendar_year", "2y")


MAX_AMOUNT = Decimal("10000000.00")


def _money(value: Any) -> Decimal:
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        raise ValueError("must be an amount in euros") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a non-negative amount in euros")
    if amount > MAX_AMOUNT:  # before quantize: beyond 28 digits it cannot be rounded
        raise ValueError(f"must be at most {MAX_AMOUNT} euros")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("must have at most two decimals")
    return amount


Money = Annotated[Decimal, Field(json_schema_extra={"format": "euros"})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_Strict):
    domain: str
    kind: Literal["br_percent_incl", "br_percent_extra", "flat", "real_cost"]
    percent: int | Decimal | None = Field(default=None, ge=0, le=2000)  # "112.5" is read too
    amount: Money | None = None
    per: Literal["act", "calendar_year", "2y"] | None = None
    acts: tuple[str, ...] | None = None
    amo_rates: tuple[int, ...] | None = None
    basket: Literal["100_sante"] | None = None
    plus_flat: Money | None = None

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        if not DOMAIN_PATTERN.fullmatch(value):
            raise ValueError("a care domain is a lowercase code such as 'pharmacy' or 'dental_implant'")
        return value

    @field_validator("amount", "plus_flat", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal | None:
        return None if value is None else _money(value)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Rule:
        if self.kind.startswith("br_percent") and self.percent is None:
            raise ValueError(f"a {self.kind} rule needs 'percent'")
        if self.kind == "flat" and self.amount is None:
            raise ValueError("a flat rule needs 'amount'")
        if self.kind != "flat" and self.amount is not None:
            raise ValueError(f"'amount' belongs to flat rules, not {self.kind}")
        if not self.kind.startswith("br_percent") and self.percent is not None:
            raise ValueError(f"'percent' belongs to br_percent rules, not {self.kind}")
        return self


class Ceiling(_Strict):
    domain: str
    amount: Money
    per: Literal["calendar_year", "2y"]
    acts: tuple[str, ...] | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        return _money(value)

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        return Rule._known_domain(value)


class Schedule(_Strict):
    code: str = Field(min_length=1, max_length=40)
    label: str | None = None
    rules: tuple[Rule, ...] = Field(min_length=1)
    ceilings: tuple[Ceiling, ...] = ()


class ScheduleError(ValueError):
    """A schedule does not follow format 1; `problems` lists (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {reason}" for path, reason in problems))


def parse_schedule(data: Any) -> Schedule:
    try:
        return Schedule.model_validate(data)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in err["loc"]) or "(schedule)", err["msg"]) for err in exc.errors()]
        raise ScheduleError(problems) from None


def canonical_json(schedule: Schedule) -> dict[str, Any]:
    """The stored form: format-1 JSON with amounts as strings, absent fields omitted."""
    data: dict[str, Any] = schedule.model_dump(mode="json", exclude_none=True)
    if not data.get("ceilings"):
        data.pop("ceilings", None)
    return data


def schedule_digest(schedule: Schedule) -> str:
    encoded = json.dumps(canonical_json(schedule), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()
