"""dlg-shout: an example plugin. A model that shouts, a mode that uses it, a CSV exporter."""

from __future__ import annotations

import csv
import io
from importlib.resources import files

from dlg import hookimpl


def _shout_model(model_name, options):
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage

    class Shout(GenericFakeChatModel):
        async def ainvoke(self, messages, *args, **kwargs):
            text = str(messages[-1].content).split("\n\n")[-1].upper() + "!"
            return AIMessage(content=text, usage_metadata={
                "input_tokens": 3, "output_tokens": 2, "total_tokens": 5})

    return Shout(messages=iter(()))


class CsvExporter:
    name = "csv"
    extension = "csv"
    description = "One row per turn"

    def export(self, dialogue):
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["index", "id", "model", "tokens", "response"])
        for t in dialogue.turns:
            writer.writerow([t.index, t.id, t.model, t.usage.total, t.response])
        return buf.getvalue()


@hookimpl
def register_models(register):
    register("shout", _shout_model, description="Answers in capitals")


@hookimpl
def register_modes(register):
    register("rally", files("dlg_shout").joinpath("rally.yaml"))


@hookimpl
def register_exporters(register):
    register(CsvExporter())
