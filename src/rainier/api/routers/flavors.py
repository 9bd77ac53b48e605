"""Flavors: the operator's catalog of accelerators (`kind: Flavor`); anyone signed in reads it."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter
from pydantic import BaseModel

from rainier.api.auth import Caller, require
from rainier.api.deps import StoreDep
from rainier.api.errors import not_found
from rainier.catalog import FLAVORS, Flavor, flavor_of
from rainier.control import flavors
from rainier.spec import FlavorSpec

router = APIRouter(prefix="/api/v1", tags=["flavors"])


class FlavorOut(BaseModel):
    name: str
    memory_gb: float
    peak_tflops: dict[str, float]
    list_usd_per_chip_hour: Decimal
    device_env: str
    devices_per_chip: int
    task_memory_gb_per_chip: float
    source: str  # "default" (shipped) or "operator" (a stored document)
    price_published: bool = False


def _out(flavor: Flavor, source: str, published: bool = False) -> FlavorOut:
    return FlavorOut(
        name=flavor.name,
        memory_gb=flavor.memory_gb,
        peak_tflops=dict(flavor.peak_tflops_by_dtype) or {"bf16": flavor.peak_tflops},
        list_usd_per_chip_hour=flavor.list_usd_per_chip_hour,
        device_env=flavor.device_env,
        devices_per_chip=flavor.devices_per_chip,
        task_memory_gb_per_chip=flavor.task_memory_gb_per_chip,
        source=source,
        price_published=published,
    )


@router.post("/flavors", status_code=201)
def apply_flavor(doc: FlavorSpec, caller: Caller, store: StoreDep) -> FlavorOut:
    """Adds or changes a flavor; a new list price takes effect now and reprices nothing billed."""
    require(caller, "operator")
    published = flavors.apply_flavor(store, doc)
    return _out(flavor_of(doc), "operator", published)


@router.get("/flavors")
def list_flavors(caller: Caller, store: StoreDep) -> list[FlavorOut]:
    flavors.install(store)
    stored = flavors.documents(store)
    return [_out(f, "operator" if n in stored else "default") for n, f in sorted(FLAVORS.items())]


@router.get("/flavors/{name}")
def get_flavor(name: str, caller: Caller, store: StoreDep) -> FlavorOut:
    flavors.install(store)
    if name not in FLAVORS:
        raise not_found("flavor", name)
    return _out(FLAVORS[name], "operator" if name in flavors.documents(store) else "default")
