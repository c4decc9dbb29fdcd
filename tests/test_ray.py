"""``dlg batch --executor ray``: a batch on a local Ray cluster, saving to a real
PostgreSQL server, as workers on several machines would."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import dlg
from dlg.cli import cli

from .servers import FakeOpenAI, LimitedOpenAI

# over a minute together on 2 cores: .ci/run runs them (pytest -m long), the README command not
pytestmark = [pytest.mark.slow, pytest.mark.long]
ray = pytest.importorskip("ray")

MODE = {"name": "pair", "inputs": {"topic": {"required": True}},
        "turns": [{"id": "a", "role": "A", "prompt": "TURN a {{ topic }}"},
                  {"id": "b", "role": "B", "prompt": "TURN b {{ topic }}"}]}




def test_a_batch_runs_on_ray_workers_and_saves_to_postgres(tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv("DLG_POSTGRES_URL", pg_url)
    monkeypatch.setenv("DLG_STORE", "postgres")
    mode = tmp_path / "pair.json"
    # a template the mode includes from its folder reaches the workers with the mode
    (tmp_path / "part.j2").write_text("PART {{ topic }}")
    mode.write_text(json.dumps({**MODE, "turns": [
        *MODE["turns"][:1], {**MODE["turns"][1], "prompt": "{% include 'part.j2' %}"}]}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"topic": f"t{i}"}) + "\n" for i in range(6)))
    runner = CliRunner()
    ran = runner.invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                              "--executor", "ray", "-c", "2", "--id", "rb", "--json",
                              "--max-cost", "1"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.output[ran.output.index("{"):])
    assert summary["totals"]["statuses"] == {"completed": 6}
    assert summary["totals"]["turns"] == 12
    import os
    import socket

    workers = {i["worker"] for i in summary["items"]}
    assert all(w.startswith(socket.gethostname() + ":") for w in workers)
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # not in this process
    # the workers saved every dialogue to the one PostgreSQL store, with its budget
    saved = dlg.load_dialogue("rb-00004")
    assert saved.status == "completed" and saved.inputs == {"topic": "t4"}
    assert saved.metadata["budget"]["max_cost"] == 1
    assert saved.turns[1].prompt.endswith("PART t4")
    assert not ray.is_initialized()  # the local cluster started for the batch is gone
    # the batch resumes as a whole from the store, on Ray again: nothing is run twice
    again = runner.invoke(cli, ["batch", "--resume", "rb", "--executor", "ray", "--json"])
    assert again.exit_code == 0, again.output
    data = json.loads(again.output[again.output.index("{"):])
    assert all(i["skipped"] for i in data["items"])


def test_models_given_as_objects_cannot_go_to_ray_workers():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    with pytest.raises(dlg.DlgError, match="give models as specs"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model=FakeListChatModel(responses=["a"]),
                       executor="ray", store=None)


def test_a_literal_key_is_never_sent_to_workers():
    with pytest.raises(dlg.DlgError, match="holds a secret, which is never sent"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="openai:gpt-4o?api_key=sk-live-123456789",
                       executor="ray", store=None)


# -- what a worker on another machine gets -------------------------------------------------


def _mode_with_includes(folder):
    (folder / "part.j2").write_text("PART {{ topic }} {% include 'sub/inner.j2' %}")
    (folder / "sub").mkdir()
    (folder / "sub" / "inner.j2").write_text("INNER")
    path = folder / "m.json"
    path.write_text(json.dumps({**MODE, "turns": [
        {"id": "a", "role": "A", "prompt": "{% include 'part.j2' %}"}]}))
    return dlg.load_mode(path)


def test_a_mode_goes_to_workers_with_the_templates_it_includes_from_its_folder(tmp_path):
    from dlg.language.templates import own_templates

    mode = _mode_with_includes(tmp_path)
    assert own_templates(mode) == {"part.j2": "PART {{ topic }} {% include 'sub/inner.j2' %}",
                                   "sub/inner.j2": "INNER"}
    # dlg's own templates are on every machine already
    builtin = dlg.load_mode({**MODE, "turns": [
        {"id": "a", "role": "A", "prompt": "{% include 'partials/transcript.j2' %}"}]})
    assert own_templates(builtin) == {}


def test_a_worker_runs_the_mode_without_its_folder(tmp_path, monkeypatch):
    import shutil

    from dlg.language.templates import own_templates
    from dlg.plugins.ray_executor import _run_one

    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "modes"
    folder.mkdir()
    mode = _mode_with_includes(folder)
    document, templates = mode.to_dict(), own_templates(mode)
    shutil.rmtree(folder)  # as on a machine that never had it
    item = {"index": 0, "inputs": {"topic": "x"}, "dialogue_id": "w-1"}
    result = _run_one(document, templates, item, {"model": "echo"}, "sqlite",
                      "/where/the/batch/started/m.json")
    assert result["status"] == "completed", result
    saved = dlg.load_dialogue("w-1")
    assert saved.turns[0].prompt == "PART x INNER"
    # where the mode came from, for dlg resume where the batch started
    assert saved.mode_source == "/where/the/batch/started/m.json"


@pytest.mark.parametrize("name", ["../evil.j2", "/etc/evil.j2", "a/../../evil.j2",
                                  "a\\..\\evil.j2", ""])
def test_a_worker_refuses_template_names_that_lead_out_of_its_folder(tmp_path, name):
    from dlg.plugins.ray_executor import _write_files

    with pytest.raises(dlg.DlgError, match="not a plain relative path"):
        _write_files({name: "x"}, str(tmp_path / "t"))
    assert not (tmp_path / "evil.j2").exists()


# -- reaching the cluster ---------------------------------------------------------------------


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}"])
def test_a_cluster_address_nothing_answers_at_is_refused_at_once(form, monkeypatch):
    address = form.format(port=_closed_port())
    monkeypatch.setenv("DLG_RAY_ADDRESS", address)
    with pytest.raises(dlg.DlgError, match=f"cannot reach the Ray cluster at {address}"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="echo", executor="ray", store=None)
    assert not ray.is_initialized()


def test_rays_own_failure_to_start_is_a_dlg_error(monkeypatch):
    def refuse(**options):
        raise ValueError("Ray Client requires pip package `ray[client]`.\nmore")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(dlg.DlgError, match=r"could not start Ray: ValueError: Ray Client "
                                           r"requires pip package `ray\[client\]`.$"):
        dlg.batch_sync(MODE, [{"topic": "x"}], model="echo", executor="ray", store=None)


def test_addresses_ray_resolves_itself_are_not_probed():
    from dlg.plugins.ray_executor import _check_reachable

    for address in ("auto", "local", "http://head:8265"):
        _check_reachable(address)  # nothing to probe: no error


def test_a_worker_runs_modes_spawned_by_path_without_their_folder(tmp_path, monkeypatch):
    import shutil

    from dlg.language.templates import own_templates
    from dlg.plugins.ray_executor import _run_one
    from dlg.running.subdialogues import spawned_files

    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "modes"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "inner.j2").write_text("INNER {{ topic }}")
    (folder / "sub" / "child.yaml").write_text(
        "name: child\ninputs: {topic: {required: true}}\n"
        "turns:\n  - {id: c, role: C, prompt: \"{% include 'inner.j2' %}\"}\n")
    (folder / "m.yaml").write_text(
        "name: m\ninputs: {topic: {}}\nturns:\n  - id: s\n    role: S\n    prompt: go\n"
        "    spawn: {mode: sub/child.yaml, max_children: 1}\n")
    mode = dlg.load_mode(folder / "m.yaml")
    files = {**own_templates(mode), **spawned_files(mode)}
    assert sorted(files) == ["sub/child.yaml", "sub/inner.j2"]
    document = mode.to_dict()
    shutil.rmtree(folder)  # as on a machine that never had it
    item = {"index": 0, "inputs": {"topic": "x"}, "dialogue_id": "w-2"}
    result = _run_one(document, files, item, {"model": "echo"}, "sqlite")
    assert result["status"] == "completed", result
    (child,) = dlg.load_dialogue("w-2").subdialogues
    assert child.status == "completed" and child.turns[0].prompt.startswith("INNER ")


def test_spawned_modes_that_spawn_each_other_are_sent_once(tmp_path):
    from dlg.running.subdialogues import spawned_files

    spawn = "turns:\n  - id: s\n    role: S\n    prompt: go\n    spawn: {mode: %s}\n"
    (tmp_path / "a.yaml").write_text("name: a\n" + spawn % "b.yaml")
    (tmp_path / "b.yaml").write_text("name: b\n" + spawn % "a.yaml")
    assert sorted(spawned_files(dlg.load_mode(tmp_path / "a.yaml"))) == ["a.yaml", "b.yaml"]


def test_a_batch_on_ray_never_spends_past_its_max_total_cost(tmp_path, pg_url, monkeypatch):
    """The driver keeps the total: each task goes with a share of what is left, and
    what it did not spend comes back when it ends."""
    monkeypatch.setenv("DLG_POSTGRES_URL", pg_url)
    monkeypatch.setenv("DLG_STORE", "postgres")
    registry = tmp_path / "prices.yaml"  # echo at $1,000 a million tokens, on the workers too
    registry.write_text("models:\n  echo:\n    price: {input: 1000, output: 1000}\n")
    monkeypatch.setenv("DLG_REGISTRY", str(registry))
    mode = tmp_path / "pair.json"
    mode.write_text(json.dumps({**MODE, "settings": {"max_tokens": 20}}))
    result = dlg.batch_sync(str(mode), [{"topic": f"t{i}"} for i in range(24)],
                            model="echo", executor="ray", concurrency=3, batch_id="rt",
                            max_total_cost=0.3)  # a dialogue costs $0.02: 15 fit at most
    spent = sum(dlg.load_dialogue(i.dialogue_id).total_cost_usd for i in result.items
                if i.status != "cost_limited" or not i.error.startswith("not started"))
    assert 0 < spent <= 0.3 + 1e-9
    assert result.totals["cost_usd"] == pytest.approx(spent)
    assert sum(i.spent_usd for i in result.items) == pytest.approx(spent)  # from workers
    assert result.totals["statuses"].get("completed", 0) >= 3 and not result.ok
    cut = [i for i in result.items if i.status == "cost_limited"]
    assert cut and all("the batch's $0.3 max total cost" in i.error for i in cut)


def test_a_task_that_fails_on_its_worker_fails_its_dialogue_not_the_batch(tmp_path,
                                                                          monkeypatch):
    """A file name the worker refuses (a backslash: a Windows separator) makes the task
    itself raise, outside the dialogue: each row fails with a one-line reason, the batch
    ends with its summary, and there is no traceback."""
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "modes"
    folder.mkdir()
    (folder / "odd\\name.j2").write_text("ODD")
    mode = folder / "m.json"
    mode.write_text(json.dumps({**MODE, "turns": [
        {"id": "a", "role": "A", "prompt": "{% if topic == 'x' %}{% include 'odd\\\\name.j2' %}"
                                           "{% else %}plain{% endif %}"}]}))
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"topic": "x"}\n{"topic": "y"}\n')
    ran = CliRunner().invoke(cli, ["batch", str(mode), "--inputs", str(rows), "-m", "echo",
                                   "--executor", "ray", "--json", "-q"])
    assert ran.exit_code == 1, ran.output
    assert "Traceback" not in ran.output
    items = json.loads(ran.output[ran.output.index("{"):ran.output.rindex("}") + 1])["items"]
    assert {i["status"] for i in items} == {"failed"}  # the file goes with every task
    assert all(i["error"].startswith("the Ray task failed: DlgError: the batch sent a file "
                                     "named 'odd\\\\name.j2'") for i in items), items


# -- a real HTTP provider, more rows than workers, a worker killed ---------------------------


def _asked(server: FakeOpenAI) -> list[str]:
    """What each request asked: its last message's last line, in the order they came."""
    return [str(r["body"]["messages"][-1]["content"]).splitlines()[-1]
            for r in server.requests]


def test_rows_past_the_first_wave_run_on_reused_workers(tmp_path, monkeypatch):
    """Six rows two at a time on an OpenAI-compatible server that keeps connections
    alive, as real ones do: each worker runs several rows. The second wave's rows failed
    with "Event loop is closed" (their model's HTTP client, shared across the worker
    process, held connections of the first wave's loop); then each row set up its
    orchestrator, mode, store and models afresh, in an event loop of its own."""
    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no fallback could go anywhere
    with FakeOpenAI(keep_alive=True) as server:
        spec = f"openai-compatible:m?base_url={server.base_url}"
        result = dlg.batch_sync(MODE, [{"topic": f"t{i}"} for i in range(6)], model=spec,
                                executor="ray", concurrency=2, batch_id="rw")
    assert result.totals["statuses"] == {"completed": 6}, [i.error for i in result.items]
    workers = {i.worker for i in result.items}
    assert len(workers) < 6  # some worker ran more than one
    assert sorted(_asked(server)) == sorted(f"TURN {t} t{i}" for i in range(6) for t in "ab")
    # each worker set up once: one model, whose connection its later rows used again (a
    # row set up from scratch made its own model, and opened a connection of its own)
    assert len({r["peer"] for r in server.requests}) <= len(workers)


def _kill_the_holder(database, dialogue_id: str, asked) -> None:
    """Once ``asked`` is set (the dialogue's turn is in flight), SIGKILL the process that
    holds the dialogue's lease: the Ray worker running it."""
    import os
    import signal
    import sqlite3
    import time

    assert asked.wait(300)
    for _ in range(600):
        with sqlite3.connect(database) as conn:
            row = conn.execute("SELECT lease FROM dlg_leases WHERE dialogue_id = ?",
                               (dialogue_id,)).fetchone()
        if row is not None:
            os.kill(json.loads(row[0])["pid"], signal.SIGKILL)
            return
        time.sleep(0.1)
    raise AssertionError(f"no lease for {dialogue_id}")


def test_a_worker_killed_mid_batch_leaves_honest_rows_that_resume(tmp_path, monkeypatch):
    """The worker running row 1 is killed with SIGKILL while its second turn waits on
    the server: the row says the turn it saved (it said ``failed``, 0 turns), the
    dialogue reads ``interrupted`` (it stayed ``running``), the other rows complete, and
    ``dlg batch --resume`` finishes it without asking for the saved turn again."""
    import threading

    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    asked = threading.Event()

    def choose(body):
        last = str(body["messages"][-1]["content"]).splitlines()[-1]
        if last == "TURN b t1" and not asked.is_set():
            asked.set()
            return "hang:600"  # until its worker is killed (the thread is left behind)
        return None

    with FakeOpenAI(keep_alive=True, choose=choose) as server:
        spec = f"openai-compatible:m?base_url={server.base_url}"
        killer = threading.Thread(target=_kill_the_holder, daemon=True, args=(
            tmp_path / "data" / "dialogues.sqlite3", "rk-00001", asked))
        killer.start()
        result = dlg.batch_sync(MODE, [{"topic": f"t{i}"} for i in range(4)], model=spec,
                                executor="ray", concurrency=2, batch_id="rk")
        killer.join()
        row = result.items[1]
        assert (row.status, row.turns) == ("interrupted", 1), row
        assert row.error.startswith("the Ray task failed: "), row.error
        assert row.error.endswith("`dlg batch --resume rk` continues it"), row.error
        assert [i.status for i in result.items] == [
            "completed", "interrupted", "completed", "completed"]
        saved = dlg.load_dialogue("rk-00001")
        assert saved.status == "interrupted" and saved.error == row.error
        assert saved.turns[0].status == "completed"
        assert [t.status for t in saved.turns[1:]] != ["completed"]  # b did not answer
        assert {s["id"]: s["status"] for s in dlg.list_dialogues()}["rk-00001"] == "interrupted"

        again = CliRunner().invoke(cli, ["batch", "--resume", "rk", "--executor", "ray",
                                         "--json", "-q"])
        assert again.exit_code == 0, again.output
    data = json.loads(again.output[again.output.index("{"):])
    assert data["totals"]["statuses"] == {"completed": 4}
    assert data["totals"]["turns"] == 8
    asked_for = _asked(server)
    assert asked_for.count("TURN b t1") == 2  # the one in flight when its worker died
    assert sorted(set(asked_for)) == sorted(f"TURN {t} t{i}" for i in range(4) for t in "ab")
    assert len(asked_for) == 9  # nothing else was asked twice


def test_ray_workers_keep_to_one_rate_limit_together(tmp_path, monkeypatch):
    """Three workers calling a model whose limit is given (10 requests a second, as
    ``rpm=600``): one schedule for all of them (the batch's actor), so the server is
    almost never refused. Each worker pacing to the whole limit alone sent up to three
    times the rate, and the server refused several (6 when this test was written)."""
    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    with LimitedOpenAI(requests=10, window=1.0) as server:
        spec = f"openai-compatible:m?base_url={server.base_url}&rpm=600"
        result = dlg.batch_sync(MODE, [{"topic": f"t{i}"} for i in range(15)], model=spec,
                                executor="ray", concurrency=3, batch_id="rl")
    assert result.totals["statuses"] == {"completed": 15}, [i.error for i in result.items]
    assert len({i.worker for i in result.items}) > 1
    assert server.refused <= 1, (server.refused, len(server.requests))


def test_batches_on_one_ray_keep_one_rate_limit(tmp_path, monkeypatch):
    """Two batches one after the other on a Ray this process started: the second keeps
    to the limit on the schedule the first left (one limits actor for the process's
    batches, not a new one per batch: each took a process start, about a second on 2
    busy cores, before its first call), and the limit is kept across both."""
    import os

    pytest.importorskip("langchain_openai")
    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        name, seen = f"dlg-limits-{os.getpid()}", []
        with LimitedOpenAI(requests=10, window=1.0) as server:
            spec = f"openai-compatible:m?base_url={server.base_url}&rpm=600"
            for batch in ("k1", "k2"):
                result = dlg.batch_sync(MODE, [{"topic": f"t{i}"} for i in range(6)],
                                        model=spec, executor="ray", concurrency=2,
                                        batch_id=batch)
                assert result.totals["statuses"] == {"completed": 6}
                seen.append(ray.get_actor(name)._actor_id)  # alive after the batch
        assert seen[0] == seen[1]
        assert server.refused <= 1, (server.refused, len(server.requests))
    finally:
        from dlg.plugins import ray_executor

        ray_executor._KEPT.clear()
        ray.shutdown()


# -- a worker process keeps its set-up from row to row (in this process, as on a worker) ----


def _row(i: int, batch: str = "wk") -> dict:
    return {"index": i, "inputs": {"topic": f"t{i}"}, "dialogue_id": f"{batch}-{i:05d}"}


def test_a_worker_sets_up_once_for_its_rows(tmp_path, monkeypatch):
    """Three rows on one worker: one orchestrator, one mode, one model, so one HTTP
    connection (each row made its own, in an event loop of its own)."""
    pytest.importorskip("langchain_openai")
    from dlg.plugins.ray_executor import _run_one

    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    with FakeOpenAI(keep_alive=True) as server:
        options = {"model": f"openai-compatible:m?base_url={server.base_url}"}
        for i in range(3):
            assert _run_one(MODE, {}, _row(i), options, "sqlite")["status"] == "completed"
    assert len(server.requests) == 6
    assert len({r["peer"] for r in server.requests}) == 1


def test_a_rows_exception_leaves_its_worker_running_the_next(tmp_path, monkeypatch):
    """A row whose run raises outside its dialogue fails that row's task; the worker's
    event loop and set-up serve its next row."""
    import dlg.plugin
    from dlg.plugins.ray_executor import _run_one

    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    real = dlg.plugin.run_item

    async def broken(orchestrator, mode, item, within=None):
        if item.index == 1:
            raise RuntimeError("the store's disk went away")
        return await real(orchestrator, mode, item, within)

    monkeypatch.setattr(dlg.plugin, "run_item", broken)
    assert _run_one(MODE, {}, _row(0), {"model": "echo"}, "sqlite")["status"] == "completed"
    with pytest.raises(RuntimeError, match="disk went away"):
        _run_one(MODE, {}, _row(1), {"model": "echo"}, "sqlite")
    assert _run_one(MODE, {}, _row(2), {"model": "echo"}, "sqlite")["status"] == "completed"
    assert dlg.load_dialogue("wk-00002").status == "completed"


def test_a_set_up_that_failed_is_not_kept(tmp_path, monkeypatch):
    """A mode whose files the worker refuses fails each of its rows, and the same mode
    with files it accepts runs: a failed set-up is not kept for the next row."""
    from dlg.plugins.ray_executor import _run_one

    monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / "data"))
    for _ in range(2):
        with pytest.raises(dlg.DlgError, match="not a plain relative path"):
            _run_one(MODE, {"../x.j2": "X"}, _row(0), {"model": "echo"}, "sqlite")
    result = _run_one(MODE, {"x.j2": "X"}, _row(0), {"model": "echo"}, "sqlite")
    assert result["status"] == "completed", result


def test_a_worker_closes_the_stores_it_no_longer_keeps(tmp_path, monkeypatch):
    """Rows of more set-ups than a worker keeps (each data folder a store of its own):
    the set-ups it let go of kept their stores open, a connection each for the worker's
    life. Each is closed when let go of, and the rest when the worker exits."""
    from dlg.plugins import sqlite_store
    from dlg.plugins.ray_executor import _run_one, _Worker

    opened: list = []
    made = sqlite_store.SqliteStore.__init__

    def watched(self, *args, **kwargs):
        made(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(sqlite_store.SqliteStore, "__init__", watched)
    monkeypatch.setattr(_Worker, "_here", None)  # a worker process of this test's own
    rows = _Worker.KEEP + 2
    for i in range(rows):
        monkeypatch.setenv("DLG_DATA_DIR", str(tmp_path / f"data{i}"))
        assert _run_one(MODE, {}, _row(i), {"model": "echo"}, "sqlite")["status"] == "completed"
        assert opened[i]._conn is not None  # it saved the row
    assert len(opened) == rows
    assert [s._conn is None for s in opened] == [True] * 2 + [False] * _Worker.KEEP
    _Worker.here().close()  # the worker exits (atexit)
    assert all(s._conn is None for s in opened)
