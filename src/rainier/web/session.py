"""Console sessions: the API key a user signed in with, sealed into an expiring cookie.

The browser never holds the key in a form it can read or replay elsewhere: the cookie is
HttpOnly, SameSite=Strict, and its value is AES-GCM ciphertext under a secret of this
installation (`RAINIER_CONSOLE_SECRET`, or a file under `RAINIER_HOME` that every worker on the
machine shares). Nothing is stored server-side, so any worker can serve any request; a revoked
key ends its sessions at once because every page calls the API with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

COOKIE = "rainier_session"
SESSION_S = 8 * 3600
NONCE_BYTES = 12


@dataclass(frozen=True)
class Session:
    """Who is signed in, as the API described the key at sign-in."""

    key: str
    role: str
    tenant: str | None
    expires_at: float
    sid: str

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    @property
    def is_admin(self) -> bool:
        return self.role in ("operator", "admin")


def load_secret(home: Path) -> bytes:
    """The installation's 32-byte sealing secret, made once (0600) and reused by every worker."""
    configured = os.environ.get("RAINIER_CONSOLE_SECRET")
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "console-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    for _ in range(50):  # another worker may be between creating and writing it
        text = path.read_text().strip()
        if len(text) == 64:
            return bytes.fromhex(text)
        time.sleep(0.02)
    raise RuntimeError(f"{path} does not hold a 64-digit hex secret")


class Sealer:
    """Seals sessions into cookie values and opens them again; derives CSRF tokens."""

    def __init__(self, secret: bytes):
        self._aead = AESGCM(hashlib.sha256(b"console-session" + secret).digest())
        self._csrf_key = hashlib.sha256(b"console-csrf" + secret).digest()

    def seal(self, key: str, role: str, tenant: str | None, now: float | None = None) -> str:
        now = time.time() if now is None else now
        body = {"k": key, "r": role, "t": tenant, "e": now + SESSION_S, "s": secrets.token_hex(8)}
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, json.dumps(body).encode(), COOKIE.encode())
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def open(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in `value`, or None when it is missing, forged, tampered or expired."""
        if not value or len(value) > 4096:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            plain = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], COOKIE.encode())
            body = json.loads(plain)
            session = Session(body["k"], body["r"], body["t"], float(body["e"]), body["s"])
        except (ValueError, InvalidTag, KeyError, TypeError):
            return None
        if session.expires_at <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        """A token bound to this one session: a page's forms carry it, a change must echo it."""
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(session), token or "")
