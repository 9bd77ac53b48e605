"""`rainier admin`: offline recovery, run on the server's machine against its database.

These commands do not talk to the API: they are for when the API cannot help, such as every
operator key being lost. They read `RAINIER_HOME` and `RAINIER_DATABASE_URL` as the server does,
so whoever runs them can already read the server's database; no key is needed.
"""

from __future__ import annotations

import click
from sqlalchemy import update

from rainier.config import Settings
from rainier.store.db import Store
from rainier.store.keys import hash_key, new_key
from rainier.store.tables import ApiKey, Meta, new_id, utcnow


@click.group()
def admin() -> None:
    """Offline recovery on the server's machine (reads its database directly)."""


@admin.command("reset-operator")
@click.option("--name", default="recovered operator", show_default=True, help="the new key's name")
@click.option(
    "--revoke-others", is_flag=True, help="revoke every other operator key (one may have leaked)"
)
def reset_operator(name: str, revoke_others: bool) -> None:
    """Create a new operator key and print it (shown once)."""
    settings = Settings.from_env()
    key = reset_operator_key(Store(settings.database_url), name, revoke_others)
    click.echo(f"operator key (shown once): {key}")


def reset_operator_key(store: Store, name: str, revoke_others: bool = False) -> str:
    """A new operator key in `store`, the database made or migrated first; with
    `revoke_others`, every operator key but the new one is revoked in the same transaction."""
    store.migrate()
    key = new_key()
    with store.write() as s:
        if s.get(Meta, "initialized") is None:
            s.add(Meta(key="initialized", value="operator key created offline"))
        if revoke_others:
            s.execute(
                update(ApiKey)
                .where(ApiKey.role == "operator", ApiKey.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        s.add(
            ApiKey(
                id=new_id("key"),
                tenant_id=None,
                role="operator",
                name=name[:100],
                key_hash=hash_key(key),
                prefix=key[:10],
            )
        )
    store.dispose()
    return key
