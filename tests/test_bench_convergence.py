"""bench/bench_convergence.py draws the probe's signal as its options say, and refuses
options out of range with a clear message rather than a traceback."""

from __future__ import annotations

import random
import sys

import pytest

from tests.bench_support import BENCHES, load_bench

BENCH = BENCHES / "bench_convergence.py"


@pytest.fixture
def bench(monkeypatch):
    return load_bench("bench_convergence", monkeypatch)


def _objects(said: str) -> bool:
    return said.startswith("Objection:")


@pytest.mark.parametrize("seed", range(1, 6))
def test_the_spurious_objection_rate_is_the_option(bench, seed):
    """With every cause visible and no spurious objection, a plateau's probe objects in
    exactly the rounds between the change before and the change to come; with no cause
    visible and every other probe objecting, it objects in every round but a change's."""
    texts = bench.workload("plateau then revision", random.Random(f"{seed}-plateau"))
    changes = [m for m in range(2, bench.ROUNDS + 1)
               if bench.claims(texts[m - 1]) != bench.claims(texts[m - 2])]
    last = changes[-1]
    said = bench.probes(texts, random.Random(seed), visible=1.0, false_alarm=0.0)
    assert [_objects(s) for s in said] == [
        n < last and n not in changes for n in range(1, bench.ROUNDS + 1)]
    said = bench.probes(texts, random.Random(seed), visible=0.0, false_alarm=1.0)
    assert all(_objects(s) for s in said)


@pytest.mark.parametrize("option", ["--visible", "--false-alarm", "--judge-error"])
def test_a_rate_out_of_range_is_a_clear_error(bench, option, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(BENCH), option, "1.5", "--seeds", "1"])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2
    assert f"{option} must be between 0 and 1" in capsys.readouterr().err


def test_only_and_variant_choose_the_strategies(bench):
    plans = bench.select(bench.strategies(True), only=["idealised embedding patience 2"],
                         variant="signal", judged_only=False)
    assert [p[0] for p in plans] == [
        "never stop (8 rounds)", "idealised embedding patience 2",
        "unless the probe objects: idealised embedding patience 2 (signal)"]


def test_a_missing_gguf_file_is_a_clear_error(bench, monkeypatch, capsys, tmp_path):
    missing = tmp_path / "no-such.gguf"
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--gguf-embeddings", str(missing)])
    with pytest.raises(SystemExit) as stopped:
        bench.main()
    assert stopped.value.code == 2
    assert f"--gguf-embeddings: no file at {missing}" in capsys.readouterr().err
