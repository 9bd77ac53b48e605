"""Settings from the environment: the embedded default and scale-out differ only here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    executor: str = "local"
    ray_address: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    tick_s: float = 0.2
    lease_s: float = 10.0
    reconcile: bool = True
    # RAINIER_ISOLATION: auto (sandbox tasks where the machine can), required, off
    isolation: str = "auto"
    # RAINIER_SANDBOX_UIDS: the uids tenants' tasks run as, `first-last`
    sandbox_uids: str = "900000-999999"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def tasks_dir(self) -> Path:
        return self.home / "tasks"

    @property
    def checkpoints_dir(self) -> Path:
        return self.home / "checkpoints"

    @property
    def work_dir(self) -> Path:
        """Where each job's tasks get a private working folder (their `HOME` and cwd)."""
        return self.home / "work"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        home = Path(os.environ.get("RAINIER_HOME", Path.home() / ".rainier")).expanduser()
        values: dict[str, object] = {
            "home": home,
            "database_url": os.environ.get("RAINIER_DATABASE_URL")
            or f"sqlite:///{home / 'rainier.db'}",
            "executor": os.environ.get("RAINIER_EXECUTOR", "local"),
            "ray_address": os.environ.get("RAINIER_RAY_ADDRESS") or None,
            "host": os.environ.get("RAINIER_HOST", "127.0.0.1"),
            "port": int(os.environ.get("RAINIER_PORT", "8000")),
            "reconcile": os.environ.get("RAINIER_RECONCILE", "1") != "0",
            "isolation": os.environ.get("RAINIER_ISOLATION", "auto"),
            "sandbox_uids": os.environ.get("RAINIER_SANDBOX_UIDS", "900000-999999"),
        }
        values.update(overrides)
        if (
            "home" in overrides
            and "database_url" not in overrides
            and not os.environ.get("RAINIER_DATABASE_URL")
        ):
            values["database_url"] = f"sqlite:///{Path(str(values['home'])) / 'rainier.db'}"
        return cls(**values)  # type: ignore[arg-type]
