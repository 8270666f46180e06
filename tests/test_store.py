"""The request store, with the same tests on SQLite and on a real PostgreSQL server.

PostgreSQL: ``$DELIVERY_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, trust auth, user ``postgres``, database ``test``). Each test
gets a fresh schema of its own (``store_test_<hex>``), selected through the
connection's ``search_path`` and dropped afterwards, so runs never collide.
An unreachable server skips these tests, or fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from servers import free_port, skip_or_fail

from api.store import FINAL_STATUSES, RequestStore
from delivery.errors import TransientError
from delivery.messages import FAILURE, SUCCESS, FileReport

PG_URL = os.environ.get("DELIVERY_TEST_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
THREADS = 8

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine | str]:
    """An autocommit engine on the PostgreSQL server, or the reason it is unreachable."""
    engine = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT",
                              connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as err:
        engine.dispose()
        reason = " ".join(str(getattr(err, "orig", err)).split())[:200]
        yield f"PostgreSQL not reachable at {PG_URL}: {reason}"
        return
    yield engine
    engine.dispose()


def _with_search_path(url: str, schema: str) -> str:
    return sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}) \
        .render_as_string(hide_password=False)


@pytest.fixture
def pg_url(pg_admin: sa.Engine | str) -> Iterator[str]:
    """A URL whose connections use a fresh schema of their own, dropped afterwards."""
    if isinstance(pg_admin, str):
        skip_or_fail(pg_admin)
    schema = f"store_test_{uuid.uuid4().hex[:16]}"
    with pg_admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield _with_search_path(PG_URL, schema)
    finally:
        with pg_admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[[], RequestStore]]:
    """Opens stores (each with its own engine and connections) on one database."""
    opened: list[RequestStore] = []

    def make() -> RequestStore:
        opened.append(RequestStore(db_url))
        return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], RequestStore]) -> RequestStore:
    return open_store()


def new_request(store: RequestStore, n: int, **kw: Any) -> str:
    """A request with ``n`` files, ids 0..n-1, lookup done."""
    fields: dict[str, Any] = dict(did="file-list", selection='[{"treename":"t"}]',
                                  codegen="uproot-raw", result_format="parquet", status="Running")
    fields.update(kw)
    rid = store.create_request(**fields)
    store.add_files(rid, [(i, [f"root://h//data/f{i}.root", f"https://m/f{i}.root"])
                          for i in range(n)])
    return rid


def ok(rid: str, fid: int, **kw: Any) -> FileReport:
    fields: dict[str, Any] = dict(object_name=f"f{fid}.parquet", total_bytes=1000 + fid,
                                  events_in=50, events_out=20, seconds=0.25)
    fields.update(kw)
    return FileReport(rid, fid, SUCCESS, **fields)


def bad(rid: str, fid: int, error: str = "InputError: not a ROOT file") -> FileReport:
    return FileReport(rid, fid, FAILURE, error=error)


def counts(store: RequestStore, rid: str) -> tuple[int, int, int, int]:
    c = store.counts(rid)
    return c.files, c.completed, c.failed, c.remaining


def run_together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i < n in n threads released at the same moment."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            out[i] = work(i)
        except BaseException as err:  # noqa: B036 - re-raised in the main thread
            errors.append(err)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return out


# --------------------------------------------------------------------------- requests


def test_create_add_files_and_counts(store: RequestStore) -> None:
    ds = store.get_or_create_dataset("file-list", "file-list")
    rid = new_request(store, 3, title="t", dataset_id=ds, owner="alice", cache_key="k")
    row = store.get(rid)
    assert row is not None
    assert (row.status, row.did, row.dataset_id, row.owner, row.n_files) == \
        ("Running", "file-list", ds, "alice", 3)
    assert row.finish_time is None and row.reused_from is None
    assert (row.files, row.completed, row.failed, row.remaining) == (3, 0, 0, 3)
    assert counts(store, rid) == (3, 0, 0, 3)
    assert store.file_paths(rid) == {i: f"root://h//data/f{i}.root" for i in range(3)}
    other = new_request(store, 1, owner="bob")
    assert [r.request_id for r in store.list_requests()] == [rid, other]
    assert [r.request_id for r in store.list_requests(owner="bob")] == [other]
    assert store.get("no-such-id") is None
    assert counts(store, "no-such-id") == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="status must be one of"):
        store.set_status(rid, "Done")


def test_completion_is_an_upsert(store: RequestStore) -> None:
    rid = new_request(store, 3)
    assert store.record(ok(rid, 1)) is True
    assert counts(store, rid) == (3, 1, 0, 2)
    [r] = store.results(rid)
    assert (r.request_id, r.file_id, r.status, r.object_name, r.total_bytes, r.path) == \
        (rid, 1, SUCCESS, "f1.parquet", 1001, "root://h//data/f1.root")
    assert (r.events_in, r.events_out, r.seconds, r.error) == (50, 20, 0.25, None)
    assert r.created_at.tzinfo is None


def test_same_completion_twice_changes_nothing(store: RequestStore) -> None:
    rid = new_request(store, 2)
    assert store.record(ok(rid, 0)) is True
    before = store.results(rid)
    assert store.record(ok(rid, 0)) is False
    assert store.results(rid) == before  # created_at included
    assert counts(store, rid) == (2, 1, 0, 1)


@pytest.mark.parametrize("connections", ["one store", "a store per thread"])
def test_same_completion_concurrently(open_store: Callable[[], RequestStore],
                                      connections: str) -> None:
    first = open_store()
    rid = new_request(first, 2)
    stores = [first] * THREADS if connections == "one store" else \
        [open_store() for _ in range(THREADS)]
    changed = run_together(THREADS, lambda i: stores[i].record(ok(rid, 0)))
    assert changed.count(True) == 1
    assert len(first.results(rid)) == 1
    assert counts(first, rid) == (2, 1, 0, 1)
    assert first.get(rid).status == "Running"  # type: ignore[union-attr]


def test_last_files_concurrently_complete_the_request(
        open_store: Callable[[], RequestStore]) -> None:
    # Each thread records a different last file: without serialising recorders, each
    # would miss the others' uncommitted rows and none would set Complete.
    first = open_store()
    rid = new_request(first, THREADS)
    stores = [open_store() for _ in range(THREADS)]
    run_together(THREADS, lambda i: stores[i].record(ok(rid, i)))
    row = first.get(rid)
    assert row is not None and row.status == "Complete" and row.finish_time is not None
    assert counts(first, rid) == (THREADS, THREADS, 0, 0)
    stamps = [r.created_at for r in first.results(rid)]
    assert len(set(stamps)) == THREADS  # strictly increasing, never equal


def test_success_wins_over_failure(store: RequestStore) -> None:
    rid = new_request(store, 3)
    assert store.record(ok(rid, 0)) is True
    [kept] = store.results(rid)
    assert store.record(bad(rid, 0)) is False  # redelivered failure after success
    assert store.results(rid) == [kept]
    assert store.record(bad(rid, 1)) is True
    [failed] = store.results(rid, status=FAILURE)
    assert failed.error == "InputError: not a ROOT file"
    assert store.record(bad(rid, 1, "other words")) is True  # latest error is kept
    assert store.results(rid, status=FAILURE)[0].created_at == failed.created_at
    assert counts(store, rid) == (3, 1, 1, 1)
    assert store.record(ok(rid, 1)) is True  # a retry that succeeded replaces the failure
    fixed = [r for r in store.results(rid) if r.file_id == 1][0]
    assert fixed.status == SUCCESS and fixed.error is None
    assert fixed.created_at > failed.created_at  # a status change is news for pollers
    assert counts(store, rid) == (3, 2, 0, 1)


def test_remaining_never_negative(store: RequestStore) -> None:
    rid = new_request(store, 2)
    for _ in range(3):
        store.record(ok(rid, 0))
        store.record(bad(rid, 0))
        store.record(bad(rid, 1))
        store.record(ok(rid, 1, total_bytes=7))
    assert counts(store, rid) == (2, 2, 0, 0)
    for row in store.list_requests():
        assert row.remaining >= 0
    # A report for a file never added is our bug: the database refuses it loudly.
    with pytest.raises(sa.exc.IntegrityError):
        store.record(ok(rid, 99))
    # A report for a deleted request is a harmless race: dropped.
    assert store.record(ok("gone-request", 0)) is False
    with pytest.raises(ValueError, match="report status"):
        store.record(FileReport(rid, 0, "done"))


def test_auto_complete_and_sticky_final_states(store: RequestStore) -> None:
    rid = new_request(store, 2)
    store.record(ok(rid, 0))
    assert store.get(rid).status == "Running"  # type: ignore[union-attr]
    store.record(bad(rid, 1))
    done = store.get(rid)
    assert done is not None and done.status == "Complete" and done.finish_time is not None
    assert store.set_status(rid, "Running") is False
    assert store.set_status(rid, "Canceled") is False
    assert store.get(rid).status == "Complete"  # type: ignore[union-attr]

    canceled = new_request(store, 2)
    assert store.set_status(canceled, "Canceled", failure_info="canceled by the user") is True
    assert store.set_status(canceled, "Canceled") is False
    store.record(ok(canceled, 0))
    assert store.record(ok(canceled, 1)) is True  # the output is still recorded...
    row = store.get(canceled)
    assert row is not None and row.status == "Canceled"  # ...but Canceled stays
    assert row.failure_info == "canceled by the user" and row.completed == 2

    # A final status set at creation can get its missing failure_info, once.
    bad_ds = store.create_request(did="rucio://s:n", selection="[]", codegen="uproot-raw",
                                  result_format="parquet", status="Bad Dataset", n_files=0)
    assert store.get(bad_ds).finish_time is not None  # type: ignore[union-attr]
    assert store.set_status(bad_ds, "Bad Dataset", failure_info="no finder for rucio://")
    assert not store.set_status(bad_ds, "Bad Dataset", failure_info="something else")
    assert store.get(bad_ds).failure_info == "no finder for rucio://"  # type: ignore[union-attr]
    assert set(FINAL_STATUSES) == {"Complete", "Fatal", "Canceled", "Bad Dataset"}


def test_files_added_in_batches_complete_only_when_final(store: RequestStore) -> None:
    rid = store.create_request(did="rucio://s:n", selection="[]", codegen="uproot-raw",
                               result_format="parquet", status="Running")
    store.add_files(rid, [(0, ["root://a//0.root"])], final=False)
    store.record(ok(rid, 0))
    assert store.get(rid).status == "Running"  # type: ignore[union-attr]
    store.add_files(rid, [(1, ["root://a//1.root"])])
    store.record(ok(rid, 1))
    assert store.get(rid).status == "Complete"  # type: ignore[union-attr]


def test_results_later_than_is_strict_and_status_filters(store: RequestStore) -> None:
    rid = new_request(store, 4)
    for fid in range(3):
        store.record(ok(rid, fid))
    store.record(bad(rid, 3))
    rows = store.results(rid)
    assert [r.file_id for r in rows] == [0, 1, 2, 3]
    stamps = [r.created_at for r in rows]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert [r.file_id for r in store.results(rid, later_than=stamps[1])] == [2, 3]
    assert store.results(rid, later_than=stamps[3]) == []
    just_before = stamps[2] - timedelta(microseconds=1)
    assert [r.file_id for r in store.results(rid, later_than=just_before)] == [2, 3]
    assert [r.file_id for r in store.results(rid, status=SUCCESS)] == [0, 1, 2]
    assert [r.file_id for r in store.results(rid, later_than=stamps[0], status=FAILURE)] == [3]


def test_delete_is_idempotent(store: RequestStore) -> None:
    rid = new_request(store, 2)
    keep = new_request(store, 1)
    store.record(ok(rid, 0))
    assert store.delete_request(rid) is True
    assert store.get(rid) is None and store.results(rid) == [] and store.file_paths(rid) == {}
    assert store.delete_request(rid) is False
    assert store.get(keep) is not None


def test_find_reusable(store: RequestStore) -> None:
    assert store.find_reusable("k1") is None
    good = new_request(store, 2, cache_key="k1")
    assert store.find_reusable("k1") is None  # not Complete yet
    store.record(ok(good, 0))
    store.record(ok(good, 1))
    partial = new_request(store, 2, cache_key="k2")
    store.record(ok(partial, 0))
    store.record(bad(partial, 1))
    assert store.get(partial).status == "Complete"  # type: ignore[union-attr]
    assert store.find_reusable("k2") is None  # a failed file: not reusable
    found = store.find_reusable("k1")
    assert found is not None and found.request_id == good
    reuse = store.create_request(did="file-list", selection="[]", codegen="uproot-raw",
                                 result_format="parquet", status="Running", n_files=2,
                                 cache_key="k1", reused_from=good)
    assert store.find_reusable("k1").request_id == good  # type: ignore[union-attr]
    # A reuse owns its rows (the API copies outputs and results into it): it starts
    # empty, fills like any request, and outlives the original's deletion.
    assert counts(store, reuse) == (2, 0, 0, 2)
    store.add_files(reuse, [(0, ["a.root"]), (1, ["b.root"])])
    store.record(ok(reuse, 0))
    store.record(ok(reuse, 1))
    store.delete_request(good)
    assert counts(store, reuse) == (2, 2, 0, 0)
    assert store.get(reuse).status == "Complete"  # type: ignore[union-attr]
    assert [(r.request_id, r.file_id) for r in store.results(reuse)] == [(reuse, 0), (reuse, 1)]
    assert store.find_reusable("k1") is None  # only originals are offered


def test_datasets_crud(store: RequestStore) -> None:
    a = store.get_or_create_dataset("rucio://mc:x", "rucio")
    assert store.get_or_create_dataset("rucio://mc:x", "rucio") == a
    b = store.get_or_create_dataset("/data/*.root", "local")
    assert a != b
    row = store.get_dataset(a)
    assert row is not None and (row.name, row.did_finder, row.lookup_status) == \
        ("rucio://mc:x", "rucio", "looking")
    assert row.last_used is not None and row.last_updated is None
    assert store.update_dataset(a, lookup_status="no finder configured for rucio://", n_files=0)
    row = store.get_dataset(a)
    assert row is not None and row.lookup_status == "no finder configured for rucio://"
    assert row.n_files == 0 and row.last_updated is not None
    assert store.update_dataset(999, size=1) is False
    with pytest.raises(TypeError, match="unknown field"):
        store.update_dataset(a, colour="red")
    assert [d.id for d in store.list_datasets()] == [a, b]
    assert store.delete_dataset(b) is True and store.get_dataset(b) is None
    assert store.delete_dataset(b) is False
    new_request(store, 1, dataset_id=a)
    assert store.delete_dataset(a) is True  # referenced: only marked stale
    assert store.get_dataset(a).lookup_status == "stale"  # type: ignore[union-attr]


def test_concurrent_get_or_create_dataset(open_store: Callable[[], RequestStore]) -> None:
    stores = [open_store() for _ in range(THREADS)]
    ids = run_together(THREADS, lambda i: stores[i].get_or_create_dataset("rucio://a:b", "rucio"))
    assert len(set(ids)) == 1 and len(stores[0].list_datasets()) == 1


# --------------------------------------------------------------------------- outages


@pytest.fixture(params=["sqlite", "postgresql"])
def dead_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("")
        return f"sqlite:///{blocker / 'store.db'}"
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"


def test_dead_database_is_transient(dead_url: str) -> None:
    with pytest.raises(TransientError) as caught:
        RequestStore(dead_url)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("request store unavailable")
    assert len(message) < 500


class _Proxy:
    """A TCP relay to a server, so a test can cut the database connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        # shutdown() first: a bare close() leaves the socket listening while the
        # accept thread is still blocked in accept() on it.
        for s in [self.listener, *self.sockets]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_lost_postgresql_connection_is_transient(pg_url: str) -> None:
    url = sa.make_url(pg_url)
    proxy = _Proxy(url.host or "127.0.0.1", url.port or 5432)
    store = RequestStore(url.set(host="127.0.0.1", port=proxy.port))
    try:
        rid = new_request(store, 1)
        proxy.cut()
        with pytest.raises(TransientError) as caught:
            store.record(ok(rid, 0))
        assert "\n" not in str(caught.value)
    finally:
        proxy.cut()
        store.close()


def test_in_memory_sqlite_is_shared_across_threads() -> None:
    store = RequestStore("sqlite://")
    rid = new_request(store, THREADS)
    run_together(THREADS, lambda i: store.record(ok(rid, i)))
    assert counts(store, rid) == (THREADS, THREADS, 0, 0)
    assert store.get(rid).status == "Complete"  # type: ignore[union-attr]


def test_record_verdict_tells_the_status_before_under_the_same_lock(store: RequestStore) -> None:
    rid = new_request(store, 2)
    assert store.record_verdict(bad(rid, 0)) == (True, None)
    assert store.record_verdict(bad(rid, 0)) == (False, "failure")
    assert store.record_verdict(ok(rid, 0)) == (True, "failure")
    assert store.record_verdict(ok(rid, 0)) == (False, "success")
    # Racing first reports of one file: exactly one sees no earlier verdict.
    answers = run_together(8, lambda i: store.record_verdict(ok(rid, 1, seconds=0.1 * i)))
    assert sum(before is None for _, before in answers) == 1, answers


def test_summaries(store: RequestStore) -> None:
    a, b = new_request(store, 2, owner="alice"), new_request(store, 2, owner="bob")
    store.record(ok(a, 0))
    store.record(ok(a, 1, events_out=5))
    store.record(bad(b, 0))
    assert store.status_counts() == {"Complete": 1, "Running": 1}
    assert store.success_totals(owner="alice") == {a: (25, 100, 2001, 0.5)}
    assert store.success_totals(owner="bob") == {}
    assert store.success_totals(request_id=a)[a].events_out == 25
