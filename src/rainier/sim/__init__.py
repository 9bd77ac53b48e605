"""The simulator: rainier's scheduler (or a baseline) against a trace, on a simulated clock."""

from rainier.sim.engine import Simulation
from rainier.sim.errors import SimInputError
from rainier.sim.model import Cluster, FlavorPool, TenantContract, Trace, TraceJob
from rainier.sim.records import PolicyError, SimConfig, SimResult

__all__ = [
    "Cluster",
    "FlavorPool",
    "PolicyError",
    "SimConfig",
    "SimInputError",
    "SimResult",
    "Simulation",
    "TenantContract",
    "Trace",
    "TraceJob",
]
