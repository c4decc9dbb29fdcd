"""dlg-shout: an example plugin. A model that shouts, a mode that uses it, a CSV exporter."""

from __future__ import annotations

import csv
import io
from importlib.resources import files

from dlg.plugin import hookimpl


def _shout_model(model_name, options):
    # imported here, not at the top, so that loading the plugin stays cheap
    from .model import ShoutChatModel

    return ShoutChatModel()


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
