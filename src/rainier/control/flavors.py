"""The flavor catalog: the shipped defaults overlaid with the operator's `kind: Flavor` documents.

The documents live in the database (one `meta` row holds them all, so an apply is one write),
and every server process installs the catalog it loads into `rainier.spec.FLAVORS`, which
validation, launches, the simulator and the scheduler's callers read. A flavor's list price
goes to the price book as a new version effective from the moment it is applied: ledger lines
record the version that priced them, so no billed line is ever repriced.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from rainier.accounting.contract_lookup import load_price_book
from rainier.catalog import DEFAULT_FLAVORS, Flavor, flavor_of, install_catalog
from rainier.metering.prices import PriceNotFound
from rainier.spec import FlavorSpec
from rainier.store.db import Store
from rainier.store.tables import Meta, PricePoint, utcnow

CATALOG_KEY = "flavors"


def documents(store: Store) -> dict[str, dict[str, Any]]:
    """The operator's documents, by flavor name."""
    with store.read() as s:
        row = s.get(Meta, CATALOG_KEY)
        return dict(json.loads(row.value)) if row is not None else {}


def load_catalog(store: Store) -> dict[str, Flavor]:
    catalog = dict(DEFAULT_FLAVORS)
    for name, doc in documents(store).items():
        catalog[name] = flavor_of(FlavorSpec.model_validate(doc))
    return catalog


def install(store: Store) -> None:
    """Puts this database's catalog in force in this process, and reloads it on a miss."""
    install_catalog(load_catalog(store), reload=lambda: install_catalog(load_catalog(store)))


def apply_flavor(store: Store, doc: FlavorSpec, now: datetime | None = None) -> bool:
    """Stores the document and publishes its price; True when the price changed."""
    now = now or utcnow()
    with store.write() as s:
        row = s.get(Meta, CATALOG_KEY, with_for_update=True)
        docs = json.loads(row.value) if row is not None else {}
        docs[doc.name] = doc.model_dump(mode="json")
        if row is None:
            s.add(Meta(key=CATALOG_KEY, value=json.dumps(docs, sort_keys=True)))
        else:
            row.value, row.at = json.dumps(docs, sort_keys=True), now
        book = load_price_book(s)
        try:
            current: Decimal | None = book.chip_price_at(doc.name, now).usd_per_chip_hour
        except PriceNotFound:
            current = None
        changed = current != doc.list_usd_per_chip_hour
        if changed:
            new = book.with_chip_price(doc.name, doc.list_usd_per_chip_hour, now)
            version = book.version + 1
            for p in new.chip_prices:
                s.add(
                    PricePoint(
                        version=version,
                        kind="chip",
                        sku=p.flavor,
                        usd=p.usd_per_chip_hour,
                        effective_from=p.effective_from,
                    )
                )
            for t in new.token_prices:
                s.add(
                    PricePoint(
                        version=version,
                        kind="token",
                        sku=t.model,
                        usd=t.usd_per_million_input_tokens,
                        output_usd=t.usd_per_million_output_tokens,
                        effective_from=t.effective_from,
                    )
                )
    install(store)
    return changed
