"""Loading a bench script from ``bench/`` as a module, for the tests of what it builds."""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

BENCHES = pathlib.Path(__file__).resolve().parent.parent / "bench"


def load_bench(name: str, monkeypatch) -> ModuleType:
    """``bench/<name>.py`` as a fresh module, with plugin autoload off; the environment
    variables a bench sets at import are restored after the test by ``monkeypatch``."""
    monkeypatch.setenv("DLG_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("DLG_NO_CACHE", "1")  # restored after: benches set it
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCHES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
