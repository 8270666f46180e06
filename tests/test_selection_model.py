"""The uproot-raw selection model: the shapes ServiceX clients send, and strict refusals."""

from __future__ import annotations

import json

import pytest

from delivery.errors import SelectionError
from delivery.selection import CopyQuery, TreeQuery, parse_selection

SERVICEX_EXAMPLE = ('[{"treename": "reco", "expressions": null, "cut": "el_pt > 0", '
                    '"filter_name": ["el_pt"], "filter_typename": null, "aliases": null, '
                    '"fail_on_missing_trees": null, "use_standard_awkward_axis": null}]')


def test_the_servicex_client_example() -> None:
    sel = parse_selection(SERVICEX_EXAMPLE)
    (query,) = sel.queries
    assert isinstance(query, TreeQuery)
    assert query.trees == (("reco", "reco"),)
    assert query.filter_name == ("el_pt",)
    assert query.cut is not None and query.cut[0] == "el_pt > 0"
    assert query.fail_on_missing_trees is False


def test_treename_forms_and_copy_queries() -> None:
    sel = parse_selection([
        {"treename": ["a", "b"]},
        {"treename": {"events": "renamed"}, "filter_name": "Muon_*",
         "aliases": {"pt2": "Muon_pt * 2"}, "expressions": ["pt2"]},
        {"copy_histograms": "/h_.*/i"},
    ])
    first, second, third = sel.queries
    assert isinstance(first, TreeQuery) and first.trees == (("a", "a"), ("b", "b"))
    assert isinstance(second, TreeQuery) and second.trees == (("events", "renamed"),)
    assert second.filter_name == ("Muon_*",) and "pt2" in second.aliases
    assert third == CopyQuery("/h_.*/i")
    assert len(sel.tree_queries) == 2 and len(sel.copy_queries) == 1


def test_canonical_json_is_stable_and_round_trips() -> None:
    a = parse_selection(SERVICEX_EXAMPLE)
    b = parse_selection(json.loads(SERVICEX_EXAMPLE))
    assert a.to_json() == b.to_json()
    assert parse_selection(a.to_json()).to_json() == a.to_json()


@pytest.mark.parametrize("selection, message", [
    ("not json", "selection: is not valid JSON"),
    ("[]", "selection: must be a non-empty JSON list"),
    ('"events"', "selection: must be a non-empty JSON list"),
    ("[1]", "selection[0]: must be an object"),
    ('[{"treename": "t", "colour": 1}]', "selection[0]: unknown key 'colour'"),
    ('[{"filter_name": ["x"]}]', "selection[0].treename: is required"),
    ('[{"treename": 3}]', "selection[0].treename: must be a string or a list"),
    ('[{"treename": []}]', "selection[0].treename: must name at least one tree"),
    ('[{"treename": "t", "filter_name": [1]}]', "selection[0].filter_name[0]: must be a non-empty string"),
    ('[{"treename": "t", "cut": 5}]', "selection[0].cut: must be a string"),
    ('[{"treename": "t", "aliases": ["x"]}]', "selection[0].aliases: must be an object"),
    ('[{"treename": "t", "aliases": {"__x": "1"}}]', "alias names must be identifiers"),
    ('[{"treename": "t", "fail_on_missing_trees": "yes"}]', "fail_on_missing_trees: must be true"),
    ('[{"copy_histograms": "h", "treename": "t"}]', "takes only 'copy_histograms'"),
    ('[{"copy_histograms": "/([/"}]', "bad regular expression"),
    ('[{"copy_histograms": "h*"}]', "needs at least one tree query"),
    ("[" * 100_000 + "]" * 100_000, "selection: is not valid JSON"),
])
def test_refusals_name_the_field(selection: str, message: str) -> None:
    with pytest.raises(SelectionError) as info:
        parse_selection(selection)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_oversized_selection_is_refused_before_decoding() -> None:
    with pytest.raises(SelectionError, match="larger than"):
        parse_selection('[{"treename": "' + "t" * 300_000 + '"}]')
