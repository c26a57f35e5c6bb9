"""spec/results.schema.json describes results.json exactly as results.build_results produces it."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UsageError
from conformance.evidence import Exchange, SSEEvent
from conformance.reports.sample import sample_results
from conformance.reports.schema import load_results, results_errors, results_schema
from conformance.results import RESULTS_SCHEMA_VERSION, VERDICTS, build_results
from conformance.violations import Violation


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return sample_results(include_error=True)


def test_schema_is_a_valid_2020_12_schema() -> None:
    from jsonschema import Draft202012Validator

    schema = results_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == RESULTS_SCHEMA_VERSION


def test_built_results_validate(results: dict[str, Any]) -> None:
    assert results_errors(results) == []
    # and so does its JSON round trip (what results.json holds)
    assert results_errors(json.loads(json.dumps(results))) == []


def test_minimal_run_validates() -> None:
    res = build_results([], target={"base_url": "https://x.example/v1", "model": "m", "profile": "openai"},
                        profile="openai", level="must", started=0.0, finished=0.5,
                        cost={"requests": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0,
                              "budget": {"requests": 0, "tokens": 0, "retries": 0, "max_requests": 10,
                                         "max_tokens_total": None, "rate_limit": 2.5}},
                        capabilities={}, interrupted=True, notes=["budget exhausted: 10 requests"])
    assert results_errors(res) == []


def test_budget_stopped_run_validates() -> None:
    stopped = {"nodeid": "conformance/checks/test_core.py::test_basic", "requirements": ["CORE-OBJECT"],
               "outcome": "skipped", "skip_reason": "not run: budget exhausted: 10 requests", "error": "",
               "duration": 0.0, "judged": [], "violations": [], "exchanges": []}
    target = {"base_url": "http://127.0.0.1:1/v1", "model": "m", "profile": "seed"}
    res = build_results([stopped], target=target, profile="seed", level="may", started=0.0, finished=1.0,
                        cost={"requests": 10, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0},
                        capabilities={})
    assert res["verdict"].startswith("INCOMPLETE")
    assert results_errors(res) == []


def _set(d: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(d)
    node = d
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return d


@pytest.mark.parametrize("path, value, where", [
    (("schema_version",), "2.0", "$.schema_version"),
    (("verdict",), "PASSED", "$.verdict"),
    (("exit_code",), 7, "$.exit_code"),
    (("spec_hash",), "abc", "$.spec_hash"),
    (("level",), "must", "$.level"),
    (("started",), "yesterday", "$.started"),
    (("cost",), KeyError, "$"),
    (("cost", "requests"), -1, "$.cost.requests"),
    (("target", "base_url"), "ftp://x", "$.target.base_url"),
    (("capabilities", "tools", "supported"), "no", "$.capabilities.tools.supported"),
    (("counts", "maybe"), 1, "$.counts"),
    (("requirements", "CORE-OBJECT", "verdict"), "passed", "$.requirements.CORE-OBJECT.verdict"),
    (("requirements", "CORE-OBJECT", "source"), {}, "$.requirements.CORE-OBJECT.source"),
    (("checks", 0, "outcome"), "ok", "$.checks[0].outcome"),
    (("checks", 1, "violations", 0, "exchange"), "0", "$.checks[1].violations[0].exchange"),
    (("checks", 1, "exchanges", 0, "status"), "200", "$.checks[1].exchanges[0].status"),
    (("checks", 1, "exchanges", 0, "request_headers", "Authorization"), None,
     "$.checks[1].exchanges[0].request_headers.Authorization"),
    (("checks", 2, "exchanges", 0, "events", 0, "t"), -1, "$.checks[2].exchanges[0].events[0].t"),
    (("checks", 2, "exchanges", 0, "surprise"), 1, "$.checks[2].exchanges[0]"),
    (("extra",), 1, "$"),
])
def test_broken_results_do_not_validate(results: dict[str, Any], path: tuple[Any, ...], value: Any,
                                        where: str) -> None:
    errors = results_errors(_set(results, path, value))
    assert errors, f"setting {path} to {value!r} still validates"
    assert any(e.startswith(where + ":") for e in errors), errors


def test_schema_names_every_field_of_the_evidence_types() -> None:
    defs = results_schema()["$defs"]
    assert set(defs["exchange"]["properties"]) == {f.name for f in dataclasses.fields(Exchange)}
    # xid, credentials and sent_at came later: results.json files written before them (a diff's OLD run) stay
    # valid
    # the last two: said only where they apply
    later = {"xid", "credentials", "sent_at", "refusal_expected", "asked_again"}
    assert set(defs["exchange"]["required"]) == {f.name for f in dataclasses.fields(Exchange)} - later
    assert set(defs["event"]["properties"]) == {f.name for f in dataclasses.fields(SSEEvent)}
    assert set(defs["violation"]["properties"]) == {f.name for f in dataclasses.fields(Violation)}
    assert defs["verdict"]["enum"] == list(VERDICTS)


def test_schema_is_in_the_spec_hash_folder() -> None:
    from conformance.specfiles import spec_dir

    assert (spec_dir() / "results.schema.json").is_file()


def test_load_results_names_the_fix(tmp_path: Path, results: dict[str, Any]) -> None:
    good = tmp_path / "results.json"
    good.write_text(json.dumps(results), encoding="utf-8")
    assert load_results(good)["verdict"] == results["verdict"]
    assert load_results(tmp_path)["verdict"] == results["verdict"]  # a report directory works too
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json", encoding="utf-8")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(_set(results, ("cost",), KeyError)), encoding="utf-8")
    future = tmp_path / "future.json"
    future.write_text(json.dumps(_set(results, ("schema_version",), "9.0")), encoding="utf-8")
    for path, message in ((tmp_path / "nope.json", "not found"), (bad_json, "is not readable JSON"),
                          (wrong, "'cost' is a required property"), (future, "has schema_version '9.0'"),
                          (tmp_path / "empty-dir", "not found")):
        with pytest.raises(UsageError) as exc:
            load_results(path)
        text = str(exc.value)
        assert message in text and "\n" not in text and ": " in text
