"""bench/bench_compression.py builds its harder kinds as its docstring says: the
``split_named`` needle is ``split_unlisted``'s with a person named in the introducing
sentence, and adding it changed no other kind's seeds."""

from __future__ import annotations

import re

import pytest

from tests.bench_support import BENCHES, load_bench

BENCH = BENCHES / "bench_compression.py"


@pytest.fixture
def bench(monkeypatch):
    return load_bench("bench_compression", monkeypatch)


def test_split_named_introduces_the_fact_with_a_person_and_an_unlisted_opening(bench):
    from dlg.running.selection import _holds, chunks

    assert bench.HARD[-1] == "split_named"  # last: the other kinds' seeds are unchanged
    pair = re.compile(r"The ([a-z ]+) (weight|cost|headcount|length) was finally checked by "
                      r"([A-Z][a-z]+ [A-Z][a-z]+)\. (Scales showed|Final count:|Checked "
                      r"twice:) (\d{1,2},\d{3}) (kg|EUR|people|km)\.")
    for seed in (1, 2, 3):
        sc = bench.hard_scenario(seed, "split_named")
        text = "\n".join(sc["notes"])
        found = pair.findall(text)
        assert len(found) == bench.NEEDLES, seed
        asked = [fact for ask in sc["asks"] for fact, _ in ask]
        assert sorted(asked) == sorted(f[4] for f in found)
        for thing, measure, name, then, value, unit in found:
            intro, fact = chunks(f"The {thing} {measure} was finally checked by {name}. "
                                 f"{then} {value} {unit}.")
            assert _holds(intro) == {"name"} and "number" in _holds(fact)  # two sentences
            question = next(q for f, q in (p for ask in sc["asks"] for p in ask) if f == value)
            assert thing in question and value not in question
            assert name.split()[0] in bench.FIRST and name.split()[1] in bench.LAST


def test_split_unlisted_is_unchanged_by_the_new_kind(bench):
    """The bench's own ``split_unlisted``: the introduction holds no fact (no name)."""
    from dlg.running.selection import _holds

    sc = bench.hard_scenario(1, "split_unlisted")
    intros = re.findall(r"The [a-z ]+ \w+ was finally checked by the team\.",
                        " ".join(sc["notes"]))
    assert len(intros) == bench.NEEDLES and all(not _holds(i) for i in intros)
