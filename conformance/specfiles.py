"""Locate and load the machine-readable contract in ``spec/`` (no I/O beyond reading those files)."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

__all__ = ["spec_dir", "load_yaml", "openapi", "spec_hash"]


def spec_dir() -> Path:
    """The ``spec/`` folder: inside the installed package (wheel) or beside it (source checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "spec", here.parent / "spec"):
        if (candidate / "requirements.yaml").is_file():
            return candidate
    raise FileNotFoundError("spec/requirements.yaml not found beside the conformance package")


@functools.cache
def load_yaml(name: str) -> Any:
    with open(spec_dir() / name, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a safe loader (libyaml's when present)


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the endpoint (cached: parsed once per process)."""
    doc = load_yaml("openapi.yaml")
    assert isinstance(doc, dict)
    return doc


@functools.cache
def spec_hash() -> str:
    """sha256 over the spec files, so a results file names the contract it was judged against."""
    h = hashlib.sha256()
    for path in sorted(spec_dir().rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".toml", ".json"}:
            h.update(path.relative_to(spec_dir()).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()
