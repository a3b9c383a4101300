"""API keys: which organisation a request belongs to.

Keys come from ``MEMCHAT_API_KEYS`` (static, for ops and tests) and from a key file under the data dir
(``memchat keys create``), where only their SHA-256 digests are stored. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from app.errors import AuthenticationFailed

KEY_PREFIX = "mc_"
MAX_KEY_LENGTH = 512


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: the organisation a valid key belongs to."""

    org_id: str
    key_id: str


class StoredKey(msgspec.Struct):
    key_id: str
    org_id: str
    digest: str
    created_at: str
    revoked: bool = False


class KeyFile(msgspec.Struct):
    keys: list[StoredKey] = msgspec.field(default_factory=list)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    """Resolves API keys to principals. Reloads the key file when it changes on disk."""

    def __init__(self, key_file: Path, static_keys: Mapping[str, str]) -> None:
        self._key_file = key_file
        self._static = [(_digest(key), org, f"env:{idx}") for idx, (key, org) in enumerate(static_keys.items())]
        self._stored: list[StoredKey] = []
        self._stored_digests: list[tuple[bytes, StoredKey]] = []
        self._seen: tuple[int, int, int, int] | None = None  # the key file version last read (see `_reload`)
        self._reload()

    # -- key file ------------------------------------------------------------------------------------
    def _reload(self) -> None:
        try:
            stat = self._key_file.stat()
        except FileNotFoundError:
            self._stored, self._stored_digests, self._seen = [], [], None
            return
        # Every write replaces the file (a new inode); the timestamps alone may not change within one
        # filesystem tick, so the version is inode + size + mtime + ctime.
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if self._seen == version:
            return
        data = msgspec.json.decode(self._key_file.read_bytes(), type=KeyFile)
        self._stored = data.keys
        self._stored_digests = [(bytes.fromhex(k.digest), k) for k in data.keys if not k.revoked]
        self._seen = version

    def _write(self) -> None:
        self._key_file.parent.mkdir(parents=True, exist_ok=True)
        payload = msgspec.json.format(msgspec.json.encode(KeyFile(keys=self._stored)))
        fd, tmp = tempfile.mkstemp(dir=self._key_file.parent, prefix=".keys.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self._key_file)
        self._seen = None
        self._reload()

    def create(self, org_id: str) -> tuple[str, StoredKey]:
        """Create a key for ``org_id``; returns the plaintext key (shown once) and its record."""
        if not org_id or len(org_id) > 200 or any(ord(c) < 32 for c in org_id):
            raise ValueError("organisation name must be 1-200 printable characters")
        self._reload()
        key = generate_key()
        record = StoredKey(
            key_id=secrets.token_hex(6),
            org_id=org_id,
            digest=_digest(key).hex(),
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self._stored.append(record)
        self._write()
        return key, record

    def revoke(self, key_id: str) -> bool:
        self._reload()
        for record in self._stored:
            if record.key_id == key_id and not record.revoked:
                record.revoked = True
                self._write()
                return True
        return False

    def list(self) -> list[StoredKey]:
        self._reload()
        return list(self._stored)

    @property
    def empty(self) -> bool:
        self._reload()
        return not self._static and not self._stored_digests

    # -- lookup --------------------------------------------------------------------------------------
    def _match(self, digest: bytes) -> Principal | None:
        found: Principal | None = None
        for candidate, org, key_id in self._static:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = Principal(org_id=org, key_id=key_id)
        for candidate, record in self._stored_digests:
            if hmac.compare_digest(candidate, digest) and found is None:
                found = Principal(org_id=record.org_id, key_id=record.key_id)
        return found

    def resolve(self, key: str | None) -> Principal:
        if not key:
            raise AuthenticationFailed(
                "Missing API key. Send it as 'Authorization: Bearer <key>', 'X-API-Key: <key>' or cookie vai_token."
            )
        if len(key) > MAX_KEY_LENGTH:
            raise AuthenticationFailed("Invalid API key.")
        self._reload()  # one stat(): picks up `memchat keys create/revoke` while we run
        principal = self._match(_digest(key))
        if principal is None:
            raise AuthenticationFailed("Invalid API key.")
        return principal


def key_from_headers(headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
    """Extract the presented key: Bearer or raw Authorization, X-API-Key, or the vai_token cookie."""
    auth = headers.get("authorization")
    if auth:
        auth = auth.strip()
        scheme, _, rest = auth.partition(" ")
        if scheme.lower() == "bearer":
            return rest.strip() or None
        return auth
    api_key = headers.get("x-api-key")
    if api_key:
        return api_key.strip() or None
    token = cookies.get("vai_token")
    return token.strip() if token else None
