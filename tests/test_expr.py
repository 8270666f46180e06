"""The expression language: what it accepts, and the attacks it refuses before any read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delivery.errors import SelectionError
from delivery.selection import parse_expression, parse_selection
from delivery.selection.expr import Binary, Call, Compare, Name, Num, Unary, names_in


def test_accepts_the_physics_it_should() -> None:
    assert parse_expression("count(Muon_pt > 20) >= 2") == Compare(
        ">=", Call("count", (Compare(">", Name("Muon_pt"), Num(20)),)), Num(2))
    chained = parse_expression("0 < abs(Jet_eta) < 2.4")
    assert isinstance(chained, Binary) and chained.op == "&"
    assert parse_expression("not (MET_pt > 3)") == Unary("~", Compare(">", Name("MET_pt"), Num(3)))
    assert parse_expression("x ** -2") == Binary("**", Name("x"), Num(-2))
    assert parse_expression("AnalysisElectronsAuxDyn.pt > 1") == Compare(
        ">", Name("AnalysisElectronsAuxDyn.pt"), Num(1))
    assert parse_expression("atan2(a, b)") == Call("arctan2", (Name("a"), Name("b")))
    expr = parse_expression("where(a > 1, sqrt(b), hypot(c, d)) + mean(e) - num(f) * 1e3")
    assert names_in(expr) == {"a", "b", "c", "d", "e", "f"}


@pytest.mark.parametrize("text, construct", [
    ("().__class__.__base__.__subclasses__()", "attribute access"),
    ("sum.__call__(x)", "double underscore"),
    ("Muon_pt.max()", "only calls of the listed functions"),
    ("().__class__", "attribute access"),
    ("(1).real", "attribute access"),
    ("x.__class__", "double underscore"),
    ("__import__('os').system('touch CANARY')", "attribute access"),
    ("__import__('os')", "double underscore"),
    ("__builtins__", "double underscore"),
    ("open('/etc/passwd')", "'open' is not allowed"),
    ("getattr(x, 'y')", "'getattr' is not allowed"),
    ("eval('1')", "'eval' is not allowed"),
    ("lambda: 1", "lambda"),
    ("[a for a in b]", "comprehension"),
    ("{a: 1 for a in b}", "comprehension"),
    ("(a for a in b)", "comprehension"),
    ("'abc'", "string literal"),
    ("b'abc'", "string literal"),
    ("f'{x}'", "string"),
    ("9**9**9", "exponent of ** must be a number literal"),
    ("x ** 100", "exponent 100 exceeds"),
    ("x[0]", "indexing"),
    ("a if b else c", "conditional expression"),
    ("(y := 1)", "assignment"),
    ("1j", "complex literal"),
    ("1e400 > x", "too large"),
    ("x @ y", "operator MatMult"),
    ("x << 2", "operator LShift"),
    ("a in b", "comparison In"),
    ("a is b", "comparison Is"),
    ("sqrt(x, y)", "takes 1 argument"),
    ("sqrt(x=1)", "keyword"),
    ("x; y", "syntax error"),
    ("import os", "syntax error"),
    ("", "empty"),
])
def test_refuses_with_construct_and_position(text: str, construct: str) -> None:
    with pytest.raises(SelectionError) as info:
        parse_expression(text, field="cut")
    message = str(info.value)
    assert construct in message
    assert message.startswith("cut: ")
    assert "\n" not in message


def test_position_points_at_the_offence() -> None:
    with pytest.raises(SelectionError, match=r"column 11: lambda"):
        parse_expression("MET_pt > (lambda: 1)()")


@pytest.mark.parametrize("text", [
    "x" * (1024 * 1024),                     # a 1 MB expression
    "(" * 10_000 + "x" + ")" * 10_000,       # 10,000 nested parentheses
    "(" * 1000 + "x" + ")" * 1000,           # under the length limit, over Python's nesting
    "-" * 3000 + "x",                         # deep unary chain
    " + ".join(["x"] * 1500),                 # too many nodes
])
def test_bounds_length_depth_and_size(text: str) -> None:
    with pytest.raises(SelectionError):
        parse_expression(text)


def test_selection_attack_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A canary file that any of these payloads would create if evaluated stays absent."""
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    payloads = [
        f"__import__('os').system('touch {canary}')",
        f"().__class__.__base__.__subclasses__()[0].__init__.__globals__['os'].system('touch {canary}')",
        f"[__import__('os').system('touch {canary}') for _ in [1]]",
        f"(lambda: __import__('pathlib').Path('{canary}').touch())()",
    ]
    for payload in payloads:
        for key in ("cut", "expressions", "aliases"):
            value: object = {"a": payload} if key == "aliases" else (
                [payload] if key == "expressions" else payload)
            query = {"treename": "events", key: value}
            with pytest.raises(SelectionError) as info:
                parse_selection(json.dumps([query]))
            assert f"selection[0].{key}" in str(info.value)
    assert not canary.exists()


def test_precedence_trap_is_refused_before_reading() -> None:
    """`n >= 2 & x < 5` is n >= (2 & x) < 5 in Python; it would silently keep every event."""
    from delivery.selection.types import ColumnType, infer

    columns = {"nMuon": ColumnType(0, "int"), "MET_pt": ColumnType(0, "float"),
               "flags": ColumnType(0, "int"), "ok": ColumnType(0, "bool")}
    for text in ("nMuon >= 2 & (MET_pt < 200)", "nMuon >= 2 & MET_pt < 200",
                 "(nMuon >= 2) | flags"):
        with pytest.raises(SelectionError, match="put comparisons in parentheses"):
            infer(parse_expression(text), columns, "cut")
    assert infer(parse_expression("(nMuon >= 2) & (MET_pt < 200)"), columns, "cut").kind == "bool"
    assert infer(parse_expression("nMuon >= 2 and MET_pt < 200"), columns, "cut").kind == "bool"
    assert infer(parse_expression("flags & 4"), columns, "x").kind == "int"
    assert infer(parse_expression("ok | ~ok"), columns, "x").kind == "bool"
