"""The table layer: RNTuple field lists primed in one pass equal uproot's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import uproot

from transformers.table import Table, _prime_rntuple_fields


@pytest.mark.parametrize("name", [
    "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root",
    "cmsopendata2015_ttbar_19980_NANOAOD_RNTupleImporter_rntuple_v1-0-0-1.root",
])
def test_primed_fields_equal_uproots(shared_data: Path, name: str) -> None:
    plain = uproot.open(shared_data / name)["Events"]
    primed = uproot.open(shared_data / name)["Events"]
    _prime_rntuple_fields(primed)
    assert primed.keys() == plain.keys()
    assert primed.typenames() == plain.typenames()
    for field in plain.ntuple.all_fields[:200]:
        twin = primed.ntuple.all_fields[field._fid]
        assert [f.path for f in twin.fields] == [f.path for f in field.fields]


def test_rntuple_sub_field_reads_alone(shared_data: Path) -> None:
    directory = uproot.open(shared_data / "uproot-physlite-rntuple_v1-0-0-0.root")
    table = Table(directory["EventData"], "EventData", "physlite")
    chunk = table.read(["xTrigDecisionAux:.smk"], 0, 5)
    assert chunk.fields == ["xTrigDecisionAux:.smk"] and len(chunk) == 5
