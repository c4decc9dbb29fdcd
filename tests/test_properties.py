"""Property tests: random valid modes round-trip; mutated ones fail cleanly."""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlg

IDS = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).map(lambda s: "t_" + s)
TEXT = st.text(alphabet=string.ascii_letters + " .,!?'\n", max_size=40)
SETTINGS = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2, allow_nan=False),
    "max_tokens": st.integers(1, 4000),
})


@st.composite
def modes(draw):
    n_phases = draw(st.integers(1, 3))
    ids = draw(st.lists(IDS, min_size=n_phases, max_size=8, unique=True))
    participants = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3,
                                 unique=True))
    inputs = {"topic": {"required": True}}
    if draw(st.booleans()):
        inputs["n"] = {"type": "integer", "default": draw(st.integers(0, 9))}
    # split ids into phases
    cuts = sorted(draw(st.lists(st.integers(1, len(ids) - 1), max_size=n_phases - 1,
                                unique=True))) if len(ids) > 1 else []
    groups = [ids[i:j] for i, j in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
    phases, earlier = [], []
    for pi, group in enumerate(groups):
        parallel = len(group) > 1 and draw(st.booleans())
        turns = []
        for k, tid in enumerate(group):
            readable = earlier + ([] if parallel else group[:k])
            turn = {"id": tid, "role": draw(TEXT.filter(str.strip)) or "r",
                    "participant": draw(st.sampled_from(participants)),
                    "prompt": draw(st.sampled_from([
                        "Talk about {{ topic }}", "Go on.", "{{ transcript }}\nNext."]))}
            if readable and draw(st.booleans()):
                chosen = draw(st.lists(st.sampled_from(readable), min_size=1, unique=True))
                turn["context_from"] = chosen
                if draw(st.booleans()):
                    turn["prompt"] += " {{ turns." + chosen[0] + " }}"
            elif draw(st.booleans()):
                turn["context_from"] = draw(st.sampled_from(["all", "previous", "none"]))
            if draw(st.booleans()):
                turn["settings"] = draw(SETTINGS)
            if draw(st.booleans()):
                turn["when"] = "topic != ''"
            turns.append(turn)
        phases.append({"id": f"p{pi}", "structure": "parallel" if parallel else "sequential",
                       "turns": turns})
        earlier += group
    mode = {"name": "gen", "inputs": inputs, "participants": {p: None for p in participants}}
    if len(phases) == 1 and draw(st.booleans()):
        mode.update(structure=phases[0]["structure"], turns=phases[0]["turns"])
    else:
        mode.update(structure="mixed", phases=phases)
    return mode


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(modes())
def test_valid_modes_round_trip_through_load_resolve_dump(data):
    mode = dlg.load_mode(data)
    dumped = mode.to_dict()
    again = dlg.load_mode(json.loads(json.dumps(dumped)))
    assert again == mode
    assert again.to_dict() == dumped
    assert [t.index for t in mode.turns] == list(range(1, len(mode.turns) + 1))


@settings(max_examples=30, deadline=None)
@given(modes())
def test_valid_modes_run_on_echo(data):
    d = dlg.run_sync(data, topic="x", model="echo")
    assert d.status == "completed"
    assert all(t.status in ("completed", "skipped") for t in d.turns)


def _mutations(data):
    """Ways a hand-edited mode goes wrong."""
    return st.one_of(
        st.tuples(st.just("drop_key"), st.sampled_from(["name", "role", "id", "prompt"])),
        st.tuples(st.just("retype"), st.sampled_from([None, 3, "x", [], {}, True, 1.5])),
        st.tuples(st.just("unknown_key"), TEXT),
        st.tuples(st.just("bad_ref"), IDS),
        st.tuples(st.just("bad_var"), IDS),
    )


def _apply(data, mutation, target):
    kind, value = mutation
    turns = data.get("turns") or [t for p in data["phases"] for t in p["turns"]]
    turn = turns[target % len(turns)]
    if kind == "drop_key":
        (turn if value != "name" else data).pop(value, None)
    elif kind == "retype":
        key = ["role", "prompt", "participant", "context_from", "settings", "when"][target % 6]
        turn[key] = value
    elif kind == "unknown_key":
        turn["x_" + str(abs(hash(value)) % 1000)] = value
    elif kind == "bad_ref":
        turn["context_from"] = [value + "_missing"]
    elif kind == "bad_var":
        turn["prompt"] = "{{ " + value + "_undefined }}"


@settings(max_examples=150, deadline=None)
@given(modes(), st.data())
def test_mutated_modes_give_clean_errors(data, draw):
    mutation = draw.draw(_mutations(data))
    _apply(data, mutation, draw.draw(st.integers(0, 100)))
    try:
        dlg.load_mode(data)
    except dlg.ModeError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.message and p.path.startswith("$")
        assert "Traceback" not in str(exc)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_crashes_the_loader(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("m") / "mode.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        dlg.load_mode(path, use_cache=False)
    except dlg.ModeError as exc:
        assert exc.problems and exc.problems[0].file


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=0, max_value=4_102_444_800_000_000))  # to the year 2100
def test_times_round_trip_through_iso_8601_exactly(micros):
    # what record.now() makes: whole microseconds over 10**6
    from dlg.records.stamps import from_iso, iso

    ts = micros / 1_000_000
    assert from_iso(iso(ts)) == ts


@settings(max_examples=800, deadline=None)
@given(st.one_of(
    st.integers(min_value=0, max_value=253_402_300_799_999_999).map(lambda u: u / 1_000_000),
    st.floats(min_value=-1e11, max_value=2.6e11, allow_nan=False)))
def test_times_are_written_as_datetime_writes_them(ts):
    # the quick formatting (the second's text made once) against datetime's isoformat
    from dlg.records.stamps import _iso_known, _iso_slow

    try:
        expected = _iso_slow(ts)
    except (OverflowError, ValueError, OSError):  # out of datetime's range either way
        return
    assert _iso_known(ts) == expected
