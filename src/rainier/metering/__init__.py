"""Metering and billing, a pure core: usage and terms in, immutable ledger lines out.

No I/O, no clock, no database: every instant is passed in, every result is a value. The control
plane stores `UsageLine`s as they are, unique on `key` (insert, ignore conflicts), so a retry
never bills twice, and writes the lines of one call in one transaction. Its loop:

1. Each tick, for every task: `billed_until` = latest `period_end` of the lines whose source is
   the task's `TaskInterval.source`; `next_slice(started_at, billed_until, now, ended_at)`;
   `charge_interval(TaskInterval(...that span...), terms, prices)`.
2. The gateway: `charge_tokens(TokenUsage(...), terms, prices)` per request.
3. Per contract and guaranteed flavor, for each period of
   `reservation_periods(terms, flavor, prices, settled_until, now - settle_delay)`:
   `settle_reservation(terms, flavor, period, prices, used, prior)` where `used` is the sum of
   the period's chip-second lines (`used_chip_seconds`) and `prior` the lines already stored with
   source ``reservation:<flavor>`` and that period. Run it again later to correct late usage.
4. After the term ends: `true_up(terms, lines, now, prices)`.
5. Before storing new lines: `commitment_alerts` / `budget_alerts` give events unique on `key`;
   `webhook.body`, `webhook.sign` and `webhook.retry_delay_s` deliver them.

Reading: `monthly_statement`, `contract_status`, `usage_by`, `focus_rows` / `write_focus_csv`,
`write_lines_csv`, and `chart.burn_down_png` (imported on its own: it loads matplotlib).
"""

from rainier.metering.aggregate import (
    ContractStatus,
    Coverage,
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
    "Coverage",
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
