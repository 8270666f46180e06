"""Operator commands for users and refresh tokens: ``delivery users ...``, ``delivery tokens ...``.

They work on the request store named by ``DELIVERY_DATABASE_URL`` directly (the
operator's credential is access to the database), so they also work before the
API is up. A new token's plaintext is printed once and never stored.
"""

from __future__ import annotations

import argparse
import json
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


def _need_name(args: argparse.Namespace, what: str) -> None:
    # Errors are ValueErrors: `delivery`'s main prints them as one line and exits 1.
    if args.action in args.needs_name and not args.name:
        raise ValueError(f"{args.prog_name} {args.action} needs a {what}")


def cmd_users(args: argparse.Namespace) -> int:
    _need_name(args, "user name")
    store = _store(args)
    if args.action == "add":
        user = store.create_user(args.name, admin=args.admin)
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
    _need_name(args, "token id" if args.action == "revoke" else "user name")
    store = _store(args)
    if args.action == "issue":
        token = store.issue_token(args.name, label=args.label)
        # The only time anyone sees it: put it in servicex.yaml (token:) or DELIVERY_TOKEN.
        print(token)
        return 0
    if args.action == "revoke":
        if not store.revoke_token(args.name):
            raise ValueError(f"no live token {args.name!r}")
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
    u.set_defaults(func=cmd_users, needs_name=("add",), prog_name="users")

    t = sub.add_parser("tokens", parents=[common],
                       help="issue, list or revoke refresh tokens (operators)")
    t.add_argument("action", choices=["issue", "list", "revoke"])
    t.add_argument("name", nargs="?", help="the user (issue, list) or token id (revoke)")
    t.add_argument("--label", help="a note to tell tokens apart, e.g. the laptop's name")
    t.set_defaults(func=cmd_tokens, needs_name=("issue", "revoke"), prog_name="tokens")
