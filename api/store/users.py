"""Users and their refresh tokens.

A refresh token reads ``dlv_<id>_<secret>``. Only the sha256 of the whole token
is stored, so a copy of the database grants nobody access; ``id`` is the public
half an operator lists and revokes by. Tokens do not expire by themselves (as
ServiceX's do not): they live until revoked, and every use is stamped so stale
ones can be found.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from api.store.engine import StoreBase, utcnow
from api.store.schema import tokens, users

__all__ = ["UserStore", "User", "TokenInfo", "USER_NAME"]

# Names end up in URLs, logs and bucket-free object paths: keep them boring.
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
_TOKEN = re.compile(r"^dlv_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})$")


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used: datetime | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class UserStore(StoreBase):
    def create_user(self, name: str, admin: bool = False) -> User:
        """Add a user; an existing name is an error, never a silent overwrite."""
        if not USER_NAME.match(name):
            raise ValueError(f"user name {name[:40]!r} must be letters, digits and ._@- "
                             "(at most 128, not starting with punctuation)")
        try:
            with self._write() as conn:
                conn.execute(users.insert().values(name=name, admin=admin,
                                                   created_at=utcnow()))
        except IntegrityError:
            raise ValueError(f"user {name!r} exists already") from None
        return User(name, admin)

    def get_user(self, name: str) -> User | None:
        with self._read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return User(row.name, bool(row.admin)) if row else None

    def list_users(self) -> list[User]:
        with self._read() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [User(r.name, bool(r.admin)) for r in rows]

    def issue_token(self, name: str, label: str | None = None) -> str:
        """A new refresh token for ``name``; its plaintext exists only in the return value."""
        if self.get_user(name) is None:
            raise ValueError(f"no user {name!r}")
        token_id = secrets.token_hex(6)
        token = f"dlv_{token_id}_{secrets.token_urlsafe(32)}"
        with self._write() as conn:
            conn.execute(tokens.insert().values(id=token_id, user_name=name,
                                                digest=_digest(token), label=label,
                                                created_at=utcnow()))
        return token

    def list_tokens(self, name: str | None = None) -> list[TokenInfo]:
        query = select(tokens).order_by(tokens.c.created_at)
        if name is not None:
            query = query.where(tokens.c.user_name == name)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [TokenInfo(r.id, r.user_name, r.label, r.created_at, r.revoked_at, r.last_used)
                for r in rows]

    def revoke_token(self, token_id: str) -> bool:
        """Revoke by the token's public id (or the whole token); False if unknown."""
        found = _TOKEN.match(token_id)
        token_id = found.group(1) if found else token_id
        with self._write() as conn:
            done = conn.execute(update(tokens).where(tokens.c.id == token_id,
                                                     tokens.c.revoked_at.is_(None))
                                .values(revoked_at=utcnow()))
        return bool(done.rowcount)

    def user_for_refresh(self, token: str) -> User | None:
        """The owner of a live refresh token, or None (unknown, malformed or revoked)."""
        found = _TOKEN.match(token)
        if not found:
            return None
        with self._write() as conn:
            row = conn.execute(
                select(tokens.c.digest, tokens.c.revoked_at, users.c.name, users.c.admin)
                .join(users, users.c.name == tokens.c.user_name)
                .where(tokens.c.id == found.group(1))).first()
            if row is None or row.revoked_at is not None:
                return None
            if not hmac.compare_digest(row.digest, _digest(token)):
                return None
            conn.execute(update(tokens).where(tokens.c.id == found.group(1))
                         .values(last_used=utcnow()))
        return User(row.name, bool(row.admin))
