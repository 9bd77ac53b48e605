"""Settings from the environment: the embedded default and scale-out differ only here."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rainier.storage.access import StorageConfig, StorageConfigError


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
    # RAINIER_STORAGE_URL and friends (rainier.storage.access); None: the folder below
    storage: StorageConfig | None = None

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
    def storage_dir(self) -> Path:
        """One prefix per tenant (`storage/<tenant>/`): what a tenant uploads, and may register."""
        return self.home / "storage"

    @property
    def storage_config(self) -> StorageConfig:
        """Where checkpoints, models, datasets and finished logs live, by URL."""
        return self.storage or StorageConfig.local(self.storage_dir)

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
            "port": _port(os.environ.get("RAINIER_PORT") or "8000"),
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
        if "storage" not in values:
            try:
                values["storage"] = StorageConfig.from_env(Path(str(values["home"])) / "storage")
            except StorageConfigError as exc:
                raise ConfigError(str(exc)) from None
        return cls(**values)  # type: ignore[arg-type]


class ConfigError(ValueError):
    """A setting in the environment is wrong: said in one sentence, not a traceback."""


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"RAINIER_PORT must be a port number, not {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"RAINIER_PORT must be between 0 and 65535, not {port}")
    return port


EXECUTORS = ("local", "ray")
ISOLATION_MODES = ("auto", "required", "off")  # see rainier.control.sandbox.IsolationMode


def check(settings: Settings) -> None:
    """Refuses settings the server could not start with, naming the variable to fix.

    The database is connected to once, so a wrong URL, driver or password is found here
    rather than as a traceback from the first request."""
    if settings.executor not in EXECUTORS:
        raise ConfigError(
            f"RAINIER_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {settings.executor!r}"
        )
    if settings.isolation not in ISOLATION_MODES:
        modes = ", ".join(ISOLATION_MODES)
        raise ConfigError(f"RAINIER_ISOLATION must be one of {modes}, not {settings.isolation!r}")
    from rainier.control.uids import parse_range

    try:
        parse_range(settings.sandbox_uids)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    store = settings.storage_config
    if store.explicit:
        from rainier.storage.fs import StorageError, probe

        try:
            probe(store.url, store.access)
        except StorageError as exc:
            raise ConfigError(f"RAINIER_STORAGE_URL {store.url}: {exc}") from None
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        url = make_url(settings.database_url)
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ConfigError(
            f"RAINIER_DATABASE_URL is not a database URL rainier can use ({exc}); "
            "e.g. sqlite:////path/rainier.db or postgresql+psycopg://user:pw@host/db"
        ) from None
    safe = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args=_connect_args(url.get_backend_name()))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ConfigError(f"cannot connect to the database {safe}: {reason}") from None
    finally:
        engine.dispose()


def _connect_args(backend: str) -> dict[str, object]:
    return {"connect_timeout": 5} if backend == "postgresql" else {}
