"""``dlg serve``: the local viewer of saved dialogues (``dlg.serve``)."""

from __future__ import annotations

import click

from dlg.cli.base import EXIT_USAGE, DlgClickError, cli, store_option
from dlg.cli.terminal import echo

MIN_TOKEN = 16


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="The address to listen on; one not of this machine needs --token.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True,
              help="The port to listen on.")
@click.option("--token", envvar="DLG_SERVE_TOKEN", metavar="TOKEN",
              help="Every request must carry it: open the viewer once with ?token=TOKEN "
                   "(or DLG_SERVE_TOKEN).")
@click.option("--read-only", is_flag=True,
              help="Change nothing in the store: no rating, resume or delete from a page.")
@store_option
def serve_command(host: str, port: int, token: str | None, read_only: bool,
                  store: str | None) -> None:
    """Browse, watch and rate saved dialogues in a browser: the list with filters, each
    dialogue's turns and timeline (updated live while it runs), its exports, a rating per
    turn, and resume or delete."""
    from dlg.serve.security import is_local

    local = is_local(host)
    if not local and not token:
        raise DlgClickError(
            f"--host {host} is not this machine's loopback address: anyone who reaches it "
            "could read your dialogues. Give --token TOKEN (every request then needs it), "
            "or serve on 127.0.0.1", EXIT_USAGE)
    if token is not None and len(token) < MIN_TOKEN:
        raise DlgClickError(f"--token must be at least {MIN_TOKEN} characters (try `python "
                            "-c 'import secrets; print(secrets.token_urlsafe())'`)", EXIT_USAGE)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise DlgClickError(f"dlg serve needs {exc.name}: pip install "
                            "'dlg-orchestrator[serve]'", EXIT_USAGE) from None
    from dlg.serve.app import create_app

    app = create_app(store, token=token, local=local, host=host, read_only=read_only)
    shown = f"[{host}]" if ":" in host else host
    echo(f"dlg serve: http://{shown}:{port}/" + ("?token=TOKEN" if token else "")
         + "  (Ctrl-C stops it)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
