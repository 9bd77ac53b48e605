"""The console's pure parts: sealed sessions, CSRF tokens, and how API answers are folded."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from rainier.web.charts import line_chart, metric_charts
from rainier.web.formats import usd
from rainier.web.session import SESSION_S, Sealer, load_secret
from rainier.web.views import chips_by_flavor, fleet, queue


def test_a_session_opens_only_unaltered_unexpired_and_under_its_own_secret(tmp_path: Path) -> None:
    secret = load_secret(tmp_path)
    assert load_secret(tmp_path) == secret  # every worker on the machine gets the same one
    assert (tmp_path / "console-secret").stat().st_mode & 0o777 == 0o600
    sealer = Sealer(secret)
    value = sealer.seal("rk_secret", "admin", "acme", now=1000.0)
    assert "rk_secret" not in value
    opened = sealer.open(value, now=1001.0)
    assert opened is not None and (opened.key, opened.role, opened.tenant) == (
        "rk_secret",
        "admin",
        "acme",
    )
    assert sealer.open(value, now=1000.0 + SESSION_S + 1) is None
    assert Sealer(b"x" * 32).open(value, now=1001.0) is None
    for i in range(0, len(value), 7):
        tampered = value[:i] + ("A" if value[i] != "A" else "B") + value[i + 1 :]
        assert sealer.open(tampered, now=1001.0) is None
    assert sealer.open("", now=1001.0) is None and sealer.open("x" * 5000) is None


def test_a_csrf_token_belongs_to_one_session(tmp_path: Path) -> None:
    sealer = Sealer(load_secret(tmp_path))
    one = sealer.open(sealer.seal("k", "member", "acme"))
    two = sealer.open(sealer.seal("k", "member", "acme"))
    assert one is not None and two is not None
    assert sealer.csrf_ok(one, sealer.csrf_token(one))
    assert not sealer.csrf_ok(one, sealer.csrf_token(two))
    assert not sealer.csrf_ok(one, None) and not sealer.csrf_ok(one, "")


def job(
    tenant: str, state: str, chips: int, nodes: int = 1, placement: list[str] | None = None
) -> dict:
    return {
        "id": f"job-{tenant}-{state}-{chips}",
        "tenant": tenant,
        "state": state,
        "flavor": "h200",
        "nodes": nodes,
        "chips_per_node": chips,
        "placement": placement,
        "created_at": "2026-12-01T00:00:00",
        "reason": "waiting",
    }


def contract(tenant: str, guaranteed: int, borrow: int = 0) -> dict:
    return {
        "name": f"{tenant}-c",
        "tenant": tenant,
        "spec": {"guaranteed_chips": {"h200": guaranteed}, "borrow_limit_chips": {"h200": borrow}},
    }


def test_chips_beyond_the_guarantee_count_as_borrowed() -> None:
    (row,) = chips_by_flavor(
        [contract("acme", 8, 8)],
        [job("acme", "running", 8, 2), job("acme", "pending", 8), job("acme", "succeeded", 8)],
    )
    assert (row.guaranteed, row.in_use, row.borrowed, row.borrow_limit) == (8, 16, 8, 8)
    (idle,) = chips_by_flavor([contract("acme", 8)], [job("acme", "running", 2)])
    assert (idle.borrowed, idle.idle_guaranteed) == (0, 6)


def test_the_fleet_is_a_tree_with_each_tenants_chips_per_node() -> None:
    nodes = [
        {
            "name": n,
            "flavor": "h200",
            "chips": 8,
            "zone": z,
            "block": b,
            "rack": r,
            "used_chips": u,
            "schedulable": s,
        }
        for n, z, b, r, u, s in [
            ("n2", "z1", "b1", "r2", 0, False),
            ("n1", "z1", "b1", "r1", 8, True),
            ("n3", "z2", "b9", "r1", 4, True),
        ]
    ]
    jobs = [
        job("acme", "running", 4, 2, ["n1", "n3"]),
        job("globex", "running", 4, 1, ["n1"]),
        job("acme", "pending", 8, 1, None),
    ]
    zones = fleet(nodes, jobs)
    assert [z.name for z in zones] == ["z1", "z2"]
    (b1,) = zones[0].blocks
    assert [r.name for r in b1.racks] == ["r1", "r2"] and (b1.used, b1.chips) == (8, 16)
    n1 = b1.racks[0].nodes[0]
    assert n1.by_tenant == {"acme": 4, "globex": 4} and n1.free == 0
    assert not b1.racks[1].nodes[0].schedulable
    assert zones[1].blocks[0].racks[0].nodes[0].by_tenant == {"acme": 4}


def test_the_queue_shows_who_waits_and_who_borrows() -> None:
    jobs = [
        job("acme", "running", 8, 2),
        job("globex", "pending", 8),
        job("globex", "running", 4),
    ]
    rows = queue(jobs, [contract("acme", 8), contract("globex", 8)])
    acme, globex = rows
    assert acme.borrowed == {"h200": 8} and acme.waiting == []
    assert globex.borrowed == {} and [j["state"] for j in globex.waiting] == ["pending"]


def test_charts_scale_every_point_into_the_frame() -> None:
    rows = [
        {"step": s, "loss": 5.0 / s, "tokens_per_s": 100.0 * s, "mfu": 0.1} for s in range(1, 21)
    ]
    loss, tps, mfu = metric_charts(rows)
    for chart in (loss, tps, mfu):
        (line,) = chart.lines
        points = [tuple(map(float, p.split(","))) for p in line.points.split()]
        assert len(points) == 20
        assert all(0 <= x <= chart.width and 0 <= y <= chart.height for x, y in points)
    first, last = (tuple(map(float, p.split(","))) for p in loss.lines[0].points.split()[::19])
    assert first[1] < last[1]  # falling loss: from the top of the frame down
    assert line_chart("empty", {"x": []}).empty


@pytest.mark.parametrize(
    ("value", "shown"),
    [("1234.5", "$1,234.50"), (Decimal("0.000288"), "$0.000288"), ("0", "$0.00"), ("bad", "—")],
)
def test_money_is_shown_from_decimals(value: object, shown: str) -> None:
    assert usd(value) == shown
