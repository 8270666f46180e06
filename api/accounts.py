"""Operator commands for users and refresh tokens: ``delivery users ...``, ``delivery tokens ...``.

They work on the request store named by ``DELIVERY_DATABASE_URL`` directly (the
operator's credential is access to the database), so they also work before the
API is up. A new token's plaintext is printed once and never stored.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _store(args: argparse.Namespace) -> Any:
    from api.store import RequestStore
    from delivery.config import Settings

    if args.database_url:
        return RequestStore(args.database_url)
    settings = Settings.from_env()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    return RequestStore(settings.database_url)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _missing_name(args: argparse.Namespace) -> bool:
    return args.action in args.needs_name and not args.name


def cmd_users(args: argparse.Namespace) -> int:
    if _missing_name(args):
        return _fail(f"users {args.action} needs a user name")
    store = _store(args)
    if args.action == "add":
        try:
            user = store.create_user(args.name, admin=args.admin)
        except ValueError as err:
            return _fail(str(err))
        print(f"added {'admin' if user.admin else 'user'} {user.name}")
        return 0
    users = store.list_users()
    if args.json:
        print(json.dumps([{"name": u.name, "admin": u.admin} for u in users]))
    else:
        for u in users:
            print(f"{u.name}\t{'admin' if u.admin else 'user'}")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    if _missing_name(args):
        return _fail(f"tokens {args.action} needs a {'token id' if args.action == 'revoke' else 'user name'}")
    store = _store(args)
    if args.action == "issue":
        try:
            token = store.issue_token(args.name, label=args.label)
        except ValueError as err:
            return _fail(str(err))
        # The only time anyone sees it: put it in servicex.yaml (token:) or DELIVERY_TOKEN.
        print(token)
        return 0
    if args.action == "revoke":
        if not store.revoke_token(args.name):
            return _fail(f"no live token {args.name!r}")
        print(f"revoked {args.name}")
        return 0
    found = store.list_tokens(args.name)
    rows = [{"id": t.id, "user": t.user, "label": t.label,
             "created": t.created_at.isoformat(timespec="seconds"),
             "revoked": t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else None,
             "last_used": t.last_used.isoformat(timespec="seconds") if t.last_used else None}
            for t in found]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            state = f"revoked {r['revoked']}" if r["revoked"] else "live"
            print(f"{r['id']}\t{r['user']}\t{r['label'] or '-'}\t{state}\t"
                  f"last used {r['last_used'] or 'never'}")
    return 0


def register(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", help="default: DELIVERY_DATABASE_URL or the "
                                               "embedded SQLite database")
    common.add_argument("--json", action="store_true", help="print JSON")

    u = sub.add_parser("users", parents=[common], help="add or list users (operators)")
    u.add_argument("action", choices=["add", "list"])
    u.add_argument("name", nargs="?")
    u.add_argument("--admin", action="store_true", help="the user sees every request")
    u.set_defaults(func=cmd_users, needs_name=("add",))

    t = sub.add_parser("tokens", parents=[common],
                       help="issue, list or revoke refresh tokens (operators)")
    t.add_argument("action", choices=["issue", "list", "revoke"])
    t.add_argument("name", nargs="?", help="the user (issue, list) or token id (revoke)")
    t.add_argument("--label", help="a note to tell tokens apart, e.g. the laptop's name")
    t.set_defaults(func=cmd_tokens, needs_name=("issue", "revoke"))
