"""The gateway's writer of metered usage: a `BatchWriter` of `token_usage` rows.

The event loop only queues a row; nothing comes back to it, so a request costs the loop no
thread-pool hop and no wake-up of its own. A batch is held open `LINGER_S` after its first
row: requests answered one after another a few milliseconds apart then share a commit, rather
than each commit's Python running beside the next request and taking the GIL from its event
loop. A request id stored already (a retried write) is skipped, not an error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict, cast

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from rainier.store.batch_writer import BatchWriter
from rainier.store.db import Store
from rainier.store.tables import TokenUsageRecord

log = logging.getLogger("rainier.gateway")
LINGER_S = 0.02


class TokenUsageRow(TypedDict):
    """One answered request's tokens, as `token_usage` stores them."""

    request_id: str
    tenant_id: str
    deployment_id: str
    deployment: str
    model: str
    input_tokens: int
    output_tokens: int
    at: datetime


def _lost(row: TokenUsageRow, exc: BaseException) -> None:
    """A failed write is logged, not turned into a failed answer: the tokens are spent either
    way, and this line is what an operator reconciles the ledger from."""
    log.error(
        "cannot record token usage of request %s (%s): %s in, %s out: %s",
        row["request_id"],
        row["deployment"],
        row["input_tokens"],
        row["output_tokens"],
        exc,
    )


def token_usage_writer(store: Store) -> BatchWriter[TokenUsageRow, None]:
    table = cast(Table, TokenUsageRecord.__table__)
    dialect = postgresql if store.engine.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(table).on_conflict_do_nothing(index_elements=["request_id"])

    def write(s: Session, rows: Iterable[TokenUsageRow]) -> None:
        s.execute(insert, cast(list[dict[str, Any]], list(rows)))

    return BatchWriter(
        store, write, name="usage-writer", max_batch=1024, linger_s=LINGER_S, on_failure=_lost
    )
