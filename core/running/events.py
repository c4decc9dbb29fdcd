"""Calling plugins while a dialogue runs: lifecycle events and turn decisions.

Hook implementations are called the way pluggy calls them: each gets only the arguments
it names (``turn_finished(turn)`` is a valid implementation), last registered first.
Per-run observers (the store's saver, the CLI's display) are called before plugins, so a
turn is saved before any plugin can fail on it. An implementation may be a plain function
or an ``async def``. One that raises becomes a ``PluginError`` that names the plugin and
the hook, never a bare traceback.

``before_turn`` is the control seam: plugins and observers may answer with a
``dlg.Decision`` (run, run on another model, skip the turn, or stop the dialogue with a
status). See ``Decision.combine`` for how several answers are resolved.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from dlg.errors import DlgError, PluginError

if TYPE_CHECKING:
    import pluggy

__all__ = ["EVENTS", "Decision", "Events", "call_hook"]

EVENTS = ("dialogue_started", "before_turn", "turn_started", "turn_chunk", "turn_progress",
          "turn_finished", "dialogue_finished")


@dataclass(frozen=True)
class Decision:
    """What a ``before_turn`` implementation wants done with the next turn.

    - ``Decision.run()`` (or returning ``None``): run it as planned;
    - ``Decision.run(model=SPEC)``: run it on another model (a spec or chat model);
    - ``Decision.skip(reason)``: do not run it; the turn is recorded as skipped;
    - ``Decision.stop(status, reason)``: end the dialogue before this turn, with
      ``status`` (for example ``"stopped"``, ``"cost_limited"``, ``"converged"``); turns
      not run stay pending, so ``dlg resume`` can continue them later.
    """

    action: str = "run"
    model: Any = None
    status: str | None = None
    reason: str = ""

    @classmethod
    def run(cls, model: Any = None) -> Decision:
        return cls("run", model=model)

    @classmethod
    def skip(cls, reason: str = "") -> Decision:
        return cls("skip", reason=reason)

    @classmethod
    def stop(cls, status: str = "stopped", reason: str = "") -> Decision:
        from dlg.records import record as R

        if status in (R.PENDING, R.RUNNING, R.COMPLETED, R.FAILED, R.CANCELLED, R.SKIPPED):
            raise ValueError(f"'{status}' is a status dlg sets itself: stop with another "
                             "(for example 'stopped' or 'cost_limited')")
        return cls("stop", status=status, reason=reason)

    @staticmethod
    def combine(answers: Sequence[tuple[str, Any]]) -> tuple[Decision, str | None]:
        """One decision from several (who, answer) pairs: a stop beats a skip, which
        beats a change of model; among equals the first answer wins. Returns the
        decision and who made it."""
        best: tuple[Decision, str | None] = (Decision(), None)
        rank = {"run": 0, "skip": 2, "stop": 3}
        best_rank = 0
        for who, answer in answers:
            if answer is None:
                continue
            if not isinstance(answer, Decision):
                raise PluginError(f"{who} answered before_turn with {answer!r}: return a "
                                  "dlg.Decision or None")
            r = rank.get(answer.action, -1)
            if r < 0:
                raise PluginError(f"{who} answered before_turn with the unknown action "
                                  f"'{answer.action}' (run, skip or stop)")
            if answer.action == "run" and answer.model is not None:
                r = 1
            if r > best_rank:
                best, best_rank = (answer, who), r
        return best


def _plugin_name(pm: pluggy.PluginManager, impl: pluggy.HookImpl) -> str:
    return pm.get_name(impl.plugin) or str(getattr(impl.plugin, "__name__", repr(impl.plugin)))


def _wrap(who: str, hook: str, exc: Exception) -> DlgError:
    if isinstance(exc, PluginError) or (isinstance(exc, DlgError) and
                                        who.startswith("observer")):
        return exc  # dlg's own observers (the saver) say what failed themselves
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, DlgError) and text:
        detail = text
    return PluginError(f"{who} failed in {hook}: {detail}")


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call a synchronous hook's implementations (pluggy's order, each with the arguments
    it names); return (plugin, result) pairs. A failure is a ``PluginError``."""
    out = []
    for impl in reversed(getattr(pm.hook, name).get_hookimpls()):
        who = f"plugin '{_plugin_name(pm, impl)}'"
        try:
            out.append((who, impl.function(*[kwargs[a] for a in impl.argnames])))
        except Exception as exc:
            raise _wrap(who, name, exc) from exc
    return out


class _Listener:
    """One callable listening to one event, with the arguments it takes."""

    __slots__ = ("argnames", "fn", "who")

    def __init__(self, fn: Any, argnames: tuple[str, ...] | None, who: str):
        self.fn, self.argnames, self.who = fn, argnames, who

    def __call__(self, kwargs: dict[str, Any]) -> Any:
        if self.argnames is None:
            return self.fn(**kwargs)
        return self.fn(*[kwargs[a] for a in self.argnames])


def _active(pm: pluggy.PluginManager, impl: pluggy.HookImpl, known: dict[int, bool]) -> bool:
    """Whether a plugin listens to this dialogue: a plugin (module or object) with
    ``dlg_active()`` returning False is not called, so an idle plugin (telemetry with no
    SDK configured) costs nothing per turn."""
    key = id(impl.plugin)
    found = known.get(key)
    if found is None:
        ask = getattr(impl.plugin, "dlg_active", None)
        try:
            found = known[key] = bool(ask()) if callable(ask) else True
        except DlgError:  # the plugin's own words, for the user (a setting it refuses)
            raise
        except Exception as exc:
            raise PluginError(f"plugin '{_plugin_name(pm, impl)}' failed in dlg_active: "
                              f"{type(exc).__name__}: {exc}") from exc
    return found


_ARGS: dict[tuple[Any, tuple[str, ...]], tuple[str, ...] | None] = {}


def _observer_args(fn: Any, available: tuple[str, ...]) -> tuple[str, ...] | None:
    """The arguments an observer method takes: by name, or all of them (``**kwargs``).
    Known per function (a method's, for every instance), since every dialogue asks."""
    key = (getattr(fn, "__func__", fn), available)
    try:
        return _ARGS[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable callable: asked each time
        key = None  # type: ignore[assignment]
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        found = None
    else:
        found = (None if any(p.kind is p.VAR_KEYWORD for p in params)
                 else tuple(p.name for p in params if p.name in available))
    if key is not None and len(_ARGS) < 4096:
        _ARGS[key] = found
    return found


class Events:
    """The listeners of one dialogue: observers first, then plugins (pluggy's order)."""

    def __init__(self, pm: pluggy.PluginManager, observers: Sequence[Any]):
        self._calls: dict[str, list[_Listener]] = {}
        active: dict[int, bool] = {}  # per plugin, asked once for this dialogue
        for name in EVENTS:
            listeners = []
            hook = getattr(pm.hook, name)
            for o in observers:
                fn = getattr(o, name, None)
                if fn is not None:  # an observer takes the hook's arguments it names
                    listeners.append(_Listener(fn, _observer_args(fn, hook.spec.argnames),
                                               f"observer {type(o).__name__}"))
            for impl in reversed(hook.get_hookimpls()):
                if not _active(pm, impl, active):
                    continue
                if impl.hookwrapper or getattr(impl, "wrapper", False):
                    raise PluginError(f"plugin '{_plugin_name(pm, impl)}' implements {name} "
                                      "as a hook wrapper; lifecycle hooks take plain "
                                      "implementations")
                listeners.append(_Listener(impl.function, tuple(impl.argnames),
                                           f"plugin '{_plugin_name(pm, impl)}'"))
            if listeners:
                self._calls[name] = listeners

    def listens(self, name: str) -> bool:
        return name in self._calls

    async def _call(self, listener: _Listener, name: str, kwargs: dict[str, Any]) -> Any:
        try:
            result = listener(kwargs)
            if inspect.isawaitable(result):
                result = await result
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise _wrap(listener.who, name, exc) from exc
        return result

    async def emit(self, name: str, *, shield: bool = False, **kwargs: Any) -> None:
        """Call every listener of ``name`` in order; with ``shield``, cancellation waits
        for them. Every listener is called even if one fails; the first failure is
        raised after the others have run. Plain-function listeners finish before anything
        can be cancelled, so only awaitables pay for the shielded scope."""
        listeners = self._calls.get(name)
        if listeners is None:
            return
        error: DlgError | None = None
        interrupt: KeyboardInterrupt | None = None
        for listener in listeners:
            try:
                result = listener(kwargs)
                if result is not None and inspect.isawaitable(result):  # None: done
                    if shield:
                        with anyio.CancelScope(shield=True):
                            await result
                    else:
                        await result
            except anyio.get_cancelled_exc_class():
                raise
            except KeyboardInterrupt as exc:  # Ctrl-C in a listener, or its output closed
                interrupt = interrupt or exc
            except Exception as exc:
                error = error or _wrap(listener.who, name, exc)
        if interrupt is not None:  # after the others have run (the store has saved)
            raise interrupt
        if error is not None:
            raise error

    async def decide(self, **kwargs: Any) -> tuple[Decision, str | None]:
        """Ask every ``before_turn`` listener; one combined decision (see ``Decision``)."""
        listeners = self._calls.get("before_turn")
        if listeners is None:
            return Decision(), None
        answers = [(listener.who, await self._call(listener, "before_turn", kwargs))
                   for listener in listeners]
        return Decision.combine(answers)
