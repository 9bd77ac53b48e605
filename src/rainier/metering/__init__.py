"""Metering and billing, a pure core: usage and terms in, immutable ledger lines out.

No I/O, no clock, no database: every instant is passed in, every result is a value. The control
plane persists `UsageLine`s as they are (unique on `key`, so retries never bill twice), tracks
each task's `billed_until` with `next_slice`, settles each closed reservation period with
`settle_reservation`, and reads statements, status, FOCUS rows and alerts from these functions.
"""

from rainier.metering.aggregate import (
    ContractStatus,
    Statement,
    StatementGroup,
    Totals,
    contract_status,
    cumulative_spend,
    monthly_statement,
    usage_by,
)
from rainier.metering.alerts import (
    AlertEvent,
    budget_alerts,
    commitment_alerts,
    crossed_thresholds,
    monthly_spend,
)
from rainier.metering.charges import (
    charge_interval,
    charge_tokens,
    committed_spend,
    draws_down,
    hourly_reserved_usd,
    reservation_periods,
    settle_reservation,
    true_up,
    used_chip_seconds,
)
from rainier.metering.export import write_focus_csv, write_lines_csv
from rainier.metering.focus import FOCUS_COLUMNS, focus_row, focus_rows
from rainier.metering.ledger import (
    AMOUNT_QUANTUM,
    KINDS,
    LineKind,
    UsageLine,
    correction,
    idempotency_key,
    to_cents,
)
from rainier.metering.prices import (
    ChipPrice,
    PriceBook,
    PriceNotFound,
    TokenPrice,
    default_price_book,
)
from rainier.metering.terms import ContractTerms
from rainier.metering.usage import TaskInterval, TokenUsage, next_slice

__all__ = [
    "AMOUNT_QUANTUM",
    "FOCUS_COLUMNS",
    "KINDS",
    "AlertEvent",
    "ChipPrice",
    "ContractStatus",
    "ContractTerms",
    "LineKind",
    "PriceBook",
    "PriceNotFound",
    "Statement",
    "StatementGroup",
    "TaskInterval",
    "TokenPrice",
    "TokenUsage",
    "Totals",
    "UsageLine",
    "budget_alerts",
    "charge_interval",
    "charge_tokens",
    "commitment_alerts",
    "committed_spend",
    "contract_status",
    "correction",
    "crossed_thresholds",
    "cumulative_spend",
    "default_price_book",
    "draws_down",
    "focus_row",
    "focus_rows",
    "hourly_reserved_usd",
    "idempotency_key",
    "monthly_spend",
    "monthly_statement",
    "next_slice",
    "reservation_periods",
    "settle_reservation",
    "to_cents",
    "true_up",
    "usage_by",
    "used_chip_seconds",
    "write_focus_csv",
    "write_lines_csv",
]
