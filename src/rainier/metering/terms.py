"""Contract terms as metering needs them: a plain snapshot of a `ContractSpec`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from rainier.metering.periods import require_utc
from rainier.spec import ContractSpec


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """Pricing rule: every chip-second and token under the term costs list x (1 - discount).

    `guaranteed_chips` are reserved per clock hour whether used or not; borrowing is ordinary
    usage. Usage outside [start, end) is not covered by the contract: it is billed at list
    price and does not draw down the commitment.
    """

    contract: str
    tenant: str
    start: datetime
    end: datetime
    committed_usd: Decimal
    guaranteed_chips: Mapping[str, int] = field(default_factory=dict, hash=False)
    discount: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_utc(self.start, "term start"))
        object.__setattr__(self, "end", require_utc(self.end, "term end"))
        object.__setattr__(self, "guaranteed_chips", MappingProxyType(dict(self.guaranteed_chips)))
        if self.end <= self.start:
            raise ValueError(f"contract {self.contract}: term end must be after its start")
        if not Decimal(0) <= self.discount < 1:
            raise ValueError(f"contract {self.contract}: discount must be in [0, 1)")
        if self.committed_usd < 0:
            raise ValueError(f"contract {self.contract}: committed_usd must be >= 0")

    @classmethod
    def from_spec(cls, spec: ContractSpec, contract: str | None = None) -> ContractTerms:
        """`contract` is the store's id for it; the document's name by default."""
        return cls(
            contract=contract or spec.name,
            tenant=spec.tenant,
            start=spec.term.start,
            end=spec.term.end,
            committed_usd=spec.committed_usd,
            guaranteed_chips={f: n for f, n in spec.guaranteed_chips.items() if n > 0},
            discount=spec.discount,
        )

    def covers(self, start: datetime, end: datetime) -> bool:
        return self.start <= start < self.end and end <= self.end

    def contract_rate(self, list_rate_usd: Decimal, start: datetime, end: datetime) -> Decimal:
        if not self.covers(start, end):
            return list_rate_usd
        return list_rate_usd * (1 - self.discount)
