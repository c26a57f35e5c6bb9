"""The registry of checks: ``@check("REQ-A", "REQ-B")`` on a plain function fills ``CHECKS``.

A check is a function whose arguments are named after what the run gives it (``CheckContext``'s fields:
``client``, ``judge``, ``shared``, ``conformance_target``, ``profile``, ``capabilities``, ``options``) and,
for a parametrised check, after its case's values. It is run once per case by the engine
(``conformance.engine.run``); the front-ends (the CLI, the pytest plugin) import ``conformance.checks``,
which registers every check, and hand ``CHECKS`` to it. No check module imports pytest.

A check's key is the pytest node id it always had (``test_core.py::test_basic_completion_is_json_and_valid``,
``test_errors.py::test_invalid_request_refused[max-tokens-zero]``): results.json, recordings and waivers
keep naming checks as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS: dict[str, Check] = {}
# a check module's ``prepare``: called once before the checks run, with the module's selected checks
PREPARES: dict[str, Callable[..., Any]] = {}


@dataclass(frozen=True)
class Case:
    """One parameter set of a parametrised check: its id (in the key), its values, and the requirement ids
    this case judges besides the check's own."""

    id: str
    values: tuple[Any, ...]
    requirements: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()  # this case's nearest wrong fault modes besides the check's own


def case(*values: Any, id: str, requirements: Iterable[str] = (), neighbours: Iterable[str] = ()) -> Case:
    return Case(id=id, values=values, requirements=tuple(requirements), neighbours=tuple(neighbours))


@dataclass(frozen=True)
class Check:
    key: str  # "test_core.py::test_name[case]": the pytest node id (relative to conformance/checks)
    module: str  # "conformance.checks.test_core"
    name: str  # the function's name
    func: Callable[..., Any] = field(repr=False, compare=False)
    requirements: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict, compare=False)
    case_id: str | None = None
    order: tuple[str, int, int] = ("", 0, 0)  # module file, line, case index: the run's order
    # the fault modes of conformance/reference/faults.py that are this check's nearest wrong neighbours: the
    # wrong servers its request and oracle were built to tell from a conforming one (tests/test_neighbours.py)
    neighbours: tuple[str, ...] = ()

    @property
    def argnames(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.func).parameters)


def check(*requirements: str, argnames: str | None = None, cases: Sequence[Case] | None = None,
          neighbours: Iterable[str] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a check of ``requirements`` (ids of spec/requirements.yaml); with
    ``argnames`` ("a, b") and ``cases``, once per case, each case's values bound to those names.
    ``neighbours`` names the fault modes (conformance/reference/faults.py) that are the check's nearest wrong
    neighbours: each breaks one of the check's requirements, and the check must fail on it (the kill matrix
    proves it) where a weaker oracle would pass (spec/DECISIONS.md#neighbours)."""
    near = tuple(neighbours)
    names = [n.strip() for n in argnames.split(",")] if argnames else []
    if (cases is None) != (not names):
        raise TypeError("@check: argnames and cases go together")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        module = fn.__module__
        file = Path(inspect.getfile(fn)).name
        line = fn.__code__.co_firstlineno
        keys: list[str] = []
        for i, c in enumerate(cases if cases is not None else [None]):
            if c is None:
                key, params, reqs, cid = f"{file}::{fn.__name__}", {}, requirements, None
                near_here = near
            else:
                near_here = tuple(dict.fromkeys((*c.neighbours, *near)))
                if len(c.values) != len(names):
                    raise TypeError(f"@check on {fn.__name__}: case {c.id} has {len(c.values)} values for "
                                    f"{len(names)} names")
                key, params = f"{file}::{fn.__name__}[{c.id}]", dict(zip(names, c.values, strict=True))
                reqs, cid = tuple(dict.fromkeys((*c.requirements, *requirements))), c.id
            if not reqs:
                raise TypeError(f"@check on {fn.__name__}: name the requirement ids it judges")
            CHECKS[key] = Check(key=key, module=module, name=fn.__name__, func=fn, requirements=tuple(reqs),
                                params=params, case_id=cid, order=(file, line, i), neighbours=near_here)
            keys.append(key)
        fn.__conformance_checks__ = keys  # type: ignore[attr-defined]  # the pytest plugin's items
        return fn

    return register


def prepare(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a check module's ``prepare(checks, context)``: called once after discovery, before any check
    runs, with that module's selected checks, to start pure work ahead (the generated phase draws its
    requests in a helper process). It returns a cleanup callable when it did (its checks then run last), or
    None."""
    PREPARES[fn.__module__] = fn
    return fn


def ordered(checks: Iterable[Check]) -> list[Check]:
    """Checks in the run's order: module file, then place in the file (pytest's collection order)."""
    return sorted(checks, key=lambda c: c.order)

