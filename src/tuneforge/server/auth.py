"""API keys: generated once, stored as SHA-256 (keys are 190 random bits, so a fast hash is
enough and lookups are one indexed query), scoped, revocable, one project each."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneforge.errors import InputError
from tuneforge.jobs.ids import new_id
from tuneforge.jobs.tables import ApiKey

SCOPES = ("train", "infer", "admin")
KEY_PREFIX = "tf-"
_PROJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its project and scopes."""

    key_id: str
    project: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_scopes(raw: str | list[str]) -> list[str]:
    """Validated scopes from ``train,infer`` or a list.

    Raises:
        InputError: An unknown or empty scope list.
    """
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = sorted({s.strip() for s in items if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InputError(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCOPES)}, comma-separated"
        )
    return scopes


def create_key(
    session: Session, project: str, scopes: list[str], name: str = ""
) -> tuple[ApiKey, str]:
    """Create a key; returns the row and the key itself (shown once, never stored).

    Raises:
        InputError: Bad project name or scopes.
    """
    if not _PROJECT.match(project):
        raise InputError(f"invalid project name {project!r}: use 1-64 letters, digits, '-' or '_'")
    scopes = parse_scopes(scopes)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id=new_id("key-", 16),
        project=project,
        name=name,
        key_hash=hash_key(secret),
        prefix=secret[:8],
        scopes=",".join(scopes),
        created_at=int(time.time()),
    )
    session.add(row)
    return row, secret


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a valid, unrevoked key, or None."""
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked_at is not None:
        return None
    return Principal(row.id, row.project, frozenset(row.scopes.split(",")))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key by id; False if there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    row.revoked_at = row.revoked_at or int(time.time())
    return True
