"""Every ``warpdiff bench`` target runs at its smallest size and prints its documented JSON."""

from __future__ import annotations

import importlib
import json

import pytest

from warpcore.bench.schema import MapOf, check
from warpcore.cli import main
from warpcore.commands.bench import TARGETS


@pytest.mark.parametrize("target", ["memory", "noise", "propagate", "sampler", "server"])
def test_bench_json_matches_its_schema(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", target, "--json", "--smoke"]) == 0
    result = json.loads(capsys.readouterr().out)
    schema = importlib.import_module(TARGETS[target]).SCHEMA
    check(result, schema)  # the command checked it too; this holds if it stops checking
    assert target == "server" or result["machine"]["cores"] >= 1


def test_every_target_documents_its_schema() -> None:
    """soak runs in tests/test_server_hardening.py (its smallest run takes a few seconds)."""
    for target, module in TARGETS.items():
        assert hasattr(importlib.import_module(module), "SCHEMA"), target


def test_schema_check_names_the_wrong_key() -> None:
    schema = {"a": float, "b": MapOf({"ms": float}), "c": (float, None)}
    check({"a": 1.5, "b": {"x": {"ms": 2}}, "c": None}, schema)
    for bad, where in (
        ({"a": "1", "b": {"x": {"ms": 2.0}}, "c": None}, "$.a"),
        ({"a": 1.0, "b": {"x": {"ms": True}}, "c": None}, "$.b.x.ms"),
        ({"a": 1.0, "b": {"x": {}}, "c": None}, "$.b.x"),
        ({"a": 1.0, "b": {}, "c": None}, "$.b"),
        ({"a": 1.0, "b": {"x": {"ms": 1.0}}, "c": 1.0, "d": 0}, "unexpected ['d']"),
    ):
        with pytest.raises(ValueError, match=where.replace("$", r"\$").replace("[", r"\[")):
            check(bad, schema)
