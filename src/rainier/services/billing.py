"""Bills: a contract's monthly statement and where its commitment stands, from the usage
ledger that metering writes (`rainier.accounting`, priced by `rainier.metering`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from rainier.accounting.contract_lookup import contract_terms
from rainier.accounting.ledger_rows import iter_lines, select_lines, stored_statement
from rainier.metering import ContractStatus, Statement, contract_status
from rainier.metering.periods import month_bounds
from rainier.store.tables import Contract


def statement(s: Session, contract: Contract, year: int, month: int) -> Statement:
    """One month of the contract: its lines grouped, totals, the commitment drawn down."""
    month_bounds(year, month)  # refuses a month that does not exist
    return stored_statement(s, contract_terms(contract), year, month)


def status(s: Session, contract: Contract, now: datetime) -> tuple[ContractStatus, int]:
    """Committed against spent, the burn rate and where it leads by the term's end; with how
    many ledger lines that took."""
    lines = list(iter_lines(s, select_lines(contract=contract.name)))
    return contract_status(contract_terms(contract), lines, now), len(lines)
