"""The ``dlg`` group and what every command shares: errors, options, helpers.

Exit codes: 0 done, 1 the dialogue failed (or a store failed), 2 bad usage or an invalid
mode, 130 interrupted."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from dlg._version import __version__
from dlg.cli.terminal import echo, is_terminal, visible, write_bytes
from dlg.errors import (
    DlgError,
    InputError,
    ModeError,
    ModelError,
    UnknownExporterError,
)

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class DlgClickError(click.ClickException):
    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click's default is per class

    def format_message(self) -> str:
        # the message may quote a model's error or the user's input: shown, not obeyed
        return visible(self.message) if is_terminal(sys.stderr) else self.message


class Amount(click.ParamType):
    """A finite number of ``unit`` more than 0 (or at least 0, with ``zero``): click's
    ``FloatRange`` lets NaN through, which passes every comparison and limits nothing."""

    name = "number"

    def __init__(self, unit: str, *, zero: bool = False):
        self.unit, self.zero = unit, zero

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        from dlg.language.limits import positive

        try:
            number = positive(value, "it", self.unit, zero=self.zero)
        except InputError:  # said as click says what is wrong with an option's value
            self.fail(f"{value!r} is not a finite number of {self.unit} "
                      f"{'of at least 0' if self.zero else 'more than 0'}", param, ctx)
        assert number is not None  # an option's value is never None here
        return number


def _fail(exc: DlgError, *, all_errors: bool = False) -> DlgClickError:
    if isinstance(exc, ModeError):
        return DlgClickError(exc.format(all_problems=all_errors), EXIT_USAGE)
    from dlg.records.store import DialogueNotFoundError

    code = EXIT_USAGE if isinstance(exc, InputError | ModelError | UnknownExporterError
                                    | DialogueNotFoundError) else EXIT_FAILED
    return DlgClickError(str(exc), code)


# the built-in commands and the ``dlg.cli`` module of each: a module is imported when
# one of its commands is asked for (or the list is shown), so ``dlg run`` does not import
# the others to start
BUILTIN_COMMANDS = {"run": "run", "resume": "run", "batch": "batch", "ls": "saved",
                    "show": "saved", "export": "saved", "rm": "saved", "models": "models",
                    "modes": "modes", "plugins": "plugins", "rate": "routing",
                    "routing": "routing", "mcp": "mcp", "serve": "serve"}


class DlgGroup(click.Group):
    """Turns dlg's own errors into click's ``Error: ...`` form, never a traceback.

    The top-level group also holds the commands plugins add (``register_commands``),
    loaded only when a command name is not a built-in one or the list is shown, so
    ``dlg run`` does not import every plugin to start.
    """

    _loaded_for: Any = None  # the plugin manager whose commands are added
    _builtin: dict[str, click.Command] | None = None

    @property
    def _plugin_commands_loaded(self) -> bool:
        from dlg.plugin_manager import current_plugin_manager

        return self._loaded_for is not None and self._loaded_for is current_plugin_manager()

    def _load_plugin_commands(self) -> None:
        if self.name != "cli" or self._plugin_commands_loaded:
            return
        from dlg.errors import PluginError
        from dlg.plugin_manager import get_plugin_manager
        from dlg.running.events import call_hook

        if self._builtin is None:
            self._load_builtin()
            self._builtin = dict(self.commands)
        builtin = self._builtin
        self.commands = dict(builtin)  # the commands of an earlier plugin manager go
        pm = self._loaded_for = get_plugin_manager()
        for who, _ in call_hook(pm, "register_commands", cli=self):
            clobbered = [n for n, c in builtin.items() if self.commands.get(n) is not c]
            if clobbered:
                self.commands.update(builtin)
                raise PluginError(f"{who} replaced the built-in command '{clobbered[0]}': "
                                  "give the plugin's command another name")

    def _load_builtin(self, name: str | None = None) -> None:
        """Import the module of the built-in command ``name`` (of every one: None)."""
        if self.name != "cli":
            return
        import importlib

        for module in {BUILTIN_COMMANDS[name]} if name else set(BUILTIN_COMMANDS.values()):
            importlib.import_module(f"dlg.cli.{module}")

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in BUILTIN_COMMANDS and cmd_name not in self.commands:
            self._load_builtin(cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._plugin_commands_loaded:
            self._load_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_builtin()
        try:
            self._load_plugin_commands()
        except DlgError as exc:
            echo(f"warning: {exc}", err=True)
        return super().list_commands(ctx)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DlgError as exc:
            if ctx.find_root().params.get("traceback"):
                raise
            raise _fail(exc, all_errors=bool(ctx.meta.get("dlg.all_errors"))) from None
        except KeyboardInterrupt:
            echo("\nInterrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=DlgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dlg")
@click.option("--traceback", is_flag=True, help="Show Python tracebacks for dlg's errors.")
@click.option("--registry", type=click.Path(exists=True, dir_okay=False), envvar="DLG_REGISTRY",
              help="A model registry file adding or overriding models (or DLG_REGISTRY).")
@click.option("--log-json", is_flag=True, default=None,
              help="Structured logs: JSON lines on stderr (or DLG_LOG=json).")
@click.option("--log-level", metavar="LEVEL",
              help="DEBUG, INFO, WARNING or ERROR (or DLG_LOG_LEVEL); default ERROR, "
                   "as the progress display reports failures and fallbacks, or INFO "
                   "with --log-json.")
@click.pass_context
def cli(ctx: click.Context, traceback: bool, registry: str | None, log_json: bool | None,
        log_level: str | None) -> None:
    """Run multi-model dialogues described by modes (YAML or JSON)."""
    ctx.obj = {"registry": registry}
    from dlg.observability.logs import configure

    if log_json is None:
        log_json = os.environ.get("DLG_LOG", "").lower() == "json"
    if log_level is None and not log_json and not os.environ.get("DLG_LOG_LEVEL"):
        log_level = "ERROR"  # the progress display already reports failures and fallbacks
    try:
        configure(json_lines=log_json, level=log_level)
    except DlgError as exc:  # a level that is not one
        raise DlgClickError(str(exc), EXIT_USAGE) from None
    if log_level == "ERROR":  # plugins' set-up warnings have no progress line to show them
        import logging

        logging.getLogger("dlg.plugins").setLevel(logging.WARNING)


def main() -> None:
    cli(prog_name="dlg")




def _format_for(fmt: str | None, out: str | None) -> str | None:
    """The export format: as given, else from --out's extension (any an exporter
    declares; json for a file without one, or a folder); an extension no exporter writes
    is refused, not written as JSON. An --out that cannot be written (its folder missing
    or read-only) is refused here, before a dialogue runs and is paid for."""
    if out is not None:
        _check_out(out)
    if fmt is not None and out is None and is_terminal(sys.stdout):
        from dlg.records.export import get_exporter

        if getattr(get_exporter(fmt), "binary", False):
            raise _binary_to_terminal(fmt)
    if fmt is not None or out is None:
        return fmt
    if os.path.isdir(out):  # a file per dialogue goes in it: json unless told
        return "json"
    from dlg.errors import UnknownExporterError
    from dlg.records.export import format_for_path

    try:
        return format_for_path(out) or "json"
    except UnknownExporterError as exc:
        raise DlgClickError(f"--out {out}: {exc}; name the format with --format (-f)",
                            EXIT_USAGE) from None


def _binary_to_terminal(fmt: str) -> DlgClickError:
    return DlgClickError(f"the {fmt} export is binary and would be written to the terminal: "
                         "give --out FILE, or send it to a file (> FILE)", EXIT_USAGE)


def _check_out(out: str) -> None:
    target = out if os.path.isdir(out) else os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(target):
        raise DlgClickError(f"--out {out}: the folder {target} does not exist", EXIT_USAGE)
    if not os.access(target, os.W_OK | os.X_OK):
        raise DlgClickError(f"--out {out}: the folder {target} is not writable", EXIT_USAGE)


def _write_export(dialogue: Any, fmt: str, out: str | None, *, quiet: bool = False) -> None:
    """The dialogue in ``fmt``: to ``out`` (a file or directory) or to stdout."""
    from dlg.records.export import render_export, write_export

    if out is None:
        data = render_export(dialogue, fmt)
        if isinstance(data, bytes):
            if is_terminal(sys.stdout):  # an exporter that did not say it was binary
                raise _binary_to_terminal(fmt)
            write_bytes(data)
        else:
            echo(data, nl=False)
        return
    path = write_export(dialogue, fmt, out)
    if not quiet:
        echo(f"wrote {path}", err=True)


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"'{item}' is not KEY=VALUE", param_hint=option)
        out[key.strip()] = value
    return out



def _registry() -> str | None:
    """The registry file of ``dlg --registry FILE`` (or ``DLG_REGISTRY``), for any command:
    a global option reaches every command that reads models."""
    ctx = click.get_current_context(silent=True)
    found = ((ctx.find_root().obj or {}).get("registry") if ctx is not None else None)
    return os.path.abspath(found) if found else None


def _store(name: str | None) -> Any:
    from dlg.records.store import open_store

    return open_store(name)


def _saved(ref: str, store: str | None) -> Any:
    from dlg.records.store import DialogueNotFoundError, as_dialogue, find_dialogue

    try:
        return as_dialogue(find_dialogue(_store(store), ref))
    except DialogueNotFoundError as exc:
        raise DlgClickError(str(exc), EXIT_USAGE) from None


store_option = click.option("--store", metavar="NAME",
                            help="The store to read (default DLG_STORE or sqlite).")



def _all_errors(ctx: click.Context, param: Any, value: bool) -> None:
    ctx.meta["dlg.all_errors"] = value


# every command that loads a mode: an invalid mode's count of further errors names it
all_errors_option = click.option("--all-errors", is_flag=True, expose_value=False,
                                 callback=_all_errors,
                                 help="Show every problem of an invalid mode.")
