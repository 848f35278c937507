"""The one error the care use cases refuse a request with."""

from __future__ import annotations


class CareInputError(ValueError):
    """A request the service refuses before doing anything: `field` and why (no value echoed)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
