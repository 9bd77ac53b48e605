"""How `ray.nodes()` entries read as rainier nodes (no Ray needed)."""

from __future__ import annotations

from typing import Any

from rainier.control.ray_nodes import read_nodes

NODE_A = "a" * 56
NODE_B = "b" * 56


def entry(node_id: str, alive: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.7",
        "Resources": {"CPU": 4.0},
        "Labels": {},
        **extra,
    }


def test_chips_resource_and_labels_make_a_node() -> None:
    snapshot = read_nodes(
        [
            entry(
                NODE_A,
                Resources={"CPU": 64.0, "GPU": 8.0, "rainier-chips-h200": 8.0},
                Labels={
                    "rainier.io/node": "gpu-017",
                    "rainier.io/zone": "us-a",
                    "rainier.io/block": "nvl-3",
                    "rainier.io/rack": "r12",
                },
            )
        ]
    )
    node = snapshot.nodes["gpu-017"]
    assert (node.info.flavor, node.info.chips, node.gpus) == ("h200", 8, 8.0)
    assert (node.info.zone, node.info.block, node.info.rack) == ("us-a", "nvl-3", "r12")
    inventory = snapshot.inventory()
    assert [n.name for n in inventory.nodes] == ["gpu-017"]
    assert inventory.addresses == {"gpu-017": "10.0.0.7"}


def test_nodes_without_chips_unknown_flavors_and_dead_nodes_are_left_out() -> None:
    snapshot = read_nodes(
        [
            entry(NODE_A),
            entry(NODE_B, Resources={"rainier-chips-tpu9": 4.0}),
            entry("c" * 56, alive=False, Resources={"rainier-chips-cpu": 2.0}),
        ]
    )
    assert snapshot.nodes == {}
    assert snapshot.alive_ids == {NODE_A, NODE_B}
    assert snapshot.dead_ids == {"c" * 56}


def test_unnamed_nodes_are_named_after_their_ray_id_and_names_stay_unique() -> None:
    snapshot = read_nodes(
        [
            entry(NODE_A, Resources={"rainier-chips-cpu": 2.0}),
            entry(NODE_B, Resources={"rainier-chips-cpu": 2.0}, Labels={"rainier.io/node": "x"}),
            entry("d" * 56, Resources={"rainier-chips-cpu": 2.0}, Labels={"rainier.io/node": "x"}),
        ]
    )
    assert sorted(snapshot.nodes) == ["ray-aaaaaaaaaaaa", "x"]
    assert snapshot.nodes["x"].node_id == NODE_B


def test_names_too_long_for_the_nodes_table_are_refused() -> None:
    labels = {"rainier.io/node": "n" * 36}
    snapshot = read_nodes([entry(NODE_A, Resources={"rainier-chips-cpu": 1.0}, Labels=labels)])
    assert snapshot.nodes == {} and snapshot.alive_ids == {NODE_A}
