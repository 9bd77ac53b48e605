from decimal import Decimal

import pytest

from rainier.spec import ContractSpec, JobSpec, SpecError
from rainier.spec_yaml import parse_yaml

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


TRAIN_JOB = """
kind: Job
name: gpt
train:
  preset: tiny
  overrides: {n_layers: 3}
  data: [corpus/]
  tokens: 100000
  batch_size: 4
  seq_len: 128
"""


def test_a_train_section_becomes_the_runtime_command_with_tokens_as_steps() -> None:
    (doc,) = parse_yaml(TRAIN_JOB)
    assert isinstance(doc, JobSpec) and doc.train is not None and doc.command is None
    argv = doc.train.command("python", "gpt", world_size=2, export="ckpt/export")
    assert argv[:3] == ["python", "-m", "rainier.train"]
    assert argv[argv.index("--steps") + 1] == str(-(-100000 // (4 * 128 * 2)))
    assert argv[argv.index("--override") + 1] == "n_layers=3"
    assert argv[argv.index("--model-name") + 1] == "gpt"
    assert argv[argv.index("--export") + 1] == "ckpt/export"


@pytest.mark.parametrize(
    ("line", "wrong", "message"),
    [
        (
            "  tokens: 100000\n",
            "  tokens: 100000\n  steps: 10\n",
            "train: give exactly one of steps",
        ),
        ("  overrides: {n_layers: 3}\n", "  overrides: {n_layerz: 3}\n", "train: overrides"),
        ("  seq_len: 128\n", "  seq_len: 100000\n", "train: seq_len: 100000 exceeds"),
        ("  batch_size: 4\n", "  batch_size: 4\n  grad_accum: 3\n", "train: grad_accum"),
        ("  preset: tiny\n", "  preset: huge\n", "train.preset"),
    ],
)
def test_a_wrong_train_section_is_refused_with_the_field(
    line: str, wrong: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message):
        parse_yaml(TRAIN_JOB.replace(line, wrong))


def test_a_job_runs_a_command_or_trains_not_both() -> None:
    with pytest.raises(SpecError, match="exactly one of command and train"):
        parse_yaml(TRAIN_JOB + "command: [x]\n")
    with pytest.raises(SpecError, match="exactly one of command and train"):
        parse_yaml("kind: Job\nname: j\n")
