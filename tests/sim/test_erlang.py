"""The engine against queueing theory: M/M/4 under strict FIFO must give Erlang C's mean wait.

A 300,000-job sample mean is itself noisy near saturation: over twelve seeds its error against
Erlang C had a standard deviation of about 1.7%, 3.1% and 4.6% at loads 0.5, 0.8 and 0.9. So the
seed is fixed, and each run is also checked job by job against the Kiefer-Wolfowitz recursion
on the same arrivals, which any FIFO multi-server queue must match exactly.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from rainier.sim.baselines import FifoScheduler
from rainier.sim.engine import Simulation
from rainier.sim.model import Cluster, FlavorPool, Trace, TraceJob
from rainier.sim.records import DONE, SimConfig

SERVERS = 4
MEAN_S = 100.0
JOBS = 300_000


def erlang_c_mean_wait(servers: int, arrival_rate: float, service_rate: float) -> float:
    a = arrival_rate / service_rate
    rho = a / servers
    below = sum(a**k / math.factorial(k) for k in range(servers))
    top = a**servers / math.factorial(servers) / (1 - rho)
    return top / (below + top) / (servers * service_rate - arrival_rate)


def poisson_trace(load: float, n: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    rate = load * SERVERS / MEAN_S
    submits = np.cumsum(rng.exponential(1 / rate, n))
    durations = rng.exponential(MEAN_S, n)
    return Trace(
        [
            TraceJob(f"j{i}", s, "t", "h200", 1, 1, d)
            for i, (s, d) in enumerate(zip(submits.tolist(), durations.tolist(), strict=True))
        ]
    )


def fifo_waits_by_recursion(trace: Trace) -> np.ndarray:
    """Kiefer-Wolfowitz: in FIFO order each job starts when the earliest server frees up."""
    free = [0.0] * SERVERS
    waits = np.empty(len(trace.jobs))
    for i, j in enumerate(trace.jobs):
        earliest = heapq.heappop(free)
        start = max(earliest, j.submit_s)
        waits[i] = start - j.submit_s
        heapq.heappush(free, start + j.duration_s)
    return waits


def simulate_fifo(trace: Trace) -> np.ndarray:
    sim = Simulation(
        Cluster((FlavorPool("h200", 1, SERVERS),)),
        trace,
        FifoScheduler(),
        "fifo",
        SimConfig(queue_window=16, skip_when_full=True),
    )
    result = sim.run()
    assert all(js.state == DONE for js in result.jobs)
    return np.array([js.waited_s for js in result.jobs])


@pytest.mark.slow
@pytest.mark.parametrize("load", [0.5, 0.8, 0.9])
def test_mean_wait_matches_erlang_c(load: float) -> None:
    trace = poisson_trace(load, JOBS, seed=0)
    waits = simulate_fifo(trace)
    theory = erlang_c_mean_wait(SERVERS, load * SERVERS / MEAN_S, 1 / MEAN_S)
    error = waits.mean() / theory - 1
    print(f"load {load}: simulated {waits.mean():.2f}s, Erlang C {theory:.2f}s, {error:+.2%}")
    assert abs(error) < 0.05
    assert np.allclose(waits, fifo_waits_by_recursion(trace), atol=1e-6)


def test_every_wait_matches_the_fifo_recursion() -> None:
    trace = poisson_trace(0.85, 20_000, seed=11)
    assert np.allclose(simulate_fifo(trace), fifo_waits_by_recursion(trace), atol=1e-6)


def test_same_trace_and_seed_give_the_same_results() -> None:
    first = simulate_fifo(poisson_trace(0.9, 5_000, seed=5))
    again = simulate_fifo(poisson_trace(0.9, 5_000, seed=5))
    other = simulate_fifo(poisson_trace(0.9, 5_000, seed=6))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
