"""Readable scenarios: reclaim, holds, borrowing, fair share, topology packing and reasons."""

from __future__ import annotations

from dataclasses import replace

from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import Allocation, ClusterState, Decisions, NodeInfo, Quota, Workload

from .invariants import check_all


def block_cluster(blocks: int, per_block: int, chips: int = 8) -> list[NodeInfo]:
    return [
        NodeInfo(f"n{b}{i}", "h200", chips, "z", f"b{b}", f"r{b}{i // 2}")
        for b in range(blocks)
        for i in range(per_block)
    ]


def run(state: ClusterState) -> Decisions:
    d = RainierScheduler().schedule(state)
    check_all(state, d)
    return d


def test_reclaim_preempts_the_fewest_lowest_priority_borrowers_and_holds_their_nodes() -> None:
    nodes = block_cluster(1, 4)
    quotas = [Quota("a", {"h200": 16}), Quota("b", {"h200": 16})]
    running = [
        Allocation(Workload(f"b{i}", "b", "h200", 1, 8, priority=p), (f"n0{i}",), float(i))
        for i, p in enumerate((5, 5, 1, 2))
    ]
    claim = Workload("a-train", "a", "h200", nodes=1, chips_per_node=8)
    state = ClusterState(10.0, nodes, quotas, running, [claim])
    d = run(state)
    assert [p.workload_id for p in d.preempt] == ["b2"]
    assert d.preempt[0].reason == (
        "preempted to reclaim guarantee of tenant a (a-train needs 8 h200 chips)"
    )
    assert d.admit == []
    assert "held" in d.wait[0].reason

    stopping = [replace(a, stopping=True) if a.workload.id == "b2" else a for a in running]
    rival = Workload("b-more", "b", "h200", 1, 8, priority=9)
    d = run(replace(state, running=stopping, pending=[claim, rival]))
    assert d.preempt == []
    assert {w.workload_id for w in d.wait} == {"a-train", "b-more"}
    assert "stopping allocations are releasing" in d.wait[0].reason

    gone = [a for a in running if a.workload.id != "b2"]
    d = run(replace(state, running=gone, pending=[claim, rival]))
    assert [(a.workload_id, a.node_names) for a in d.admit] == [("a-train", ("n02",))]


def test_work_inside_its_own_guarantee_is_never_preempted_for_a_borrower() -> None:
    nodes = block_cluster(1, 2)
    quotas = [Quota("a", {"h200": 8}), Quota("b", {"h200": 8})]
    running = [Allocation(Workload("b0", "b", "h200", 1, 8), ("n00",), 0.0)]
    greedy = Workload("a-big", "a", "h200", nodes=2, chips_per_node=8, priority=100)
    d = run(ClusterState(0.0, nodes, quotas, running, [greedy]))
    assert d.preempt == []
    assert d.admit == []


def test_borrowing_stops_at_the_borrow_limit() -> None:
    nodes = block_cluster(1, 4)
    quotas = [Quota("a", {"h200": 8}, borrow_limit_chips={"h200": 8}), Quota("b", {"h200": 24})]
    pending = [Workload(f"a{i}", "a", "h200", 1, 8, submitted_s=float(i)) for i in range(3)]
    d = run(ClusterState(0.0, nodes, quotas, [], pending))
    assert [a.workload_id for a in d.admit] == ["a0", "a1"]
    assert [a.borrowed_chips for a in d.admit] == [0, 8]
    assert d.wait[0].reason == "over borrow limit (h200: 8 borrowed of 8 allowed, needs 8 more)"


def test_a_flavor_missing_from_the_borrow_limits_may_not_be_borrowed() -> None:
    nodes = block_cluster(1, 2)
    quotas = [Quota("a", {}, borrow_limit_chips={"trn2": 64})]
    d = run(ClusterState(0.0, nodes, quotas, [], [Workload("a0", "a", "h200", 1, 8)]))
    assert d.admit == []
    assert "over borrow limit (h200: 0 borrowed of 0 allowed" in d.wait[0].reason


def test_idle_chips_go_to_the_borrower_with_the_smallest_weighted_dominant_share() -> None:
    nodes = block_cluster(1, 4)
    quotas = [Quota("a", {}, weight=3.0), Quota("b", {}, weight=1.0), Quota("owner", {"h200": 32})]
    pending = [
        Workload(f"{t}{i}", t, "h200", 1, 4, submitted_s=float(i))
        for t in ("a", "b")
        for i in range(8)
    ]
    d = run(ClusterState(0.0, nodes, quotas, [], pending))
    won = [a.workload_id[0] for a in d.admit]
    assert len(won) == 8
    assert won.count("a") == 6 and won.count("b") == 2


def test_unpreemptible_work_never_borrows() -> None:
    nodes = block_cluster(1, 2)
    quotas = [Quota("a", {"h200": 8})]
    pending = [Workload("solid", "a", "h200", 2, 8, preemptible=False)]
    d = run(ClusterState(0.0, nodes, quotas, [], pending))
    assert d.admit == []
    assert d.wait[0].reason.startswith("not preemptible, so it may run only inside the guarantee")


def test_higher_priority_work_may_displace_its_own_tenants_lower_priority_work() -> None:
    nodes = block_cluster(1, 2)
    quotas = [Quota("a", {"h200": 16})]
    running = [
        Allocation(Workload("low", "a", "h200", 1, 8, priority=1), ("n00",), 0.0),
        Allocation(Workload("lower", "a", "h200", 1, 8, priority=0), ("n01",), 5.0),
        Allocation(
            Workload("pinned", "a", "h200", 1, 0, priority=0, preemptible=False), ("n01",), 0.0
        ),
    ]
    urgent = Workload("urgent", "a", "h200", 1, 8, priority=9, may_preempt_own=True)
    polite = Workload("polite", "a", "h200", 1, 8, priority=9)
    d = run(ClusterState(10.0, nodes, quotas, running, [urgent, polite]))
    assert [p.workload_id for p in d.preempt] == ["lower"]
    assert "higher-priority urgent (priority 9 > 0) of the same tenant a" in d.preempt[0].reason
    assert {w.workload_id for w in d.wait} == {"urgent", "polite"}


def test_replicas_are_placed_ahead_of_training() -> None:
    nodes = block_cluster(1, 1)
    job = Workload("train", "a", "h200", 1, 8, priority=100, submitted_s=0.0)
    replica = Workload("serve-0", "a", "h200", 1, 8, kind="replica", submitted_s=9.0)
    d = run(ClusterState(0.0, nodes, [], [], [job, replica]))
    assert [a.workload_id for a in d.admit] == ["serve-0"]
    d = RainierScheduler(replicas_first=False).schedule(
        ClusterState(0.0, nodes, [], [], [job, replica])
    )
    assert [a.workload_id for a in d.admit] == ["train"]


def test_single_node_work_fills_busy_blocks_before_breaking_into_empty_ones() -> None:
    nodes = block_cluster(3, 4)
    running = [Allocation(Workload("x", "a", "h200", 1, 4), ("n13",), 0.0)]
    pending = [Workload(f"s{i}", "a", "h200", 1, 8, submitted_s=float(i)) for i in range(3)]
    d = run(ClusterState(0.0, nodes, [], running, pending))
    assert sorted(n for a in d.admit for n in a.node_names) == ["n10", "n11", "n12"]
    tiny = Workload("tiny", "a", "h200", 1, 2)
    d = run(ClusterState(0.0, nodes, [], running, [tiny]))
    assert d.admit[0].node_names == ("n13",)


def test_gangs_take_the_best_fitting_block_and_keep_big_holes_whole() -> None:
    nodes = block_cluster(2, 4) + [
        NodeInfo(f"m{i}", "h200", 8, "z", "b9", f"r9{i}") for i in range(2)
    ]
    pair = Workload("pair", "a", "h200", nodes=2, chips_per_node=8)
    d = run(ClusterState(0.0, nodes, [], [], [pair]))
    assert d.admit[0].node_names == ("m0", "m1")
    five = Workload("five", "a", "h200", nodes=5, chips_per_node=8)
    d = run(ClusterState(0.0, nodes, [], [], [five]))
    assert d.admit[0].node_names == ("n00", "n01", "n02", "n03", "m0")


def test_topology_constraints_hold_or_the_gang_waits_with_a_reason() -> None:
    nodes = block_cluster(2, 4)
    running = [Allocation(Workload("x", "a", "h200", 1, 8), ("n00",), 0.0, stopping=False)]
    in_block = Workload("blk", "a", "h200", nodes=4, chips_per_node=8, within="block")
    d = run(ClusterState(0.0, nodes, [], running, [in_block]))
    assert d.admit[0].node_names == ("n10", "n11", "n12", "n13")
    in_rack = Workload("rk", "a", "h200", nodes=3, chips_per_node=8, within="rack")
    d = run(ClusterState(0.0, nodes, [], running, [in_rack]))
    assert d.admit == []
    assert d.wait[0].reason == (
        "can never fit: no set of schedulable nodes offers 24 h200 chips (3 nodes x 8) in one rack"
    )


def test_unschedulable_nodes_get_nothing() -> None:
    nodes = [replace(n, schedulable=n.name != "n00") for n in block_cluster(1, 2)]
    pending = [Workload(f"w{i}", "a", "h200", 1, 8, submitted_s=float(i)) for i in range(2)]
    d = run(ClusterState(0.0, nodes, [], [], pending))
    assert [a.node_names for a in d.admit] == [("n01",)]


def test_the_blocked_gang_gets_a_reservation_and_a_readable_reason() -> None:
    nodes = block_cluster(2, 4, chips=16)
    nodes = [replace(n, flavor="trn2") for n in nodes]
    running = [
        Allocation(Workload("r", "b", "trn2", 2, 16, max_duration_s=3600.0), ("n00", "n01"), 0.0)
    ]
    gang = Workload("big", "a", "trn2", nodes=4, chips_per_node=16, within="block", priority=5)
    filler = Workload("filler", "a", "trn2", nodes=4, chips_per_node=16, priority=1)
    d = run(ClusterState(100.0, nodes, [], running, [gang, filler]))
    assert d.admit[0].workload_id == "big"
    d = run(ClusterState(100.0, nodes, [], running, [gang, replace(filler, priority=9)]))
    waits = {w.workload_id: w for w in d.wait}
    assert (
        waits["big"].reason
        == "waiting for 64 trn2 chips (4 nodes x 16) in one block; reservation at t=3600"
    )
    assert waits["big"].reservation_s == 3600.0


def test_chips_held_for_a_reclaiming_gang_are_not_given_to_anyone_else() -> None:
    nodes = block_cluster(1, 4)
    quotas = [Quota("a", {"h200": 16}), Quota("b", {"h200": 16})]
    running = [
        Allocation(Workload(f"b{i}", "b", "h200", 1, 8), (f"n0{i}",), float(i)) for i in range(3)
    ]
    gang = Workload("a-pair", "a", "h200", nodes=2, chips_per_node=8, within="block")
    opportunist = Workload("c-one", "c", "h200", 1, 8, priority=50)
    d = run(ClusterState(10.0, nodes, quotas, running, [opportunist, gang]))
    assert [p.workload_id for p in d.preempt] == ["b2"]
    assert d.admit == []
    waits = {w.workload_id: w.reason for w in d.wait}
    assert "held" in waits["a-pair"]
    assert waits["c-one"] == (
        "waiting for 8 h200 chips on one node; no start time can be estimated "
        "(the allocations it would need have no max_duration_s)"
    )
