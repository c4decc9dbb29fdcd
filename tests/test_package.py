"""Packaging and public surface: exports, light imports, docs in step with the schema."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import dlg

ROOT = Path(__file__).resolve().parent.parent


def test_all_is_sorted_and_complete():
    assert dlg.__all__ == sorted(dlg.__all__)
    # every public attribute that is not a submodule is exported
    public = {name for name in dir(dlg) if not name.startswith("_")
              and not isinstance(getattr(dlg, name), types.ModuleType)}
    assert public - set(dlg.__all__) == set()
    for name in dlg.__all__:
        assert getattr(dlg, name) is not None


def test_import_dlg_is_light():
    code = ("import sys, dlg; heavy = ['langchain_core', 'jinja2', 'jsonschema', 'ruamel', "
            "'anyio', 'click', 'pydantic', 'diskcache', 'langchain_community', "
            "'huggingface_hub']; "
            "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_builtin_plugin_modules_import_no_langchain():
    code = ("import sys\nfrom dlg.plugin_manager import build_plugin_manager\n"
            "build_plugin_manager(autoload=False)\n"
            "print([m for m in ('langchain_core', 'diskcache', 'langchain_community', "
            "'huggingface_hub') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"  # each is imported by the plugin that uses it, when used


def test_only_dlg_is_installed():
    """core/ and plugins/ are only names inside the checkout, not importable packages."""
    code = ("import importlib.util as u; print(u.find_spec('core'), u.find_spec('plugins'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd="/").stdout
    assert out.strip() == "None None"


def _schema_keys(node, out):
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            out.add(key)
            _schema_keys(value, out)
        for value in node.values():
            _schema_keys(value, out)
    elif isinstance(node, list):
        for value in node:
            _schema_keys(value, out)
    return out


def test_every_schema_key_is_documented():
    schema = json.loads((ROOT / "schemas" / "mode.schema.json").read_text())
    docs = (ROOT / "docs" / "modes.md").read_text()
    missing = sorted(k for k in _schema_keys(schema, set()) if f"`{k}`" not in docs)
    assert missing == []


def test_changelog_mentions_the_current_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(dlg.__version__)}\]", changelog, re.M) or (
        "## [Unreleased]" in changelog)


def test_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", readme, re.S)
    assert "dlg run" in blocks[0] and "pip install" in blocks[0] and "--model" not in blocks[0]
    assert "pytest" in blocks[1] and "[dev]" in blocks[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip() in ci
