"""The simplest correct placement: gangs in submission order, first nodes with room."""

from __future__ import annotations

from rainier.scheduler.types import Admit, ClusterState, Decisions, Wait


class FirstFitScheduler:
    def schedule(self, state: ClusterState) -> Decisions:
        free = {n.name: n.chips for n in state.nodes if n.schedulable}
        flavor_of = {n.name: n.flavor for n in state.nodes}
        for alloc in state.running:
            for name in alloc.node_names:
                if name in free:
                    free[name] -= alloc.workload.chips_per_node
        out = Decisions()
        for w in sorted(state.pending, key=lambda w: (-w.priority, w.submitted_s, w.id)):
            fits = [
                name
                for name, chips in free.items()
                if flavor_of[name] == w.flavor and chips >= w.chips_per_node
            ]
            if len(fits) < w.nodes:
                out.wait.append(Wait(w.id, f"waiting for {w.chips} {w.flavor} chips"))
                continue
            chosen = tuple(fits[: w.nodes])
            for name in chosen:
                free[name] -= w.chips_per_node
            out.admit.append(Admit(w.id, chosen, 0, "fits"))
        return out
