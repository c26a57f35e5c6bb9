"""The requirements catalog (spec/requirements.yaml): well-formed, sourced, and tied to the seed table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from conformance.catalog import CAPABILITIES, LEVELS, catalog

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec"
SEED = ROOT.parent / "shared" / "seed" / "000_01ba0148efcf049d.txt"
PROFILES = ("seed", "openai")
ID_RE = re.compile(r"\b[A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+\b")
ROW_RE = re.compile(r'^\|\s*"(?P<quote>.+)"\s*\|\s*(?P<cell>.*?)\s*\|\s*$')


def _norm(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    with open(SPEC / "requirements.yaml", encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def entries(raw: dict[str, Any]) -> list[dict[str, Any]]:
    return list(raw["requirements"])


@pytest.fixture(scope="module")
def seed_text() -> str:
    # Not skipped: CI checks the shared folder out beside the repository, and the quotes must be verified.
    assert SEED.is_file(), f"seed document missing at {SEED}: check out shared/ beside the repository"
    return _norm(SEED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def table() -> list[tuple[str, list[str], str]]:
    """(quote, ids, cell) of each row of spec/README.md's seed table."""
    rows = []
    for line in (SPEC / "README.md").read_text(encoding="utf-8").splitlines():
        m = ROW_RE.match(line)
        if m:
            rows.append((_norm(m["quote"]), ID_RE.findall(m["cell"]), m["cell"]))
    assert rows, "spec/README.md has no seed table rows of the form | \"<quote>\" | IDS |"
    return rows


def test_catalog_validates_against_schema(raw: dict[str, Any]) -> None:
    schema = json.loads((SPEC / "requirements.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    errors = sorted(Draft202012Validator(schema).iter_errors(raw), key=lambda e: e.json_path)
    assert not errors, "\n".join(f"{e.json_path}: {e.message}" for e in errors[:20])


def test_schema_capabilities_match_code() -> None:
    schema = json.loads((SPEC / "requirements.schema.json").read_text(encoding="utf-8"))
    props = schema["$defs"]["requirement"]["properties"]
    assert tuple(props["capability"]["enum"]) == CAPABILITIES
    assert tuple(schema["$defs"]["level"]["enum"]) == LEVELS


def test_schema_rejects_bad_entries() -> None:
    schema = json.loads((SPEC / "requirements.schema.json").read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    good = {"id": "CORE-X", "level": "MUST", "capability": "core", "statement": "s", "source": {"seed": "q"}}
    assert validator.is_valid({"version": 1, "requirements": [good]})
    for bad in (
        {**good, "id": "core-x"},
        {**good, "id": "CORE"},
        {**good, "level": "must"},
        {**good, "capability": "nope"},
        {**good, "statement": "two\nlines"},
        {**good, "statement": "x" * 221},
        {**good, "source": {}},
        {**good, "source": {"seed": ""}},
        {**good, "profiles": ["azure"]},
        {**good, "profile_levels": {"openai": "MAYBE"}},
        {**good, "extra": 1},
    ):
        assert not validator.is_valid({"version": 1, "requirements": [bad]}), bad


def test_ids_unique(entries: list[dict[str, Any]]) -> None:
    ids = [e["id"] for e in entries]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"duplicate ids: {dupes}"


def test_levels_and_capabilities_valid(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        assert e["level"] in LEVELS, e["id"]
        assert e["capability"] in CAPABILITIES, e["id"]
        for profile, level in (e.get("profile_levels") or {}).items():
            assert profile in PROFILES, e["id"]
            assert level in LEVELS, e["id"]


def test_every_source_non_empty(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        source = e.get("source") or {}
        texts = [source.get(k) for k in ("seed", "openai", "decision")]
        assert any(isinstance(t, str) and t.strip() for t in texts), (
            f"{e['id']}: source needs a non-empty seed, openai or decision"
        )


def test_seed_quotes_are_exact(entries: list[dict[str, Any]], seed_text: str) -> None:
    bad = [e["id"] for e in entries if "seed" in e["source"] and _norm(e["source"]["seed"]) not in seed_text]
    assert not bad, f"source.seed is not an exact quote of the seed document: {bad}"


def test_at_least_70_requirements(entries: list[dict[str, Any]]) -> None:
    assert len(entries) >= 70


def test_profiles_known(entries: list[dict[str, Any]]) -> None:
    for e in entries:
        for profile in e.get("profiles") or ():
            assert profile in PROFILES, f"{e['id']}: unknown profile {profile!r}"
        assert len(set(e.get("profiles") or ())) == len(e.get("profiles") or ()), e["id"]


def test_catalog_module_loads_everything(entries: list[dict[str, Any]]) -> None:
    loaded = catalog()
    assert list(loaded) == [e["id"] for e in entries]


Table = list[tuple[str, list[str], str]]


def test_seed_quotes_in_readme_table(entries: list[dict[str, Any]], table: Table) -> None:
    rows: dict[str, set[str]] = {}
    for quote, ids, _ in table:
        rows.setdefault(quote, set()).update(ids)
    problems = []
    for e in entries:
        quote = e["source"].get("seed")
        if quote is None:
            continue
        q = _norm(quote)
        if q not in rows:
            problems.append(f"{e['id']}: no row for {q!r}")
        elif e["id"] not in rows[q]:
            problems.append(f"{e['id']}: row {q!r} does not list it")
    assert not problems, "spec/README.md seed table is out of date:\n" + "\n".join(problems)


def test_readme_table_ids_exist(table: list[tuple[str, list[str], str]]) -> None:
    known = set(catalog())
    unknown = sorted({i for _, ids, _ in table for i in ids} - known)
    assert not unknown, f"spec/README.md seed table names unknown ids: {unknown}"


def test_readme_rows_are_seed_quotes(table: list[tuple[str, list[str], str]], seed_text: str) -> None:
    for quote, ids, cell in table:
        assert quote in seed_text, f"README row is not an exact seed quote: {quote!r}"
        assert ids or "descriptive, no requirement" in cell, f"row {quote!r} names no id and no note"


def test_readme_table_covers_the_whole_seed(table: list[tuple[str, list[str], str]], seed_text: str) -> None:
    covered = [False] * len(seed_text)
    for quote, _, _ in table:
        start = seed_text.find(quote)
        while start >= 0:
            covered[start:start + len(quote)] = [True] * len(quote)
            start = seed_text.find(quote, start + 1)
    left = "".join("\x00" if c else ch for ch, c in zip(seed_text, covered, strict=True))
    gaps = [gap.strip() for gap in left.split("\x00") if re.search(r"\w", gap)]
    assert not gaps, f"seed text not covered by spec/README.md's seed table: {gaps[:5]}"


# A source.openai marks what it quotes with “ and ”; everything else in it is a locator or a paraphrase.
QUOTE_RE = re.compile(r"“([^”]*)”")
OPENAI_SOURCES = sorted((SPEC / "sources").glob("openai-*.md"))


@pytest.fixture(scope="module")
def openai_text() -> str:
    assert OPENAI_SOURCES, "spec/sources/openai-*.md (the stored OpenAI reference excerpts) is missing"
    return "\n".join(_norm(p.read_text(encoding="utf-8")) for p in OPENAI_SOURCES)


def test_openai_quotes_are_verbatim(entries: list[dict[str, Any]], openai_text: str) -> None:
    """Every “quoted” passage of a source.openai is word for word in the stored OpenAI reference excerpt."""
    bad = []
    for e in entries:
        source = e["source"].get("openai") or ""
        assert source.count("“") == source.count("”"), f"{e['id']}: unbalanced “ ” in source.openai"
        for quote in QUOTE_RE.findall(source):
            if _norm(quote) not in openai_text:
                bad.append(f"{e['id']}: {quote!r}")
    assert not bad, "source.openai quotes not found verbatim in spec/sources/openai-*.md:\n" + "\n".join(bad)


def test_openai_quote_check_catches_a_misquote(openai_text: str) -> None:
    """The check above is not vacuous: a true quote is found, a reworded one is not."""
    true = "In some cases, the number of returned tokens may be fewer than requested."
    assert _norm(true) in openai_text
    assert _norm(true.replace("may be fewer", "is exactly")) not in openai_text
    assert QUOTE_RE.findall("X: “a b” and “c”.") == ["a b", "c"]


def test_some_openai_sources_quote(entries: list[dict[str, Any]]) -> None:
    quoting = [e["id"] for e in entries if QUOTE_RE.search(e["source"].get("openai") or "")]
    assert len(quoting) >= 5, quoting
