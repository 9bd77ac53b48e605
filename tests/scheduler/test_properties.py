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
from .strategies import states

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
