"""rainier's trace CSV and cluster YAML: round trips, and errors that say where."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rainier.sim.cluster import dump_cluster, load_cluster, parse_cluster
from rainier.sim.errors import SimInputError
from rainier.sim.model import Trace
from rainier.sim.traces import load_trace, read_trace, save_trace

from .conftest import random_gangs

CLUSTER = """\
flavors:
  h200: {nodes: 16, chips_per_node: 8, nodes_per_block: 4, blocks_per_rack: 2, zones: 2}
  trn2: {nodes: 4, chips_per_node: 16}
tenants:
  acme:
    guaranteed_chips: {h200: 64}
    borrow_limit_chips: {h200: 32}
    discount: 0.25
  beta: {guaranteed_chips: {trn2: 16}, weight: 2}
  spot: {}
"""


def test_cluster_layout_and_contracts() -> None:
    c = parse_cluster(CLUSTER)
    nodes = c.node_infos()
    assert len(nodes) == 20
    h200 = [n for n in nodes if n.flavor == "h200"]
    assert len({n.block for n in h200}) == 4
    assert len({n.rack for n in h200}) == 2
    assert {n.zone for n in h200} == {"zone-0", "zone-1"}
    quotas = {q.tenant: q for q in c.quotas()}
    assert quotas["acme"].guaranteed_chips == {"h200": 64}
    assert quotas["acme"].borrow_limit_chips == {"h200": 32}
    assert quotas["beta"].weight == 2.0
    assert quotas["spot"].borrow_limit_chips is None
    assert parse_cluster(dump_cluster(c)) == c


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("flavors:\n  h200: {nodes: 0, chips_per_node: 8}\n", "line 2: flavors.h200.nodes"),
        ("flavors:\n  h100x: {nodes: 1, chips_per_node: 8}\n", "line 2: flavors.h100x"),
        ("flavors:\n  h200:\n    chips_per_node: 8\n", "flavors.h200.nodes: missing"),
        (
            "flavors:\n  h200: {nodes: 1, chips_per_node: 8}\ntenants:\n  a:\n"
            "    guaranteed_chips: {trn2: 8}\n",
            "line 5: tenants.a.guaranteed_chips.trn2",
        ),
        (
            "flavors:\n  h200: {nodes: 1, chips_per_node: 8}\ntenants:\n  a: {discount: 1.5}\n",
            "line 4: tenants.a.discount",
        ),
        ("nodes: 3\n", "line 1: nodes: unknown field"),
    ],
)
def test_cluster_errors_name_the_field_and_line(text: str, where: str) -> None:
    with pytest.raises(SimInputError, match=where.replace(".", r"\.")):
        parse_cluster(text, "c.yaml")


def test_trace_round_trip(tmp_path: Path) -> None:
    trace = Trace(random_gangs(50, seed=1)).sorted()
    save_trace(trace, tmp_path / "t.csv")
    assert load_trace(tmp_path / "t.csv") == trace


def test_trace_minimal_columns() -> None:
    text = (
        "submit_s,tenant,flavor,nodes,chips_per_node,duration_s\n5,a,h200,2,8,60\n0,b,h200,1,1,1\n"
    )
    trace = read_trace(io.StringIO(text))
    assert [j.tenant for j in trace.jobs] == ["b", "a"]
    assert trace.jobs[1].chips == 16
    assert trace.jobs[1].checkpoint_interval_s is None
    assert trace.jobs[1].priority == 0 and trace.jobs[1].kind == "job"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("submit_s,tenant,flavor,nodes,chips_per_node\n", "line 1: missing column.*duration_s"),
        (
            "submit_s,tenant,flavor,nodes,chips_per_node,duration_s\n0,a,h200,1,1,1\n"
            "0,a,h200,1,1,ten\n",
            "line 3: duration_s: 'ten' is not a number",
        ),
        (
            "submit_s,tenant,flavor,nodes,chips_per_node,duration_s\n0,a,h200,0,1,1\n",
            "line 2: nodes: must be an integer >= 1",
        ),
        (
            "submit_s,tenant,flavor,nodes,chips_per_node,duration_s\n0,a,tpu,1,1,1\n",
            "line 2: flavor: 'tpu' is not a flavor",
        ),
        (
            "submit_s,tenant,flavor,nodes,chips_per_node,duration_s,kind\n0,a,h200,1,1,1,batch\n",
            "line 2: kind",
        ),
    ],
)
def test_trace_errors_name_the_line_and_column(text: str, where: str) -> None:
    with pytest.raises(SimInputError, match=where):
        read_trace(io.StringIO(text), "jobs.csv", flavors=["h200"])


def test_missing_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(SimInputError, match="cannot read"):
        load_cluster(tmp_path / "nope.yaml")
    with pytest.raises(SimInputError, match="cannot read"):
        load_trace(tmp_path / "nope.csv")
