"""pytest plugin (entry point `pytest11`): lets a Python port's own test suite assert conformance.

Options `--goldens FILE` and `--policy FILE`; fixtures are added as the check engine lands.
Importing this module must stay cheap: it is loaded by every pytest run in an environment that has
conformance installed.
"""

from __future__ import annotations

from typing import Any


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("conformance", "conformance checks against golden stores")
    group.addoption("--goldens", action="store", default=None, help="golden store (.h5) to check against")
    group.addoption("--policy", action="store", default=None, help="tolerance policy (TOML)")
