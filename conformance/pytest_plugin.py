"""pytest plugin (entry point `pytest11`): lets a Python port's own test suite assert conformance.

Options `--goldens FILE` (or the `CONFORMANCE_GOLDENS` environment variable, or the `conformance_goldens`
ini option) and `--policy FILE`. Fixtures:

* `golden_store`: the opened golden store (session-scoped);
* `golden_call`: one recorded module call, parametrized over the store by the `conformance` marker;
* `conformance_check`: `conformance_check(golden_call, outputs)` judges a port's outputs against that
  call's golden outputs under the tolerance policy (isolated mode) and fails the test with the tensors
  that diverge, their metrics and thresholds.

    import pytest

    @pytest.mark.conformance(cases=["decode_short"], modules=["vocoder.decoder.blocks.*"])
    def test_decoder(golden_call, conformance_check, my_port):
        args, kwargs = golden_call.inputs()
        conformance_check(golden_call, my_port.run(golden_call.key, *args, **kwargs))

Marker arguments: `cases` (names), `modules` (globs over module keys), `calls` ("all", the default, or
"first": call 0 of each module). Write `--goldens=FILE` with the `=`: pytest looks for its rootdir and ini
file among the command line's paths before plugin options are parsed, so a separate `FILE` argument
would be taken for one. Importing this module must stay cheap and torch-free: it is loaded by
every pytest run in an environment that has conformance installed, so everything heavy is imported
inside the fixtures.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from typing import Any

MARKER = "conformance"


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("conformance", "conformance checks against golden stores")
    group.addoption("--goldens", action="store", default=None, help="golden store (.h5) to check against")
    group.addoption("--policy", action="store", default=None, help="tolerance policy (TOML)")
    parser.addini("conformance_goldens", "golden store (.h5) for the conformance fixtures", default="")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(cases=None, modules=None, calls='all'): parametrize the test's golden_call fixture over the "
        "recorded module calls of the golden store (--goldens) whose case and module key match",
    )


def _goldens_path(config: Any) -> str | None:
    return (
        config.getoption("--goldens")
        or os.environ.get("CONFORMANCE_GOLDENS")
        or config.getini("conformance_goldens")
        or None
    )


@dataclass(frozen=True)
class CallRef:
    """A recorded module call, by name (the parameter of `golden_call`)."""

    case: str
    key: str
    call: int

    def __str__(self) -> str:
        return f"{self.case}:{self.key}#{self.call}"


@dataclass
class GoldenCall:
    """One recorded call of one module: its golden inputs, outputs and weights."""

    store: Any  # conformance.store.GoldenStore
    case: str
    key: str
    call: int
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"{self.key}#{self.call}"

    @property
    def record(self) -> Any:
        return self.store.case(self.case).get_call(self.key, self.call)

    @property
    def module(self) -> str:
        return self.record.module

    @property
    def method(self) -> str:
        return self.record.method

    @property
    def class_name(self) -> str:
        return self.record.class_name

    def inputs(self) -> tuple[list[Any], dict[str, Any]]:
        """(args, kwargs) as the official module received them (numpy arrays and plain values)."""
        return self.store.case(self.case).call_inputs(self.key, self.call)

    def outputs(self) -> Any:
        """The golden outputs, with the official structure (a tensor, a tuple, a dict...)."""
        return self.store.case(self.case).call_io(self.key, self.call)[2]

    def tensors(self) -> dict[str, Any]:
        """Every golden tensor of the call by role (args/0, kwargs/..., outputs/0)."""
        case = self.store.case(self.case)
        return {leaf.role: case.tensor(leaf) for leaf in case.leaves(self.key, self.call)
                if leaf.is_tensor and leaf.tier == "full"}  # fmt: skip

    def weights(self, checkpoint: Any = None) -> dict[str, Any]:
        """The module's parameters from the checkpoint of the case, named relative to the module."""
        if "weights" not in self._cache:
            from pathlib import Path

            from conformance.ports.export import Checkpoints

            checkpoints = Checkpoints(self.store, self.store.case(self.case), Path(checkpoint) if checkpoint else None)
            params, _, _ = checkpoints.slice(self.key)
            self._cache["weights"] = {name: entry.read() for name, entry in params.items()}
        return dict(self._cache["weights"])

    def __str__(self) -> str:
        return f"{self.case}:{self.name}"


def _select(store: Any, marker: Any) -> list[CallRef]:
    options = dict(marker.kwargs) if marker is not None else {}
    unknown = sorted(set(options) - {"cases", "modules", "calls"})
    if unknown:
        raise ValueError(f"unknown argument {unknown[0]!r} of the {MARKER} marker (cases, modules, calls)")
    cases = options.get("cases") or list(store.cases)
    cases = [cases] if isinstance(cases, str) else list(cases)
    modules = options.get("modules")
    modules = [modules] if isinstance(modules, str) else modules
    which = options.get("calls", "all")
    if which not in ("all", "first"):
        raise ValueError(f"calls={which!r}: use 'all' or 'first'")
    refs = []
    for name in cases:
        if name not in store.cases:
            raise ValueError(f"no case {name!r} in {store.path} (cases: {', '.join(store.cases)})")
        for record in store.case(name).calls():
            if modules is not None and not any(fnmatch.fnmatchcase(record.key, g) for g in modules):
                continue
            if which == "first" and record.call != 0:
                continue
            refs.append(CallRef(name, record.key, record.call))
    return refs


def pytest_generate_tests(metafunc: Any) -> None:
    if "golden_call" not in metafunc.fixturenames:
        return
    path = _goldens_path(metafunc.config)
    if path is None:
        metafunc.parametrize("golden_call", [None], ids=["no-goldens"], indirect=True)
        return
    from conformance.store import GoldenStore

    with GoldenStore(path) as store:
        refs = _select(store, metafunc.definition.get_closest_marker(MARKER))
    if not refs:
        raise ValueError(f"the {MARKER} marker of {metafunc.function.__name__} selects no golden call in {path}")
    metafunc.parametrize("golden_call", refs, ids=[str(r) for r in refs], indirect=True)


def _policy_for(policy: Any, case: Any) -> Any:
    """The policy as it applies to the case's subject (its rules and token heads), found through the registry;
    the policy for every subject when that subject is not installed here."""
    from conformance import subjects
    from conformance.errors import ConformanceError

    try:
        subject = subjects.for_case(case)
    except ConformanceError:
        subject = None
    return policy.for_subject(subject.name if subject else None, subject.token_logits if subject else ())


def _fail(message: str) -> None:
    import pytest

    pytest.fail(message, pytrace=False)


def _require_goldens(config: Any) -> str:
    path = _goldens_path(config)
    if path is None:
        _fail("conformance: no golden store: pass --goldens FILE (or set CONFORMANCE_GOLDENS, or the "
              "conformance_goldens ini option)")  # fmt: skip
    return str(path)


try:  # fixtures need pytest; the module itself must import without it (it is also imported for GoldenCall)
    import pytest as _pytest
except ImportError:  # pragma: no cover
    _pytest = None  # type: ignore[assignment]


if _pytest is not None:

    @_pytest.fixture(scope="session")
    def golden_store(request: Any) -> Any:
        """The golden store given by --goldens, opened for reading."""
        from conformance.errors import ConformanceError
        from conformance.store import GoldenStore

        path = _require_goldens(request.config)
        try:
            store = GoldenStore(path)
        except ConformanceError as exc:
            _fail(f"conformance: {exc}")
        yield store
        store.close()

    @_pytest.fixture(scope="session")
    def conformance_policy(request: Any) -> Any:
        """The tolerance policy: --policy, else ./conformance-policy.toml or pyproject's table, else built-in."""
        from pathlib import Path

        from conformance.compare.policy import find_policy, load_policy
        from conformance.errors import ConformanceError

        option = request.config.getoption("--policy")
        try:
            return load_policy(find_policy(Path(option) if option else None))
        except ConformanceError as exc:
            _fail(f"conformance: {exc}")

    @_pytest.fixture(scope="session")
    def _conformance_reference(golden_store: Any) -> Any:
        from conformance.compare.engine import find_reference
        from conformance.store import GoldenStore

        path = find_reference(golden_store.path)
        store = GoldenStore(path) if path else None
        yield store
        if store is not None:
            store.close()

    @_pytest.fixture
    def golden_call(request: Any, golden_store: Any) -> GoldenCall:
        """One recorded module call (parametrized by the `conformance` marker)."""
        ref = request.param
        if ref is None:
            _require_goldens(request.config)
        return GoldenCall(golden_store, ref.case, ref.key, ref.call)

    @_pytest.fixture
    def conformance_check(golden_store: Any, conformance_policy: Any, _conformance_reference: Any) -> Any:
        """`conformance_check(call, outputs, mode="isolated")`: judge outputs against a call's golden outputs.

        `call` is a `golden_call` or "key#call" with `case=`. Fails the test when a tensor diverges beyond the
        policy or is missing, xfails it when every failure is an expected failure of the policy; returns the
        verdicts (conformance.compare.results.TensorResult) otherwise."""
        from conformance.compare.engine import Judge, flatten_numpy
        from conformance.compare.results import ERROR, FAIL, NOT_COVERED, XFAIL

        def check(
            call: GoldenCall | str, outputs: Any, *, case: str | None = None, mode: str = "isolated"
        ) -> list[Any]:
            if isinstance(call, str):
                if case is None:
                    _fail("conformance_check: give case= with a 'key#call' name")
                key, _, index = call.rpartition("#")
                call = GoldenCall(golden_store, str(case), key, int(index))
            golden = golden_store.case(call.case)
            record = golden.get_call(call.key, call.call)
            reference = None
            if _conformance_reference is not None and call.case in _conformance_reference.cases:
                reference = _conformance_reference.case(call.case)
            judge = Judge(_policy_for(conformance_policy, golden), golden, reference, mode)
            produced = flatten_numpy(outputs, "outputs", top=True)
            leaves = [leaf for leaf in golden.leaves(call.key, call.call)
                      if leaf.is_tensor and leaf.role.startswith("outputs")]  # fmt: skip
            results = [
                judge.judge(leaf, produced.get(leaf.role), (record.seq_start, record.seq_end)) for leaf in leaves
            ]
            bad = [r for r in results if r.status in (FAIL, ERROR, NOT_COVERED)]
            if bad:
                lines = [f"{call}: {len(bad)} of {len(results)} output tensor(s) do not conform ({mode})"]
                for r in bad:
                    limits = ", ".join(f"{k}={v:.3g}" for k, v in r.thresholds.items())
                    lines.append(
                        f"  {r.role}: {r.status}: {r.message}" + (f" [{limits}; {r.source}]" if limits else "")
                    )
                _fail("\n".join(lines))
            expected = [r for r in results if r.status == XFAIL]
            if expected:
                _pytest.xfail(f"{call}: {expected[0].xfail}")
            return results

        return check
