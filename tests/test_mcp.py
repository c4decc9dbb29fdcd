"""``dlg mcp``: driven by the MCP SDK's own client over stdio, ``dlg mcp`` started as a
subprocess on a store in a temporary folder, running modes on the echo model."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from dlg.cli import cli

SECRET = "hunter2-a-very-private-value"


@asynccontextmanager
async def dlg_mcp(tmp_path: Path, *args: str, model: str = "echo"
                  ) -> AsyncIterator[ClientSession]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DLG_")}
    env.update(DLG_DATA_DIR=str(tmp_path / "data"), DLG_CACHE_DIR=str(tmp_path / "cache"),
               DLG_DISABLE_PLUGIN_AUTOLOAD="1", DLG_MODES_PATH="",
               MY_SERVICE_TOKEN=SECRET)
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "dlg", "mcp", "--model", model, *args],
                                   env=env, cwd=str(tmp_path))
    with (tmp_path / "server.err").open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            yield session


def text(result: Any) -> str:
    return "".join(c.text for c in result.content if c.type == "text")


@pytest.mark.slow
async def test_an_mcp_client_runs_a_mode_with_progress_then_shows_exports_and_reads_it(
        tmp_path: Path) -> None:
    progress: list[tuple[float, float | None, str | None]] = []
    all_five = anyio.Event()

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))
        if len(progress) == 5:
            all_five.set()

    async with dlg_mcp(tmp_path) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert sorted(tools) == ["export_dialogue", "list_modes", "run_mode", "show_dialogue"]
        assert tools["run_mode"].input_schema["required"] == ["mode"]

        modes = {m["name"]: m for m in json.loads(text(await session.call_tool("list_modes")))}
        assert modes["detective"]["inputs"]["topic"]["required"] is True
        assert modes["detective"]["turns"] == 5

        topic = f"Who took the <script>alert(1)</script> tarts? ({SECRET})"
        ran = await session.call_tool("run_mode", {"mode": "detective",
                                                   "inputs": {"topic": topic}},
                                      progress_callback=on_progress)
        assert not ran.is_error, text(ran)
        out = text(ran)
        head = out.splitlines()[0]
        assert head.startswith("dialogue ") and " · detective · completed · 5/5 turns" in head
        dialogue_id = head.split()[1]
        # the model's answer comes back as text, as written (echo repeats the prompt)
        assert "<script>alert(1)</script>" in out
        assert SECRET not in out and "[REDACTED]" in out

        # a progress notification per turn, in order, naming the turn, never its text (the
        # client calls back in tasks of its own: the last may come after the result)
        with anyio.fail_after(60):
            await all_five.wait()
        assert [(p[0], p[1]) for p in progress] == [(n, 5) for n in range(1, 6)]
        assert progress[0][2] == "turn hypotheses (detective on echo): completed"
        assert all("<script>" not in (p[2] or "") for p in progress)

        shown = text(await session.call_tool("show_dialogue", {"dialogue_id": dialogue_id}))
        assert shown.splitlines()[0] == f"{dialogue_id} · detective · completed"
        assert "hypotheses" in shown and SECRET not in shown

        exported = await session.call_tool("export_dialogue", {"dialogue_id": dialogue_id[:12],
                                                               "format": "json"})
        record = json.loads(text(exported))
        assert record["id"] == dialogue_id and len(record["turns"]) == 5
        markdown = text(await session.call_tool("export_dialogue",
                                                {"dialogue_id": dialogue_id}))
        assert markdown.startswith("#") and SECRET not in markdown

        listed = [str(r.uri) for r in (await session.list_resources()).resources]
        assert listed == ["dlg://dialogues", f"dlg://dialogues/{dialogue_id}"]
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["dlg://dialogues/{dialogue_id}"]
        read = await session.read_resource(f"dlg://dialogues/{dialogue_id}")
        (content,) = read.contents
        assert content.mime_type == "application/json"
        assert json.loads(content.text)["turns"][0]["id"] == "hypotheses"
        assert SECRET not in content.text
        index = json.loads((await session.read_resource("dlg://dialogues")).contents[0].text)
        assert [r["id"] for r in index] == [dialogue_id]


@pytest.mark.slow
async def test_bad_calls_are_tool_errors_that_say_what_is_wrong(tmp_path: Path) -> None:
    async with dlg_mcp(tmp_path) as session:
        bad = await session.call_tool("run_mode", {"mode": "no-such-mode",
                                                   "inputs": {"topic": "x"}})
        assert bad.is_error
        assert text(bad) == ("Error executing tool run_mode: 'no-such-mode' is not a mode "
                             "list_modes lists: give one of its names")
        # a path (or "-", the protocol's own input) is no mode a client may name
        for path in ("/etc/passwd", "-", str(tmp_path / "mode.yaml")):
            refused = await session.call_tool("run_mode", {"mode": path})
            assert refused.is_error and "is not a mode list_modes lists" in text(refused)
        # nor may it send the prompts (and a provider's key) to a server of its choosing
        options = await session.call_tool("run_mode", {
            "mode": "debate", "inputs": {"topic": "x"},
            "model": "openai:gpt-4o?base_url=http://127.0.0.1:9/v1"})
        assert options.is_error and "'openai:gpt-4o' is given with options" in text(options)

        missing = await session.call_tool("run_mode", {"mode": "detective"})
        assert missing.is_error and "topic" in text(missing)

        unknown = await session.call_tool("show_dialogue", {"dialogue_id": "nope"})
        assert unknown.is_error
        assert text(unknown) == ("Error executing tool show_dialogue: no saved dialogue 'nope' "
                                 "(`dlg ls` lists them)")

        fmt = await session.call_tool("export_dialogue", {"dialogue_id": "nope",
                                                          "format": "docx"})
        assert fmt.is_error and "docx" in text(fmt)
        pdf = await session.call_tool("export_dialogue", {"dialogue_id": "nope",
                                                          "format": "pdf"})
        assert text(pdf) == ("Error executing tool export_dialogue: the pdf export is binary: "
                             "use `dlg export nope -f pdf --out FILE` instead")

        from mcp.shared.exceptions import MCPError

        with pytest.raises(MCPError, match="no saved dialogue 'nope'"):
            await session.read_resource("dlg://dialogues/nope")
    assert "Traceback" not in (tmp_path / "server.err").read_text()


@pytest.mark.slow
async def test_a_failed_run_is_a_tool_error_that_says_how_to_continue_it(tmp_path: Path
                                                                         ) -> None:
    async with dlg_mcp(tmp_path, model="echo?fail=always") as session:
        failed = await session.call_tool("run_mode", {"mode": "debate",
                                                      "inputs": {"topic": "tea"}})
        assert failed.is_error
        assert "failed: turn 'proposition' failed: echo?fail=always: RuntimeError: echo model " \
               "asked to fail;" in text(failed)
        listed = json.loads((await session.read_resource("dlg://dialogues")).contents[0].text)
        (saved,) = listed
        assert text(failed).endswith(f"; it is saved (`dlg resume {saved['id']}` continues it)")


def test_without_the_sdk_dlg_mcp_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    monkeypatch.setitem(sys.modules, "mcp_types", None)  # as where mcp 1.x is installed
    monkeypatch.delitem(sys.modules, "dlg.cli.mcp_server", raising=False)
    result = CliRunner().invoke(cli, ["mcp"], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.output == ("Error: dlg mcp needs the MCP SDK 2.x: pip install "
                             "'dlg-orchestrator[mcp]'\n")
