"""Datasets: local globs, XRootD globs, http(s) files and finder plugins, with real servers.

Nothing is mocked: XRootD globs are listed by a real ``xrootd`` daemon, http(s) URLs
are opened with uproot through a real range server, and plugins are found through
the real ``importlib.metadata`` entry-point machinery (a fake installed distribution
on ``sys.path``).
"""

from __future__ import annotations

import glob
import importlib
import shutil
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uproot
from servers import free_port, make_world_readable, served_url

from api import datasets
from api.datasets import LookupFailed, Resolved, check_file_list, resolve_did
from delivery.errors import PolicyError
from delivery.policy import SourcePolicy

SMALL = "uproot-Zmumu.root"  # tree "events", 2304 entries, 175 kB


# ---------------------------------------------------------------------------
# local globs
# ---------------------------------------------------------------------------


@pytest.fixture
def area(tmp_path: Path) -> dict[str, Path]:
    """``root`` (the only allowed root) with three .root files and a .txt; ``outside`` next
    to it with a file the policy must never hand out."""
    root = (tmp_path / "data").resolve()
    (root / "sub.root").mkdir(parents=True)  # a directory matching *.root: never a file
    for name in ("c.root", "a.root", "b.root"):
        (root / name).write_bytes(b"root")
    (root / "notes.txt").write_text("not data")
    outside = (tmp_path / "outside").resolve()
    outside.mkdir()
    (outside / "secret.root").write_bytes(b"secret")
    return {"root": root, "outside": outside}


@pytest.fixture
def local_policy(area: dict[str, Path]) -> SourcePolicy:
    return SourcePolicy.create([area["root"]])


def test_local_glob_is_sorted_and_deterministic(area: dict[str, Path],
                                                local_policy: SourcePolicy) -> None:
    root = area["root"]
    want = [[str(root / "a.root")], [str(root / "b.root")], [str(root / "c.root")]]
    first = resolve_did(f"{root}/*.root", local_policy)
    assert first == Resolved(f"{root}/*.root", "local", want)
    assert resolve_did(f"{root}/*.root", local_policy).files == want  # same again
    assert resolve_did(f"file://{root}/*.root", local_policy).files == want
    assert resolve_did(f"{root}/[ab].root", local_policy).files == want[:2]
    assert resolve_did(f"{root}/b.root", local_policy).files == [[str(root / "b.root")]]


def test_local_files_limit_keeps_the_first_n(area: dict[str, Path],
                                             local_policy: SourcePolicy) -> None:
    root = area["root"]
    two = resolve_did(f"{root}/*.root?files=2", local_policy)
    assert two.name == f"{root}/*.root?files=2"
    assert two.files == [[str(root / "a.root")], [str(root / "b.root")]]
    assert resolve_did(f"file://{root}/*.root?files=1", local_policy).files == \
        [[str(root / "a.root")]]
    assert len(resolve_did(f"{root}/*.root?files=99", local_policy).files) == 3
    with pytest.raises(PolicyError, match="files=N"):
        resolve_did(f"{root}/*.root?files=0", local_policy)


def test_local_glob_outside_the_roots_is_refused_before_listing(
        area: dict[str, Path], local_policy: SourcePolicy,
        monkeypatch: pytest.MonkeyPatch) -> None:
    listed: list[str] = []
    real_glob = glob.glob

    def spy(pattern: str, *args: object, **kwargs: object) -> list[str]:
        listed.append(pattern)
        return real_glob(pattern, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(datasets.glob, "glob", spy)
    outside = area["outside"]
    for did in (f"{outside}/*.root", f"file://{outside}/*.root", "/etc/*",
                f"{outside}/no-such-dir/*.root"):  # refused, not "no files match"
        with pytest.raises(PolicyError, match="outside the allowed roots"):
            resolve_did(did, local_policy)
    assert listed == []
    resolve_did(f"{area['root']}/*.root", local_policy)
    assert listed == [f"{area['root']}/*.root"]  # the spy does see an allowed glob


@pytest.mark.parametrize("make", [
    lambda root: f"{root}/../outside/*.root",
    lambda root: f"{root}/../outside/secret.root",
    lambda root: f"{root}/sub.root/../../outside/*.root",
    lambda root: f"file://{root}/../outside/*.root",
    lambda root: f"{root}/../*/secret.root",
])
def test_dot_dot_escapes_are_refused(make: Callable[[Path], str], area: dict[str, Path],
                                     local_policy: SourcePolicy) -> None:
    with pytest.raises(PolicyError, match="outside the allowed roots"):
        resolve_did(make(area["root"]), local_policy)


def test_local_no_match_is_a_lookup_failure(area: dict[str, Path],
                                            local_policy: SourcePolicy) -> None:
    root = area["root"]
    for did in (f"{root}/*.parquet", f"{root}/missing.root", f"{root}/sub.root",
                f"{root}/sub.root/*"):
        with pytest.raises(LookupFailed, match="no files match"):
            resolve_did(did, local_policy)


def test_symlinks_out_of_the_root_are_refused(area: dict[str, Path],
                                              local_policy: SourcePolicy) -> None:
    root, outside = area["root"], area["outside"]
    inner = root / "inner"
    inner.mkdir()
    (inner / "z.root").symlink_to(outside / "secret.root")
    with pytest.raises(PolicyError, match="z.root.*outside the allowed roots"):
        resolve_did(f"{inner}/*.root", local_policy)
    with pytest.raises(PolicyError, match="outside the allowed roots"):
        resolve_did(f"{inner}/z.root", local_policy)
    # a symlinked directory that leads out of the root is refused before listing
    (root / "escape").symlink_to(outside, target_is_directory=True)
    with pytest.raises(PolicyError, match="outside the allowed roots"):
        resolve_did(f"{root}/escape/*.root", local_policy)
    # no result anywhere names the outside file
    assert all(str(outside) not in f[0]
               for f in resolve_did(f"{root}/*.root", local_policy).files)


def test_symlinks_inside_the_root_resolve_to_their_target(area: dict[str, Path],
                                                          local_policy: SourcePolicy) -> None:
    root = area["root"]
    links = root / "links"
    links.mkdir()
    (links / "x.root").symlink_to(root / "c.root")
    (links / "dangling.root").symlink_to(root / "gone.root")  # not a file: skipped
    assert resolve_did(f"{links}/*.root", local_policy).files == [[str(root / "c.root")]]


def test_bad_dids_are_client_errors(local_policy: SourcePolicy) -> None:
    for did in ("", "   ", None, 42, "x" * 5000):
        with pytest.raises(PolicyError, match="did must be a non-empty string"):
            resolve_did(did, local_policy)  # type: ignore[arg-type]


def test_local_files_need_the_file_scheme(area: dict[str, Path]) -> None:
    policy = SourcePolicy.create([area["root"]], schemes=["root", "https"])
    with pytest.raises(PolicyError, match="local files are not allowed"):
        resolve_did(f"{area['root']}/*.root", policy)


# ---------------------------------------------------------------------------
# root:// globs through a real XRootD server
# ---------------------------------------------------------------------------


@pytest.fixture
def xrootd_dataset(xrootd_url_dir: tuple[str, Path],
                   shared_data: Path) -> Iterator[tuple[str, Path]]:
    """``(base_url, dir)``: three copies of a small ROOT file, a .txt and a directory
    named like a ROOT file, in a fresh directory on the XRootD server."""
    base_url, served = xrootd_url_dir
    directory = served / f"ds-{uuid.uuid4().hex[:8]}"
    (directory / "sub.root").mkdir(parents=True)
    for name in ("run3.root", "run1.root", "run2.root"):
        shutil.copyfile(shared_data / SMALL, directory / name)
    (directory / "readme.txt").write_text("not data")
    make_world_readable(directory)
    try:
        yield base_url, directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
def test_xrootd_glob_lists_exactly_the_root_files(xrootd_dataset: tuple[str, Path],
                                                  policy: SourcePolicy) -> None:
    base_url, directory = xrootd_dataset
    did = served_url(base_url, directory, "*.root")
    assert did.startswith("root://127.0.0.1:") and "//" + str(directory).lstrip("/") in did
    resolved = resolve_did(did, policy)
    want = [[served_url(base_url, directory, f"run{i}.root")] for i in (1, 2, 3)]
    assert resolved == Resolved(did, "root", want)
    for (url,) in resolved.files:  # the double-slash form: an absolute path on the server
        assert url.split("/", 3)[3].startswith("/" + str(directory).lstrip("/"))
    with uproot.open(resolved.files[0][0]) as f:
        assert f["events"].num_entries == 2304
    assert resolve_did(did + "?files=1", policy).files == want[:1]
    assert resolve_did(served_url(base_url, directory, "run[23].root"), policy).files == want[1:]


@pytest.mark.integration
def test_xrootd_glob_sees_files_added_later(xrootd_dataset: tuple[str, Path],
                                           policy: SourcePolicy) -> None:
    base_url, directory = xrootd_dataset
    did = served_url(base_url, directory, "*.root")
    assert len(resolve_did(did, policy).files) == 3
    shutil.copyfile(directory / "run1.root", directory / "run0.root")
    make_world_readable(directory)
    files = resolve_did(did, policy).files  # no stale directory listing
    assert files[0] == [served_url(base_url, directory, "run0.root")]
    assert len(files) == 4


@pytest.mark.integration
def test_xrootd_non_glob_url_is_returned_as_is(xrootd_dataset: tuple[str, Path],
                                               policy: SourcePolicy) -> None:
    base_url, directory = xrootd_dataset
    url = served_url(base_url, directory, "run2.root")
    assert resolve_did(url, policy) == Resolved(url, "root", [[url]])
    with uproot.open(url) as f:
        assert f["events"].num_entries == 2304


@pytest.mark.integration
def test_xrootd_missing_directory_and_no_match(xrootd_dataset: tuple[str, Path],
                                               policy: SourcePolicy) -> None:
    base_url, directory = xrootd_dataset
    with pytest.raises(LookupFailed, match="cannot list") as err:
        resolve_did(served_url(base_url, directory, "nowhere/*.root"), policy)
    assert "\n" not in err.value.reason
    with pytest.raises(LookupFailed, match="no files match"):
        resolve_did(served_url(base_url, directory, "*.parquet"), policy)


@pytest.mark.integration
def test_xrootd_hosts_policy_applies(xrootd_dataset: tuple[str, Path]) -> None:
    base_url, directory = xrootd_dataset
    policy = SourcePolicy.create([], hosts=["data.example.org"])
    with pytest.raises(PolicyError, match="not in the allowed hosts"):
        resolve_did(served_url(base_url, directory, "*.root"), policy)


@pytest.mark.timeout(60)
def test_unreachable_xrootd_host_fails_fast_with_one_line(policy: SourcePolicy) -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(LookupFailed) as err:
        resolve_did(f"root://127.0.0.1:{port}//data/*.root", policy)
    elapsed = time.monotonic() - started
    assert elapsed < 35, f"took {elapsed:.1f} s"
    reason = err.value.reason
    assert "\n" not in reason and len(reason) < 300
    assert f"127.0.0.1:{port}" in reason and "refused" in reason.lower()


# ---------------------------------------------------------------------------
# http(s):// single files
# ---------------------------------------------------------------------------


@pytest.mark.integration
def test_http_did_is_one_file(http_url_dir: tuple[str, Path], shared_data: Path,
                              policy: SourcePolicy) -> None:
    base_url, served = http_url_dir
    sub = served / f"ds-{uuid.uuid4().hex[:8]}"
    sub.mkdir()
    shutil.copyfile(shared_data / SMALL, sub / "one.root")
    url = served_url(base_url, served, sub / "one.root")
    assert url.startswith("http://127.0.0.1:")
    assert resolve_did(url, policy) == Resolved(url, "http", [[url]])
    assert resolve_did(url + "?files=1", policy).files == [[url]]
    with uproot.open(url) as f:  # the resolved URL is one uproot can read
        assert f["events"].num_entries == 2304
    https = "https" + url[len("http"):]
    assert resolve_did(https, policy) == Resolved(https, "https", [[https]])


@pytest.mark.integration
def test_http_glob_is_a_lookup_failure(http_url_dir: tuple[str, Path],
                                       policy: SourcePolicy) -> None:
    base_url, served = http_url_dir
    for url in (base_url + "dir/*.root", "https" + base_url[len("http"):] + "dir/*.root",
                "https://data.example.org/run[12].root"):
        with pytest.raises(LookupFailed, match="name one file"):
            resolve_did(url, policy)


def test_http_policy_applies(policy: SourcePolicy) -> None:
    with pytest.raises(PolicyError, match="link-local"):
        resolve_did("http://169.254.169.254/latest/meta-data", policy)
    strict = SourcePolicy.create([], schemes=["root"])
    with pytest.raises(PolicyError, match="scheme 'https' is not allowed"):
        resolve_did("https://data.example.org/f.root", strict)


# ---------------------------------------------------------------------------
# plugins through real entry points
# ---------------------------------------------------------------------------

FINDER_MODULE = '''
"""A finder plugin as a third-party package would ship it."""
CALLS = []
ROOT = {root!r}
OUTSIDE = {outside!r}


def find(did, policy):
    CALLS.append((did, policy))
    return [[ROOT + "/f%d.root" % i] for i in (3, 1, 4, 0, 2)]  # unsorted on purpose


def find_replicas(did, policy):
    # first file: one refused replica and one good one; second file: a bare string
    return [[OUTSIDE + "/secret.root", ROOT + "/f1.root"], ROOT + "/f0.root"]


def find_outside(did, policy):
    return [[ROOT + "/f0.root"], [OUTSIDE + "/secret.root", "memory://x.root"]]


def find_broken(did, policy):
    raise RuntimeError("catalogue down\\nsecond line")


def find_not_a_list(did, policy):
    return "/data/f.root"
'''

ENTRY_POINTS = """\
[columnar_delivery.finders]
rucio = myfinder_mod:find
replicas = myfinder_mod:find_replicas
outside = myfinder_mod:find_outside
broken = myfinder_mod:find_broken
notalist = myfinder_mod:find_not_a_list
missing = myfinder_missing_mod:find
"""


@pytest.fixture
def finder_plugin(tmp_path: Path, area: dict[str, Path],
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Install the fake distribution ``myfinder`` on sys.path; yield its module."""
    site = tmp_path / "site"
    dist_info = site / "myfinder-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: myfinder\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / "myfinder_mod.py").write_text(textwrap.dedent(FINDER_MODULE).format(
        root=str(area["root"]), outside=str(area["outside"])))
    for i in range(5):
        (area["root"] / f"f{i}.root").write_bytes(b"root")
    sys.modules.pop("myfinder_mod", None)
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    try:
        yield importlib.import_module("myfinder_mod")
    finally:
        sys.modules.pop("myfinder_mod", None)


def test_plugin_found_through_entry_points(finder_plugin: object,
                                           local_policy: SourcePolicy,
                                           area: dict[str, Path]) -> None:
    root = area["root"]
    resolved = resolve_did("rucio://scope:name?files=2", local_policy)
    assert resolved == Resolved("rucio://scope:name?files=2", "rucio",
                                [[str(root / "f0.root")], [str(root / "f1.root")]])
    calls = finder_plugin.CALLS  # type: ignore[attr-defined]
    assert len(calls) == 1
    assert calls[0][0] == "scope:name" and calls[0][1] is local_policy
    # sorted, so every "?files=N" subset is the same
    assert resolve_did("rucio://scope:name", local_policy).files == \
        [[str(root / f"f{i}.root")] for i in range(5)]
    assert calls[1][0] == "scope:name"


def test_plugin_files_are_checked_against_the_policy(finder_plugin: object,
                                                     local_policy: SourcePolicy,
                                                     area: dict[str, Path]) -> None:
    root = area["root"]
    # a refused replica is dropped, a bare string is one replica
    assert resolve_did("replicas://x", local_policy).files == \
        [[str(root / "f0.root")], [str(root / "f1.root")]]
    with pytest.raises(LookupFailed, match=r"file #1 has no replica this service may read"):
        resolve_did("outside://x", local_policy)


@pytest.mark.parametrize(("did", "match"), [
    ("broken://x", r"the broken:// finder failed: RuntimeError: catalogue down second line"),
    ("notalist://x", r"the notalist:// finder returned str, not a list of files"),
    ("missing://x", r"the missing:// finder 'myfinder_missing_mod:find' cannot be loaded: "
                    r"ModuleNotFoundError"),
])
def test_plugin_failures_are_lookup_failures(finder_plugin: object, local_policy: SourcePolicy,
                                             did: str, match: str) -> None:
    with pytest.raises(LookupFailed, match=match) as err:
        resolve_did(did, local_policy)
    assert "\n" not in err.value.reason


def test_no_plugin_for_the_scheme(finder_plugin: object, local_policy: SourcePolicy) -> None:
    with pytest.raises(LookupFailed) as err:
        resolve_did("cernopendata://1234", local_policy)
    assert err.value.reason == "no finder configured for cernopendata:// DIDs"


def test_without_plugins_rucio_is_unresolvable(local_policy: SourcePolicy) -> None:
    assert "myfinder_mod" not in sys.modules
    for did, scheme in (("cernopendata://1234", "cernopendata"), ("rucio://scope:name", "rucio"),
                        ("s3://bucket/*.root", "s3")):
        with pytest.raises(LookupFailed) as err:
            resolve_did(did, local_policy)
        assert err.value.reason == f"no finder configured for {scheme}:// DIDs"


# ---------------------------------------------------------------------------
# check_file_list
# ---------------------------------------------------------------------------


def test_check_file_list_accepts_allowed_inputs(area: dict[str, Path],
                                                local_policy: SourcePolicy) -> None:
    urls = [str(area["root"] / "a.root"), f"file://{area['root']}/b.root",
            "root://eos.example.org//store/f.root", "https://data.example.org/f.root"]
    assert check_file_list(urls, local_policy) == [[u] for u in urls]


@pytest.mark.parametrize("urls", ["/data/f.root", {"a": 1}, None, ("/data/f.root",), 3, []])
def test_check_file_list_wants_a_non_empty_list(urls: object,
                                                local_policy: SourcePolicy) -> None:
    with pytest.raises(PolicyError, match="file-list must be a non-empty list"):
        check_file_list(urls, local_policy)


def test_check_file_list_refuses_any_bad_entry(area: dict[str, Path],
                                               local_policy: SourcePolicy) -> None:
    good = str(area["root"] / "a.root")
    secret = str(area["outside"] / "secret.root")
    cases = [
        ([good, 3], r"file-list\[1\] must be a string"),
        ([None], r"file-list\[0\] must be a string"),
        ([good, ["nested"]], r"file-list\[1\] must be a string"),
        ([good, secret], rf"{secret}.*outside the allowed roots"),
        ([f"{area['root']}/../outside/secret.root"], r"\.\./outside.*outside the allowed roots"),
        ([good, "memory://x.root"], r"memory://x\.root.*scheme 'memory' is not allowed"),
        (["root://h//a.root::/etc/passwd"], r"chained URLs"),
        ([""], r"is not a usable path"),
    ]
    for urls, match in cases:
        with pytest.raises(PolicyError, match=match):
            check_file_list(urls, local_policy)

