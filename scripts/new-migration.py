"""Writes a new migration from the difference between the tables and the migrations so far.

Usage: python scripts/new-migration.py "what changed"
"""

import sys
import tempfile

from alembic import command
from alembic.config import Config

from rainier.store.db import MIGRATIONS, Store

with tempfile.TemporaryDirectory() as tmp:
    store = Store(f"sqlite:///{tmp}/m.db")
    store.migrate()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=sys.argv[1], autogenerate=True)
