"""Named CLI profiles: one saved (URL, key) per name in `RAINIER_HOME/credentials.json`.

An operator and a tenant admin often share a machine; a single saved key meant that logging in
as one silently logged the other out. Each login now lands in its own profile (named after the
key's tenant, or `operator`), and replacing a profile's different key needs `--force`.

Which profile a command uses: `--profile`, else `RAINIER_PROFILE`, else the one the last login
selected. `RAINIER_API_KEY` and `RAINIER_URL` still override the profile's key and URL.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT = "default"


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    key: str
    tenant: str | None = None
    role: str | None = None


def home() -> Path:
    return Path(os.environ.get("RAINIER_HOME", Path.home() / ".rainier")).expanduser()


def credentials_path() -> Path:
    return home() / "credentials.json"


@dataclass
class Credentials:
    """The whole file: every profile and which one is current."""

    current: str | None
    profiles: dict[str, Profile]

    @staticmethod
    def load() -> Credentials:
        try:
            data: dict[str, Any] = json.loads(credentials_path().read_text())
        except (FileNotFoundError, ValueError):
            return Credentials(None, {})
        if "profiles" not in data:  # the single-key file of earlier versions
            if not data.get("key"):
                return Credentials(None, {})
            old = Profile(DEFAULT, str(data.get("url", "")), str(data["key"]))
            return Credentials(DEFAULT, {DEFAULT: old})
        profiles = {
            name: Profile(
                name, str(p.get("url", "")), str(p.get("key", "")), p.get("tenant"), p.get("role")
            )
            for name, p in data["profiles"].items()
        }
        return Credentials(data.get("current"), profiles)

    def save(self) -> Path:
        path = credentials_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "current": self.current,
            "profiles": {
                name: {"url": p.url, "key": p.key, "tenant": p.tenant, "role": p.role}
                for name, p in sorted(self.profiles.items())
            },
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    def selected(self, name: str | None = None) -> Profile | None:
        """The profile a command uses (see the module docstring); None if there is none."""
        wanted = name or os.environ.get("RAINIER_PROFILE") or self.current
        if wanted is None:
            return None
        return self.profiles.get(wanted)

    def selected_name(self, name: str | None = None) -> str | None:
        return name or os.environ.get("RAINIER_PROFILE") or self.current


class ProfileConflict(ValueError):
    """A login would replace another key saved under the same name."""


def store_profile(profile: Profile, *, force: bool = False) -> Path:
    """Saves `profile` and makes it current; refuses to replace a different key unless forced."""
    creds = Credentials.load()
    old = creds.profiles.get(profile.name)
    if old is not None and old.key != profile.key and not force:
        raise ProfileConflict(
            f"profile {profile.name!r} already holds another key ({old.key[:10]}...); "
            f"log in with --profile NAME to keep both, or --force to replace it"
        )
    creds.profiles[profile.name] = profile
    creds.current = profile.name
    return creds.save()


def mask(key: str) -> str:
    return f"{key[:10]}..." if len(key) > 10 else key
