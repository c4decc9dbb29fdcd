"""Resuming a saved dialogue: finding it, checking its mode, choosing its models again.

``Resumer`` does it for a ``dlg.Orchestrator`` (which owns one): completed turns are
kept, every other turn runs again (those in flight at a crash, failed, cancelled and not
reached), on the models and with the router the dialogue used unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from dlg.errors import DlgError
from dlg.language.loader import load_mode
from dlg.language.mode import Mode
from dlg.records.record import Dialogue
from dlg.running.inputs import new_dialogue

if TYPE_CHECKING:
    import pluggy

    from dlg.contracts import Store
    from dlg.models.pool import ModelPool

__all__ = ["Resumable", "Resumer"]


class Resumable(Protocol):
    """What a ``Resumer`` needs of its orchestrator: what the user chose (which a resume
    fills in from the saved dialogue when the user did not say), its models, plugins and
    store, and running a dialogue."""

    models: dict[str, Any]
    model: Any
    router: Any
    pool_models: dict[str, Any]
    constraints: dict[str, Any]

    @property
    def pool(self) -> ModelPool: ...
    @property
    def plugin_manager(self) -> pluggy.PluginManager: ...
    def open_store(self) -> Store | None: ...
    def chose_again(self) -> None: ...
    def execute(self, mode: Mode, dialogue: Dialogue) -> Awaitable[Dialogue]: ...


class Resumer:
    """``prepare_resume``, ``reopen`` and ``resume`` for one orchestrator."""

    def __init__(self, orchestrator: Resumable) -> None:
        self._of = orchestrator

    def prepare_resume(self, dialogue_id: str, *, force: bool = False, mode: Any = None
                       ) -> tuple[Mode, Dialogue]:
        """The saved dialogue, made ready to continue: its mode (checked against the saved
        content hash) and its record with every unfinished turn reset to pending.
        ``mode`` (a file, a name or a ``Mode``) is the mode to continue with when the one
        the dialogue ran is not where it was (another machine, a moved folder): it must
        be the same mode, unless ``force``.
        Raises ``DialogueBusyError`` if another process is running it."""
        from dlg.records.store import Lease, as_dialogue, find_dialogue, open_store

        # resuming reads the store even when this orchestrator does not save
        store = self._of.open_store() or open_store(pm=self._of.plugin_manager)
        record = find_dialogue(store, dialogue_id)
        saved = as_dialogue(record)
        # refuse now if another process runs it (``execute`` claims it for the run)
        Lease().check(store, saved.id)
        chosen = None if mode is None else load_mode(mode, pm=self._of.plugin_manager)
        return self._resumable(record, saved, force, chosen)

    def _resumable(self, record: dict[str, Any], saved: Dialogue, force: bool,
                   chosen: Mode | None = None) -> tuple[Mode, Dialogue]:
        mode, saved = self.reopen(record, saved, force, mode=chosen,
                                  chosen=chosen is not None)
        self._choose_models(saved, mode)
        return mode, saved

    def reopen(self, record: dict[str, Any], saved: Dialogue, force: bool = False,
               mode: Mode | None = None, chosen: bool = False) -> tuple[Mode, Dialogue]:
        """A saved dialogue's mode (checked against its content hash) and the dialogue
        with every unfinished turn reset to pending. ``mode``: one the caller has (a
        batch's), used when it is the one the dialogue ran; ``chosen``: the user chose
        it, so it is used even if it changed (which then needs ``force``)."""
        from dlg.errors import ModeError
        from dlg.language.source import is_path_like, reloadable

        if mode is not None and not chosen and mode.content_hash != saved.mode_hash:
            mode = None
        # the mode as it is now (its file, or its name), else the copy saved with it
        if mode is None and reloadable(saved.mode_source):
            source = saved.mode_source if is_path_like(saved.mode_source) else saved.mode
            try:
                mode = load_mode(source, pm=self._of.plugin_manager)
            except ModeError:
                mode = None
        if mode is None:
            mode = load_mode(record.get("mode_document") or saved.mode,
                             pm=self._of.plugin_manager)
        if mode.content_hash != saved.mode_hash:
            if not force and chosen:
                raise DlgError(
                    f"the mode given ('{mode.name}', content hash {mode.content_hash[:12]}) "
                    f"is not the one dialogue {saved.id} ran ('{saved.mode}', "
                    f"{saved.mode_hash[:12]}): pass --force to resume with it")
            if not force:
                raise DlgError(
                    f"mode '{saved.mode}' has changed since dialogue {saved.id} started "
                    f"(content hash {saved.mode_hash[:12]} -> {mode.content_hash[:12]}): "
                    "pass --force to resume with the changed mode")
            fresh = new_dialogue(mode, saved.inputs, saved.id, saved.participants)
            done = {t.id: t for t in saved.turns if t.status in ("completed", "skipped")}
            fresh.turns = [done.get(t.id, t) for t in fresh.turns]
            for new_index, t in enumerate(fresh.turns, 1):
                t.index = new_index
            fresh.turns = _with_rounds(fresh.turns, saved.turns, mode)
            fresh.created_at, fresh.started_at = saved.created_at, saved.started_at
            fresh.metadata = saved.metadata
            saved = fresh
        for turn in saved.turns:
            if turn.status not in ("completed", "skipped"):
                turn.status, turn.error, turn.attempts, turn.replaced = "pending", None, None, ()
        saved.status, saved.error = "pending", None
        return mode, saved

    def _choose_models(self, saved: Dialogue, mode: Mode) -> None:
        """Run on the models and the router the dialogue used, unless told otherwise."""
        of = self._of
        routed = (saved.metadata or {}).get("routing")
        if not of.models and of.model is None:
            override = (saved.metadata or {}).get("model")
            if isinstance(override, str) and of.pool.problem(override) is None:
                of.model = override
            else:
                of.models = self._saved_models(saved, mode)
                if isinstance(routed, dict):  # only the pinned ones: the rest were routed
                    of.models = {a: m for a, m in of.models.items()
                                 if a in routed.get("pinned", ())}
        if isinstance(routed, dict):  # route as the dialogue did, unless told otherwise
            if of.router is None:
                of.router = routed.get("router")
            if not of.pool_models:
                from dlg.models import without_redacted

                of.pool_models = {n: s for n, s in (routed.get("pool") or {}).items()
                                  if isinstance(s, str) and without_redacted(s) == s}
            of.constraints = {**(routed.get("constraints") or {}), **of.constraints}
        of.chose_again()

    def _saved_models(self, saved: Dialogue, mode: Mode) -> dict[str, Any]:
        """The participants' saved models, ready to run again. A key given in a spec was
        not saved: the spec runs without it (its provider's key variable then applies);
        a spec that cannot run is an error that says how to supply the model."""
        from dlg.errors import ModelError
        from dlg.models import without_redacted

        out: dict[str, Any] = {}
        for alias, spec in saved.participants.items():
            if not isinstance(spec, str) or alias not in mode.participants:
                continue
            runnable = without_redacted(spec)
            problem = ("a password in it was not saved" if runnable is None
                       else self._of.pool.problem(runnable))
            if problem is not None:
                stripped = " (a key given in the spec is never saved)" if runnable != spec \
                    else ""
                raise ModelError(
                    f"dialogue {saved.id}: participant '{alias}' ran on '{spec}', which "
                    f"cannot run now{stripped}: {problem}. Set the provider's key variable, "
                    f"pass --participant {alias}=SPEC (or --model SPEC), or give secrets "
                    "as references that are saved instead of the secret: "
                    "api_key=env:VARIABLE, or ${VARIABLE} inside a value")
            out[alias] = runnable
        return out

    async def resume(self, dialogue_id: str, *, force: bool = False, mode: Any = None
                     ) -> Dialogue:
        """Continue a saved dialogue: completed turns are kept, the rest run (the seed's
        SC5.3). Refuses if its mode changed since, unless ``force``. ``mode``: the mode
        to continue with when the one the dialogue ran is not where it was."""
        mode, dialogue = self.prepare_resume(dialogue_id, force=force, mode=mode)
        if all(t.status in ("completed", "skipped") for t in dialogue.turns):
            dialogue.status = "completed"
            return dialogue
        return await self._of.execute(mode, dialogue)


def _with_rounds(records: list[Any], saved: list[Any], mode: Mode) -> list[Any]:
    """``records`` (the changed mode's first round) with the later rounds the saved
    dialogue's loops ran or were running, for turns still in the same repeating phase:
    each in the order it ran, after its phase's records. So a forced resume goes on in
    the round a loop was in, instead of paying for its finished rounds again."""
    phase_of = {t.id: p.id for p in mode.phases if p.repeat for t in p.turns}
    index = {t.id: t.index for t in mode.turns}
    out = list(records)
    for rec in saved:
        phase = phase_of.get(rec.turn_id)
        if rec.round > 1 and phase is not None and phase == rec.phase:
            rec.index = index[rec.turn_id]
            last = max(i for i, r in enumerate(out) if phase_of.get(r.turn_id) == phase)
            out.insert(last + 1, rec)
    return out
