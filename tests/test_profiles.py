"""conformance.profiles: the built-in profiles, user profiles, and one-line usage errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conformance.errors import UsageError
from conformance.profiles import BUILTIN_PROFILES, Profile, load_profile


def _write(tmp_path: Path, text: str, name: str = "target.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _usage_error(name_or_path: str) -> str:
    with pytest.raises(UsageError) as info:
        load_profile(name_or_path)
    message = str(info.value)
    assert "\n" not in message, "usage errors are one line"
    return message


def test_builtin_names() -> None:
    assert BUILTIN_PROFILES == ("seed", "openai")


def test_seed_profile() -> None:
    p = load_profile("seed")
    assert p.name == "seed" and p.base == "seed"
    assert p.stop_sequence == "included"
    assert p.inclusive_bounds is False
    assert p.stream_usage_without_option == "allowed"
    assert p.deterministic == {"temperature": 1.0, "top_p": 1e-06, "seed": 1234}
    assert p.capabilities == {}
    assert p.context_length is None
    assert p.logit_bias_token_id is None and p.any_token_id == 100  # None: the checks probe for one
    assert p.description


def test_openai_profile() -> None:
    p = load_profile("openai")
    assert p.name == "openai" and p.base == "openai"
    assert p.stop_sequence == "excluded"
    assert p.inclusive_bounds is True
    assert p.stream_usage_without_option == "forbidden"
    assert p.deterministic == {"temperature": 1.0, "top_p": 1e-06, "seed": 1234}
    assert p.deterministic.get("temperature") != 0, "never temperature 0 (spec/DECISIONS.md#determinism)"


def test_profile_is_frozen_and_hashable() -> None:
    p = load_profile("seed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]
    assert hash(p) == hash(load_profile("seed"))
    assert {p, load_profile("openai")}
    assert [f.name for f in dataclasses.fields(Profile)] == [
        "name", "description", "stop_sequence", "inclusive_bounds", "stream_usage_without_option",
        "deterministic", "capabilities", "context_length", "logit_bias_token_id", "base",
    ]


def test_user_profile_extends_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, """
extends = "openai"
context_length = 8192
logit_bias_token_id = 1024

[capabilities]
tools = true
reasoning = false

[deterministic]
top_k = 1
seed = 7
""")
    p = load_profile(path)
    assert p.name == "target" and p.base == "openai"
    assert p.stop_sequence == "excluded" and p.inclusive_bounds is True
    assert p.stream_usage_without_option == "forbidden"
    assert p.context_length == 8192
    assert p.logit_bias_token_id == 1024 and p.any_token_id == 1024
    assert p.capabilities == {"tools": True, "reasoning": False}
    assert p.capability("tools") is True and p.capability("reasoning") is False
    assert p.capability("thinking") is None
    assert p.deterministic == {"top_k": 1, "seed": 7}
    assert "openai" in p.description


def test_user_profile_defaults_to_seed(tmp_path: Path) -> None:
    p = load_profile(_write(tmp_path, 'name = "mine"\ndescription = "my server"\n'))
    assert p.name == "mine" and p.description == "my server" and p.base == "seed"
    assert p.stop_sequence == "included"
    assert p.deterministic == load_profile("seed").deterministic
    assert p.context_length is None and p.logit_bias_token_id is None


def test_unknown_profile_name() -> None:
    assert _usage_error("foo") == "unknown profile 'foo': use seed, openai or a path to a .toml file"
    assert _usage_error("SEED").startswith("unknown profile 'SEED': use seed, openai")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.toml")
    assert _usage_error(path) == f"profile file '{path}' not found: check the path (or use seed or openai)"


def test_malformed_toml(tmp_path: Path) -> None:
    path = _write(tmp_path, "extends = \ncontext_length 5\n")
    message = _usage_error(path)
    assert message.startswith(f"profile file '{path}' is not valid TOML (")
    assert message.endswith("): fix the syntax")


def test_unknown_key(tmp_path: Path) -> None:
    path = _write(tmp_path, 'extends = "seed"\ncontxt_length = 5\n')
    assert _usage_error(path) == (
        f"profile file '{path}': unknown key 'contxt_length': allowed keys are extends, name, description, "
        "capabilities, context_length, logit_bias_token_id, deterministic"
    )


def test_base_only_key(tmp_path: Path) -> None:
    path = _write(tmp_path, 'stop_sequence = "excluded"\n')
    assert _usage_error(path) == (
        f"profile file '{path}': stop_sequence is fixed by the base profile: remove it and set "
        'extends = "seed" or "openai"'
    )


def test_unknown_base(tmp_path: Path) -> None:
    path = _write(tmp_path, 'extends = "azure"\n')
    assert _usage_error(path) == (
        f"profile file '{path}': extends = 'azure' is not a built-in profile: use extends = \"seed\" "
        'or extends = "openai"'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('context_length = "8k"\n', "context_length must be a positive integer (tokens), got '8k' (str)"),
        ("context_length = 0\n", "context_length must be a positive integer (tokens), got 0 (int)"),
        ("context_length = true\n", "context_length must be a positive integer (tokens), got True (bool)"),
        ("logit_bias_token_id = -1\n",
         "logit_bias_token_id must be a non-negative integer (a token id), got -1 (int)"),
        ("logit_bias_token_id = 1.5\n",
         "logit_bias_token_id must be a non-negative integer (a token id), got 1.5 (float)"),
        ("capabilities = true\n",
         "capabilities must be a table ([capabilities] with name = true/false), got bool"),
        ('[capabilities]\ntools = "yes"\n', "capabilities.tools must be true or false, got 'yes' (str)"),
        ("name = 3\n", "name must be a non-empty string, got 3 (int)"),
        ("deterministic = 1\n",
         "deterministic must be a non-empty table of request parameters ([deterministic] with e.g. "
         "top_p = 1e-06 and seed = 1234)"),
        ("[deterministic]\ntop_p = [1]\n",
         "deterministic.top_p must be a number, string or boolean, got list"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    assert _usage_error(path) == f"profile file '{path}': {expected}"


def test_unknown_capability(tmp_path: Path) -> None:
    path = _write(tmp_path, "[capabilities]\nvision = true\n")
    message = _usage_error(path)
    prefix = f"profile file '{path}': unknown capability 'vision' in [capabilities]: use one of "
    assert message.startswith(prefix)
    assert "tools" in message and "json-schema" in message
