"""The one atomic writer (conformance/files.py). Requirement ids: none (the suite's own file handling)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.files import write_atomic


def test_text_and_bytes_land_whole_and_no_temporary_is_left(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old", encoding="utf-8")
    assert write_atomic(target, "néw \udcff", errors="backslashreplace") == target
    assert target.read_text(encoding="utf-8") == "néw \\udcff"
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "summary.md"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "lone surrogate \udcff")  # strict: the writer's own failure
    assert target.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.md"]
