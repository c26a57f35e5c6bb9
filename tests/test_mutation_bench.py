"""The mutation benchmark's classification table (benchmarks/mutation_equivalents.toml) is well formed; no
mutant is run here (benchmarks/mutation.py runs them: minutes)."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _bench():
    spec = importlib.util.spec_from_file_location("bench_mutation", ROOT / "benchmarks" / "mutation.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def _mutants():
    bench = _bench()
    return bench.generate((ROOT / bench.MODEL_REL).read_text(encoding="utf-8"))


def _requirement_ids() -> set[str]:
    data = yaml.safe_load((ROOT / "spec" / "requirements.yaml").read_text(encoding="utf-8"))
    return {r["id"] for r in data["requirements"]}


def test_every_entry_has_a_class_and_a_reason():
    bench = _bench()
    table = bench.load_table()  # refuses an unknown class, a missing reason, an id given twice
    assert table, "the table classifies the survivors of the last full run"
    known = _requirement_ids()
    for mid, entry in table.items():
        assert set(entry) <= {"id", "class", "reason", "requirement", "request"}, mid
        assert len(entry["reason"].split()) >= 5, f"{mid}: a reason in words, not a tag"
        if entry["class"] == "blind-spot":
            reqs = entry.get("requirement")
            assert reqs, f"{mid}: a blind spot names the requirement that should catch it"
            for rid in [reqs] if isinstance(reqs, str) else reqs:
                assert rid in known, f"{mid}: {rid} is no requirement of spec/requirements.yaml"
            assert entry.get("request"), f"{mid}: a blind spot says which request would show it"


def test_every_entry_names_a_mutant_of_the_current_model():
    pytest.importorskip("mutmut")
    bench = _bench()
    ids = {m.id for m in _mutants()}
    stale = sorted(set(bench.load_table()) - ids)
    assert not stale, f"entries naming no mutant of model.py any more (re-run the benchmark): {stale}"


def test_the_sample_is_deterministic():
    pytest.importorskip("mutmut")
    bench = _bench()
    mutants = _mutants()
    a = [m.id for m in bench.sample(mutants, 10, 24)]
    assert a == [m.id for m in bench.sample(mutants, 10, 24)] and len(a) == 10
    assert len({m.id for m in mutants}) == len(mutants), "mutant ids are unique"
