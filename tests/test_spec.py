from decimal import Decimal

import pytest

from rainier.spec import ContractSpec, JobSpec, SpecError, parse_yaml

CONTRACT = """
kind: Contract
name: openai-2026
tenant: openai
term: {start: 2026-01-01, end: 2027-01-01}
committed_usd: 1000000
guaranteed_chips: {h200: 64}
borrow_limit_chips: {h200: 32}
discount: 0.2
"""


def test_contract_parses_with_money_as_decimal() -> None:
    (doc,) = parse_yaml(CONTRACT)
    assert isinstance(doc, ContractSpec)
    assert doc.committed_usd == Decimal("1000000")
    assert doc.guaranteed_chips == {"h200": 64}
    assert doc.term.start.tzinfo is not None


def test_job_command_string_runs_under_a_shell() -> None:
    (doc,) = parse_yaml("kind: Job\nname: j\ncommand: echo hi\n")
    assert isinstance(doc, JobSpec)
    assert doc.command == ["/bin/sh", "-c", "echo hi"]


def test_error_names_field_and_line() -> None:
    text = "kind: Job\nname: j\ncommand: [x]\nnodes: 0\n"
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "job.yaml")
    assert "job.yaml:4: nodes" in str(info.value)


def test_unknown_field_and_flavor_are_refused() -> None:
    with pytest.raises(SpecError, match="flavr"):
        parse_yaml("kind: Job\nname: j\ncommand: [x]\nflavr: h200\n")
    with pytest.raises(SpecError, match="unknown flavor 'h100x'"):
        parse_yaml("kind: Job\nname: j\ncommand: [x]\nflavor: h100x\n")


def test_unknown_kind_is_named() -> None:
    with pytest.raises(SpecError, match="kind"):
        parse_yaml("kind: Jobb\nname: j\n")


def test_bad_term_order() -> None:
    bad = CONTRACT.replace("end: 2027-01-01", "end: 2025-01-01")
    with pytest.raises(SpecError, match="term"):
        parse_yaml(bad)
