"""Bigger local models from the Hugging Face Hub: ``dlg models pull hf:...`` and
``local?model=NAME``, against a fake hub on 127.0.0.1 (tests/hub_support.py), through
huggingface_hub as users run it (``dlg`` in a subprocess, ``HF_ENDPOINT`` pointing at the
fake hub). Nothing here reaches the internet."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlg.cli import cli

from .hub_support import FakeHub

pytestmark = pytest.mark.slow

DLG = str(Path(sys.executable).with_name("dlg"))
REPO, FILE = "acme/tiny-GGUF", "tiny-q4.gguf"
TOKEN = "hf_dlgTestTokenNeverShown1234"


def _env(tmp_path: Path, hub: FakeHub, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()  # conftest's DLG_ folders stay
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k != "DLG_LOCAL_MODEL"}
    return {**env, "HF_ENDPOINT": hub.base_url, "HF_HOME": str(tmp_path / "hf-home"),
            "DLG_MODELS_DIR": str(tmp_path / "models"), "NO_PROXY": "127.0.0.1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "DLG_MODEL": "echo", **extra}


def _dlg(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([DLG, *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _downloads(hub: FakeHub) -> list[dict]:
    return [r for r in hub.requests if r["server"] == "storage"]


def test_pull_fetches_a_gguf_from_the_hub_checks_it_and_shows_progress(tmp_path):
    data = b"GGUF" + os.urandom(300_000)
    with FakeHub({REPO: {FILE: data}}) as hub:
        env = _env(tmp_path, hub)
        done = _dlg(env, "models", "pull", f"hf:{REPO}/{FILE}")
        target = tmp_path / "models" / "hf" / "acme" / "tiny-GGUF" / FILE
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"local?model=hf:{REPO}/{FILE} ready: {target}\n"
        assert target.read_bytes() == data
        assert done.stderr.startswith(f"hf:{REPO}/{FILE}: 0.3 MB, from {hub.base_url} "
                                      "(commit 0123456789ab)\n")
        assert re.search(rf"{re.escape(FILE)}: 100%\|.*\| 300k/300k", done.stderr)
        assert done.stderr.endswith(f"hf:{REPO}/{FILE}: sha256 checked\n")
        assert len(_downloads(hub)) == 1
        # pulled once: a second pull asks the hub what is current, and downloads nothing
        again = _dlg(env, "models", "pull", f"hf:{REPO}/{FILE}")
        assert again.returncode == 0, again.stderr
        assert again.stdout == done.stdout
        assert len(_downloads(hub)) == 1


def test_a_recommended_model_is_pulled_by_its_short_name_and_listed_as_pulled(tmp_path):
    repo, file = "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    with FakeHub({repo: {file: b"GGUF" + b"\1" * 5000}}) as hub:
        env = _env(tmp_path, hub)
        listed = _dlg(env, "models", "list", "--local")
        row = next(line for line in listed.stdout.splitlines()
                   if line.startswith("qwen2.5-0.5b-instruct "))
        assert row.split()[1:5] == ["0.49GB", "1GB", "Apache-2.0", "no"]
        done = _dlg(env, "models", "pull", "qwen2.5-0.5b-instruct")
        assert done.returncode == 0, done.stderr
        target = tmp_path / "models" / "hf" / "Qwen" / "Qwen2.5-0.5B-Instruct-GGUF" / file
        assert done.stdout == f"local?model=qwen2.5-0.5b-instruct ready: {target}\n"
        listed = _dlg(env, "models", "list", "--local")
        row = next(line for line in listed.stdout.splitlines()
                   if line.startswith("qwen2.5-0.5b-instruct "))
        assert row.split()[4] == "yes"
        assert f"hf:{repo}/{file}" in row


def test_a_dropped_transfer_resumes_where_it_stopped(tmp_path):
    """The storage hangs up halfway through; the pull asks for the rest (a Range from
    what it has) and the file is whole and checked."""
    data = os.urandom(24 << 20)  # more than huggingface_hub's 10 MiB read, so some lands
    with FakeHub({REPO: {FILE: data}}) as hub:
        hub.faults[(REPO, FILE)] = "cut"
        done = _dlg(_env(tmp_path, hub), "models", "pull", f"hf:{REPO}/{FILE}")
        assert done.returncode == 0, done.stderr
        target = tmp_path / "models" / "hf" / "acme" / "tiny-GGUF" / FILE
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
        first, second = _downloads(hub)
        assert "range" not in first["headers"]
        resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second["headers"]["range"])[1])
        assert 0 < resumed_at <= len(data) // 2
        assert "resume" in done.stderr
        assert done.stderr.endswith("sha256 checked\n")


def test_a_file_that_does_not_match_the_hubs_checksum_is_refused_and_deleted(tmp_path):
    data = b"GGUF" + os.urandom(100_000)
    with FakeHub({REPO: {FILE: data}}) as hub:
        hub.faults[(REPO, FILE)] = "corrupt"
        done = _dlg(_env(tmp_path, hub), "models", "pull", f"hf:{REPO}/{FILE}")
        assert done.returncode == 1
        got = hashlib.sha256(bytes(b ^ 0xFF for b in data[:64]) + data[64:]).hexdigest()
        want = hashlib.sha256(data).hexdigest()
        assert done.stderr.endswith(
            f"Error: hf:{REPO}/{FILE}: the file downloaded from {hub.base_url} does not "
            f"match the hub's checksum (sha256 {got[:16]}..., expected {want[:16]}...); it "
            "was deleted. Pull again; if it happens again, the server sends another file "
            "than the hub lists\n")
        assert not (tmp_path / "models" / "hf" / "acme" / "tiny-GGUF" / FILE).exists()
        # and it is not taken as pulled: the next pull downloads it again
        hub.faults.clear()
        assert _dlg(_env(tmp_path, hub), "models", "pull", f"hf:{REPO}/{FILE}"
                    ).returncode == 0
        assert len(_downloads(hub)) == 2


@pytest.mark.parametrize(("ref", "said"), [
    ("hf:acme/nothing-GGUF/tiny-q4.gguf",
     "no repository 'acme/nothing-GGUF' on {hub} (a private one needs HF_TOKEN)"),
    (f"hf:{REPO}/other.gguf",
     f"{REPO} has no file 'other.gguf' on {{hub}} (its files: {{hub}}/{REPO}/tree/main)"),
])
def test_an_unknown_repository_or_file_is_a_clear_error(tmp_path, ref, said):
    with FakeHub({REPO: {FILE: b"GGUF"}}) as hub:
        done = _dlg(_env(tmp_path, hub), "models", "pull", ref)
    assert done.returncode == 2
    assert done.stderr == f"Error: {ref}: {said.format(hub=hub.base_url)}\n"
    assert done.stdout == ""


def test_the_token_goes_to_the_hub_only_and_never_into_a_message(tmp_path):
    with FakeHub({REPO: {FILE: b"GGUF" + b"\0" * 1000, "echo.gguf": b"GGUF"}}) as hub:
        hub.faults[(REPO, "echo.gguf")] = "echo"
        env = _env(tmp_path, hub, HF_TOKEN=TOKEN)
        assert _dlg(env, "models", "pull", f"hf:{REPO}/{FILE}").returncode == 0
        heads = [r for r in hub.requests if r["method"] == "HEAD"]
        assert {r["headers"].get("authorization") for r in heads} == {f"Bearer {TOKEN}"}
        assert [r["headers"].get("authorization") for r in _downloads(hub)] == [None]
        refused = _dlg(env, "models", "pull", f"hf:{REPO}/echo.gguf")
    assert refused.returncode == 1
    assert refused.stderr == (f"Error: hf:{REPO}/echo.gguf: {hub.base_url} answered HTTP "
                              "403: Forbidden: you sent Bearer [REDACTED]\n")
    assert TOKEN not in refused.stderr + refused.stdout


@pytest.mark.parametrize(("ref", "said"), [
    ("hf:acme", "'hf:acme' is not a hub file: expected hf:OWNER/REPO/FILE.gguf, e.g. "
     "hf:Qwen/Qwen2.5-1.5B-Instruct-GGUF/qwen2.5-1.5b-instruct-q4_k_m.gguf"),
    ("hf:acme/../x.gguf", "'hf:acme/../x.gguf': '..' is not a valid repository name on "
     "the hub (letters, digits, '-', '_', '.')"),
    ("hf:acme/m/../../../etc/x.gguf",
     "'hf:acme/m/../../../etc/x.gguf': '..' is not a plain file or folder name"),
    ("hf:acme/m/.hidden.gguf", "'hf:acme/m/.hidden.gguf': '.hidden.gguf' is not a plain "
     "file or folder name"),
    ("hf:acme/m/model.safetensors", "'hf:acme/m/model.safetensors': only GGUF files run "
     "on llama.cpp (the name ends with .gguf)"),
    ("qwen2.5-1.5b-instrct", "'qwen2.5-1.5b-instrct' is not a recommended local model: "
     "did you mean 'qwen2.5-1.5b-instruct'? (`dlg models list --local` lists them)"),
])
def test_a_bad_hub_reference_is_refused_before_any_request(ref, said):
    result = CliRunner().invoke(cli, ["models", "pull", ref])
    assert result.exit_code == 2
    assert result.output == f"Error: {said}\n"


def test_local_model_names_a_file_to_pull_until_it_is_pulled(tmp_path, monkeypatch):
    from dlg.models import ModelPool

    monkeypatch.setenv("DLG_MODELS_DIR", str(tmp_path))
    pool = ModelPool()
    target = (tmp_path / "hf" / "Qwen" / "Qwen2.5-1.5B-Instruct-GGUF"
              / "qwen2.5-1.5b-instruct-q4_k_m.gguf")
    assert pool.problem("local?model=qwen2.5-1.5b-instruct") == (
        f"no local model file at {target}: run `dlg models pull qwen2.5-1.5b-instruct` "
        "(about 1.12 GB, once)")
    assert pool.problem("local?model=qwen9") == (
        "'qwen9' is not a recommended local model: `dlg models list --local` lists them, "
        "or give hf:OWNER/REPO/FILE.gguf")
    assert pool.problem("local?model=qwen2.5-1.5b-instruct&path=/m.gguf") == (
        "local: give the model= option alone, not with path=")


@pytest.mark.long
@pytest.mark.local_model
def test_a_model_pulled_from_the_hub_runs_a_dialogue(tmp_path):
    """The real SmolLM2 GGUF, served by the fake hub, pulled and run as
    ``local?model=hf:...``. Long: the pull's steps have quick cases above, and the
    embedded model's run its quick case in test_local_model's CLI test."""
    from dlg.plugins.local import model_path

    real = model_path("", {})
    assert real is not None and real.is_file(), "needs `dlg models pull`"
    ref = "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf"
    repo, file = ref[3:].rsplit("/", 1)
    with FakeHub({repo: {file: real}}) as hub:
        env = _env(tmp_path, hub)
        assert _dlg(env, "models", "pull", ref).returncode == 0
    mode = tmp_path / "short.json"
    mode.write_text('{"name": "one", "settings": {"max_tokens": 16, "seed": 7}, "turns": '
                    '[{"id": "a", "role": "R", "prompt": "Name a colour."}]}')
    done = _dlg({**env, "HF_ENDPOINT": "http://127.0.0.1:9"}, "run", str(mode),
                "--model", f"local?model={ref}", "-f", "json")
    assert done.returncode == 0, done.stderr
    import json

    record = json.loads(done.stdout)
    assert record["status"] == "completed"
    assert {t["model"] for t in record["turns"]} == {f"local?model={ref}"}
    assert all(t["usage"]["completion"] > 0 for t in record["turns"])
