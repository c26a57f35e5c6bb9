"""The matrix, the diff and the report/diff commands, from results.json files only."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from conformance.errors import UsageError
from conformance.reports.commands import cmd_diff, cmd_report
from conformance.reports.diff import diff, render_diff
from conformance.reports.matrix import matrix_markdown, render_matrix, write_matrix
from conformance.reports.sample import sample_results


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return sample_results()


def _variant(base: dict[str, Any], model: str, url: str, **verdicts: str) -> dict[str, Any]:
    res = copy.deepcopy(base)
    res["target"].update(model=model, base_url=url)
    for rid, v in verdicts.items():
        res["requirements"][rid.replace("_", "-")]["verdict"] = v
        res["requirements"][rid.replace("_", "-")]["reason"] = f"now {v}"
    return res


def _save(res: dict[str, Any], path: Path) -> str:
    path.write_text(json.dumps(res), encoding="utf-8")
    return str(path)


def test_diff_sorts_changes(base: dict[str, Any]) -> None:
    new = _variant(base, "tiny-chat", "http://127.0.0.1:8080/v1", CORE_SCHEMA_VALID="fail",
                   CORE_OBJECT="pass", SEED_DETERMINISM="fail", TOOLS_CALL_SHAPE="fail",
                   CORE_ID_UNIQUE="not-run")
    d = diff(base, new)
    assert [c["id"] for c in d["regressions"]] == ["CORE-SCHEMA-VALID", "SEED-DETERMINISM",
                                                   "TOOLS-CALL-SHAPE"]
    assert [(c["old"], c["new"]) for c in d["regressions"]] == [("pass", "fail"), ("waived", "fail"),
                                                                ("unsupported", "fail")]
    assert [c["id"] for c in d["fixes"]] == ["CORE-OBJECT"]
    assert [(c["id"], c["old"], c["new"]) for c in d["changes"]] == [("CORE-ID-UNIQUE", "pass", "not-run")]
    text = render_diff(d)
    lines = text.splitlines()
    assert lines[0] == "REGRESSED  CORE-SCHEMA-VALID (MUST, core): pass -> fail: now fail"
    assert any(ln.startswith("FIXED      CORE-OBJECT (MUST, core): fail -> pass") for ln in lines)
    assert lines[-1] == "3 regression(s), 1 fix(es), 1 other change(s)"
    assert diff(base, copy.deepcopy(base))["regressions"] == []
    assert render_diff(diff(base, base)) == "0 regression(s), 0 fix(es), 0 other change(s)\n"


def test_diff_notes_added_removed_and_context(base: dict[str, Any]) -> None:
    new = _variant(base, "other", "https://b.example/v1")
    new["spec_hash"] = "f" * 64
    del new["requirements"]["CORE-OBJECT"]
    d = diff(base, new)
    assert [(c["id"], c["old"], c["new"]) for c in d["changes"]] == [("CORE-OBJECT", "fail", None)]
    assert any("the contract (spec hash) differs" in n for n in d["notes"])
    assert any("the target differs: tiny-chat @ http://127.0.0.1:8080/v1 -> other @ https://b.example/v1" in n
               for n in d["notes"])
    assert "CORE-OBJECT (MUST, core): fail -> absent" in render_diff(d)


def test_cmd_diff_exit_codes(base: dict[str, Any], tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    old = _save(base, tmp_path / "old.json")
    worse = _save(_variant(base, "m", "http://x/v1", CORE_SCHEMA_VALID="fail"), tmp_path / "worse.json")
    better = _save(_variant(base, "m", "http://x/v1", CORE_OBJECT="pass"), tmp_path / "better.json")
    assert cmd_diff(old, worse) == 1
    assert "REGRESSED  CORE-SCHEMA-VALID" in capsys.readouterr().out
    assert cmd_diff(old, better) == 0
    assert "FIXED      CORE-OBJECT" in capsys.readouterr().out
    with pytest.raises(UsageError, match="not found"):
        cmd_diff(old, str(tmp_path / "missing.json"))


def test_cmd_report_rerenders_one_run(base: dict[str, Any], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = _save(base, tmp_path / "results.json")
    out = tmp_path / "out"
    assert cmd_report([src], str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "summary.md"]
    assert (out / "summary.md").read_text(encoding="utf-8").startswith("# chat-conformance: NOT CONFORMANT")
    assert "<testsuites>" in (out / "junit.xml").read_text(encoding="utf-8")
    assert base["verdict"] in (out / "report.html").read_text(encoding="utf-8")
    assert "wrote " in capsys.readouterr().out
    # a report directory is accepted in place of its results.json
    assert cmd_report([str(tmp_path)], str(tmp_path / "out2")) == 0


def test_cmd_report_matrix(base: dict[str, Any], tmp_path: Path) -> None:
    a = _save(base, tmp_path / "a.json")
    hostile = _variant(base, "big<b>model</b>", "https://b.example/v1", CORE_OBJECT="pass")
    b = _save(hostile, tmp_path / "b.json")
    out = tmp_path / "m"
    assert cmd_report([a, b], str(out)) == 0
    page = (out / "matrix.html").read_text(encoding="utf-8")
    assert "tiny-chat" in page and "https://b.example/v1" in page and "seed · " in page
    assert "<b>model" not in page and "big&lt;b&gt;model&lt;/b&gt;" in page
    rows = re.findall(r'<tr class="req" data-capability="[^"]+" data-differs="(\d)">', page)
    assert len(rows) == len(base["requirements"]) and rows.count("1") == 1
    md = (out / "matrix.md").read_text(encoding="utf-8")
    assert md == matrix_markdown([json.loads(Path(a).read_text()), json.loads(Path(b).read_text())])


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    ("{", "is not readable JSON"),
    ('{"schema_version": "1.0"}', "is not a chat-conformance results.json"),
    ("[]", "is not a chat-conformance results.json"),
])
def test_cmd_report_usage_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError) as exc:
        cmd_report([str(path)], str(tmp_path / "out"))
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="no results file"):
        cmd_report([], str(tmp_path / "out"))


def test_matrix_markdown(base: dict[str, Any]) -> None:
    other = _variant(base, "m|2", "https://b.example/v1", CORE_OBJECT="pass", ERROR_MALFORMED_JSON="pass")
    md = matrix_markdown([base, other])
    lines = md.splitlines()
    assert lines[0] == ("| capability | tiny-chat @ http://127.0.0.1:8080/v1 (seed, " + base["suite_version"]
                        + ") | m\\|2 @ https://b.example/v1 (seed, " + base["suite_version"] + ") |")
    assert lines[1] == "|---|---|---|"
    # "other" fixes the one core failure of the sample
    core = next(ln for ln in lines if ln.startswith("| core |"))
    total = sum(1 for r in base["requirements"].values() if r["capability"] == "core")
    assert core == f"| core | {total - 1}/{total} ❌ | {total}/{total} ✅ |"
    assert "| tools | unsupported | unsupported |" in lines
    logprobs = sum(1 for r in base["requirements"].values() if r["capability"] == "logprobs")
    assert f"| logprobs | 0/{logprobs} | 0/{logprobs} |" in lines
    assert lines[-1].startswith("| **verdict** | **NOT CONFORMANT")
    # every capability row has one cell per target
    assert all(ln.count("|") - ln.count("\\|") == 4 for ln in lines)


def test_matrix_is_deterministic_and_self_contained(base: dict[str, Any], tmp_path: Path) -> None:
    path = write_matrix([base, base], tmp_path)
    page = path.read_text(encoding="utf-8")
    assert page == render_matrix([copy.deepcopy(base), copy.deepcopy(base)])
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page
