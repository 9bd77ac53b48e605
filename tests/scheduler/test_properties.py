"""Properties of one pass over random clusters, contracts, running work and queues."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rainier.scheduler import default_scheduler
from rainier.scheduler.policy import RainierScheduler
from rainier.scheduler.types import ClusterState

from .invariants import check_all, own_preemptions_ok
from .strategies import apply, states

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_default_scheduler_is_the_policy() -> None:
    assert isinstance(default_scheduler(), RainierScheduler)


@FAST
@given(states())
def test_every_pass_respects_capacity_gangs_topology_and_quotas(state: ClusterState) -> None:
    d = RainierScheduler().schedule(state)
    check_all(state, d)
    own_preemptions_ok(state, d, {w.id: w for w in state.pending})


@FAST
@given(states(), st.randoms(use_true_random=False))
def test_same_inputs_same_decisions_in_any_input_order(
    state: ClusterState, rnd: random.Random
) -> None:
    first = RainierScheduler().schedule(state)
    assert RainierScheduler().schedule(state) == first
    shuffled = replace(
        state,
        nodes=rnd.sample(list(state.nodes), len(state.nodes)),
        quotas=rnd.sample(list(state.quotas), len(state.quotas)),
        running=rnd.sample(list(state.running), len(state.running)),
        pending=rnd.sample(list(state.pending), len(state.pending)),
    )
    assert RainierScheduler().schedule(shuffled) == first


@FAST
@given(states(), st.randoms(use_true_random=False))
def test_a_scheduler_reused_across_passes_decides_as_a_fresh_one(
    state: ClusterState, rnd: random.Random
) -> None:
    """The node index and the running table are kept between passes; whatever changes from one
    pass to the next (work admitted, stopped, finished, nodes drained), a reused scheduler must
    decide exactly as a new one would."""
    reused = RainierScheduler()
    for step in range(4):
        d = reused.schedule(state)
        assert d == RainierScheduler().schedule(state)
        state = apply(state, d, state.now_s + rnd.choice([0.0, 10.0, 60.0]))
        if step == 1 and state.nodes:
            drained = rnd.randrange(len(state.nodes))
            nodes = list(state.nodes)
            nodes[drained] = replace(nodes[drained], schedulable=False)
            state = replace(state, nodes=nodes)
        if step == 2:
            state = replace(state, nodes=tuple(state.nodes), running=list(state.running))
