"""Rebuild openai-chat-create.md from OpenAI's OpenAPI description (github.com/openai/openai-openapi).

    python spec/sources/extract_openai.py path/to/openapi.yaml COMMIT > spec/sources/openai-chat-create.md

Every description reachable from POST /chat/completions (request body, 200 responses), the error object and
GET /models is written verbatim, one line each, whitespace folded. tests/test_catalog.py checks that every
quoted passage of a catalog source.openai is a substring of the result.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

ROOTS = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "ErrorResponse",
    "ListModelsResponse",
)


def _fold(text: str) -> str:
    return " ".join(text.split())


def _walk(node: Any, path: str, lines: list[str], queue: list[str], seen: set[str]) -> None:
    if not isinstance(node, dict):
        return
    label = path or "(schema)"
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            queue.append(name)
        lines.append(f"- `{label}` → `{name}`")
    desc = node.get("description")
    if isinstance(desc, str) and desc.strip():
        lines.append(f"- `{label}`: {_fold(desc)}")
    if isinstance(node.get("enum"), list):
        lines.append(f"- `{label}` enum: " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "default" in node:
        lines.append(f"- `{label}` default: `{node['default']}`")
    for key in ("minimum", "maximum"):
        if key in node:
            lines.append(f"- `{label}` {key}: `{node[key]}`")
    for k, v in (node.get("properties") or {}).items():
        _walk(v, f"{path}.{k}" if path else k, lines, queue, seen)
    for comb in ("allOf", "anyOf", "oneOf"):
        for v in node.get(comb) or []:
            _walk(v, path, lines, queue, seen)
    if "items" in node:
        _walk(node["items"], f"{path}[]", lines, queue, seen)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", lines, queue, seen)


def render(spec: dict[str, Any], commit: str) -> str:
    schemas = spec["components"]["schemas"]
    post = spec["paths"]["/chat/completions"]["post"]
    models = spec["paths"]["/models"]["get"]
    out = [
        "# OpenAI API reference: POST /chat/completions (excerpt)",
        "",
        "Copied verbatim from OpenAI's OpenAPI description, `openapi.yaml` of",
        "https://github.com/openai/openai-openapi (MIT licence, Copyright (c) OpenAI)",
        f"at commit `{commit}`, by `spec/sources/extract_openai.py`:",
        "every description reachable from the request body and the 200 responses of `POST /chat/completions`,",
        "the error object and `GET /models`, one line each (YAML line folding undone, nothing else changed).",
        "The catalog's `source.openai` quotes (text between “ and ”) must be substrings of this file",
        "(`tests/test_catalog.py::test_openai_quotes_are_verbatim`).",
        "",
        "## POST /chat/completions",
        "",
        f"- `summary`: {_fold(post.get('summary') or '')}",
        "",
        "## GET /models",
        "",
        f"- `summary`: {_fold(models.get('summary') or '')}",
    ]
    queue = list(ROOTS)
    seen = set(ROOTS)
    while queue:
        name = queue.pop(0)
        lines: list[str] = []
        _walk(schemas[name], "", lines, queue, seen)
        out += ["", f"## {name}", ""]
        out += list(dict.fromkeys(lines))
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        spec = yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    sys.stdout.write(render(spec, argv[2]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
