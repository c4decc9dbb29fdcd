"""The garbage collector while a command starts up: held off while it imports (no
collections walking the packages being loaded again and again), then what it loaded
frozen out of the collector's way (``gc.freeze``) and collections on again. ``dlg
batch`` and ``dlg run`` use it; ``DLG_GC_FREEZE=0`` leaves the collector as it is.
"""

from __future__ import annotations

__all__ = ["freeze_heap", "hold_collector"]


def _gc_frozen() -> bool:
    import os

    return os.environ.get("DLG_GC_FREEZE", "1").strip().lower() not in {"0", "false", "no",
                                                                         "off"}


def hold_collector() -> bool:
    """No garbage collection while a command starts up, until ``freeze_heap`` (the
    caller turns it on again if it fails before): the packages it imports make some
    150,000 objects, and the full collections their making set off walked them again and
    again (12% of the imports' CPU time). Whether it was turned off."""
    import gc

    if not _gc_frozen() or not gc.isenabled():
        return False
    gc.disable()
    return True


def freeze_heap() -> None:
    """Put what is loaded so far (modules, classes, LangChain's chat-model layer, the
    provider's package and their schemas) out of the garbage collector's way, and let
    it collect again. A batch keeps thousands of dialogues' objects alive, so full
    collections are frequent, and each one would walk all of that too: with 1,000
    dialogues in flight it was 13% of the wall time (docs/performance.md). No collection
    comes first: start-up leaves next to no garbage (23 objects), and one full collection
    of all it loaded cost 60 to 270 ms before the first call. This process is dlg's own,
    so changing its collector is dlg's call; from Python, ``gc.freeze()`` after setting
    up does the same."""
    import gc

    if not _gc_frozen():
        return
    from langchain_core.language_models import BaseChatModel  # noqa: F401 - every call's

    gc.freeze()
    gc.enable()
