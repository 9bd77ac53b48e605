"""Stored documents come back as their models; a row that breaks today's bounds comes back
with its values as stored, so one old row cannot stop every pass of the control plane."""

from __future__ import annotations

from decimal import Decimal

from rainier.spec import ContractSpec, JobSpec, TrainSpec
from rainier.spec_stored import load_stored


def test_a_stored_job_comes_back_typed() -> None:
    doc = JobSpec.model_validate(
        {
            "name": "t",
            "train": {"data": ["/d/*.txt"], "steps": 10},
            "grace_period_s": 5.0,
            "max_restarts": 2,
        }
    )
    back = load_stored(JobSpec, doc.model_dump(mode="json"))
    assert back == doc
    assert isinstance(back.train, TrainSpec) and back.train.data == ["/d/*.txt"]


def test_a_stored_contract_reads_its_text_forms() -> None:
    doc = {
        "kind": "Contract",
        "name": "c",
        "tenant": "t",
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
        "committed_usd": "100.50",
        "guaranteed_chips": {"cpu": 4},
    }
    back = load_stored(ContractSpec, doc)
    assert back.committed_usd == Decimal("100.50") and back.term.end.year == 2027


def test_a_row_from_before_the_bounds_keeps_its_values() -> None:
    stored = {"name": "old", "command": ["true"], "env": {"BIG": "x" * 200_000}}
    back = load_stored(JobSpec, stored)
    assert len(back.env["BIG"]) == 200_000
    assert (back.grace_period_s, back.max_restarts, back.preemptible) == (30.0, 0, True)
