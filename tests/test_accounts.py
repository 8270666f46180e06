"""`delivery users` and `delivery tokens`: the operator's side of authentication."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.store import RequestStore
from delivery.cli import main


def run(capsys: pytest.CaptureFixture[str], db: str, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--database-url", db])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_users_and_tokens_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'd.db'}"
    assert run(capsys, db, "users", "add", "alice")[:2] == (0, "added user alice")
    assert run(capsys, db, "users", "add", "root", "--admin")[:2] == (0, "added admin root")
    code, listed, _ = run(capsys, db, "users", "list", "--json")
    assert code == 0 and json.loads(listed) == [{"name": "alice", "admin": False},
                                                 {"name": "root", "admin": True}]
    code, token, _ = run(capsys, db, "tokens", "issue", "alice", "--label", "laptop")
    assert code == 0 and token.startswith("dlv_")
    store = RequestStore(db)
    assert store.user_for_refresh(token) is not None
    (info,) = json.loads(run(capsys, db, "tokens", "list", "alice", "--json")[1])
    assert info["label"] == "laptop" and info["revoked"] is None and info["last_used"]
    assert token not in run(capsys, db, "tokens", "list")[1]  # only the public id is shown
    assert run(capsys, db, "tokens", "revoke", info["id"])[0] == 0
    assert store.user_for_refresh(token) is None


@pytest.mark.parametrize("argv, words", [
    (["users", "add"], "users add needs a user name"),
    (["users", "add", "x y"], "must be letters"),
    (["tokens", "issue"], "tokens issue needs a user name"),
    (["tokens", "issue", "nobody"], "no user 'nobody'"),
    (["tokens", "revoke", "0123456789ab"], "no live token"),
])
def test_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               argv: list[str], words: str) -> None:
    code, _, err = run(capsys, f"sqlite:///{tmp_path / 'd.db'}", *argv)
    assert code == 1 and words in err and len(err.splitlines()) == 1, err


def test_a_user_added_twice_is_refused(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'd.db'}"
    run(capsys, db, "users", "add", "bob")
    code, _, err = run(capsys, db, "users", "add", "bob", "--admin")
    assert code == 1 and "exists already" in err
    assert RequestStore(db).get_user("bob").admin is False  # type: ignore[union-attr]
