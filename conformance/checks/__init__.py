"""The conformance checks: plain functions registered with ``@check(...)`` (conformance.engine.registry).

Importing this package registers every check (each module below, in the run's order); the engine runs them,
the CLI and the pytest plugin are its front-ends. The modules keep their ``test_`` names: a check's key is the
pytest node id it always had.
"""

from conformance.checks import (  # noqa: F401  (each import registers its module's checks)
    test_auth,
    test_context,
    test_core,
    test_errors,
    test_generated,
    test_json,
    test_logit_bias,
    test_logprobs,
    test_n,
    test_penalties,
    test_ranges,
    test_reasoning,
    test_sampling,
    test_sdk,
    test_seed,
    test_stop,
    test_streaming,
    test_tools,
    test_usage,
)


def run_wide(records: list, stop_sequence: str | None = None, capabilities: dict | None = None) -> list:
    """Records of the run-wide invariants over every exchange of the run, for the requirements the run
    selected whose own capability the target offers (``_runwide.run_wide_selection``: a check skipped for
    one capability never takes an unrelated requirement with it). The front-ends hand it to the engine's
    ``RunSession.finish``."""
    from conformance.checks._runwide import judge_run, run_wide_selection

    return judge_run(records, run_wide_selection(records, capabilities), stop_sequence=stop_sequence)
