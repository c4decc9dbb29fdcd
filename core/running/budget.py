"""A hard limit on what one dialogue spends (``max_cost`` in dollars), and on what many
spend in all (a batch's ``max_total_cost``: each dialogue's budget is ``within`` it).

Before each call the kernel asks for the **worst case**: the prompt's tokens bounded from
above (the model's own tokenizer's count where one is installed, else the text's UTF-8
bytes, which no byte-level tokenizer exceeds; plus a few per message:
``dlg.models.tokens``) at the model's input price, and ``max_tokens`` (which the provider
enforces) at its output price. That amount is reserved; turns of a parallel phase reserve
one after another on the event loop, so together they cannot pass the limit. When the
answer comes, the reservation is settled at the real cost. When the worst case does not
fit, the turn gets a smaller ``max_tokens``, else a cheaper model, else the dialogue stops
with status ``cost_limited`` and is saved: it never spends past the limit.

A model whose price the registry does not know cannot be bounded, so under a budget it
is not used (add its price to a registry file, ``dlg models show`` says what is known).

This module is the one ledger: a dialogue's budget, the tree of its sub-dialogues
(``tree_spent``: their costs are drawn from the parent's budget) and a batch's total
(a ``Budget`` the dialogues run ``within``, and ``admits``: whether what is left can
finish one more dialogue). What it counts beyond the answers:

- **overruns**: a provider that reports more tokens than were reserved for (more output
  than ``max_tokens``, a prompt past the byte bound) is charged what it reported;
  ``settle`` answers the overrun, the turn records it, and once the limit is passed the
  dialogue stops (``cost_limited``) before its next call;
- **billed failed attempts**: an attempt that failed after reaching the provider is
  assumed to have its input billed (``dlg.models.attempts.billed_input`` says which),
  at the model's input price (``billed``): the prompt's tokens as the provider reported
  them, else the best estimate (the tokenizer's count, else four characters a token),
  not the bound;
- **the turns still to come**: ``finish_reserve`` is what the rest of the dialogue costs
  at the least (each turn on the cheapest priced model at its ``max_tokens``, its prompt
  estimated from the answers so far); a turn plans within what is left after it, so
  early turns cannot starve the last. When not even the turn at hand fits, the reason
  says by how much and what its worst case and estimate were (``shortfall``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlg.models.tokens import PER_MESSAGE, PromptSize, byte_bound

__all__ = ["MIN_OUTPUT", "PER_MESSAGE", "SPENT", "Admission", "Budget", "PromptSize",
           "Reservation", "budgeted_call", "count_prompt", "mode_estimate", "prompt_size",
           "prompt_token_bound", "tree_spent"]

MIN_OUTPUT = 64  # the fewest output tokens worth asking a model for
DEFAULT_OUTPUT = 4096  # max_tokens when neither the turn nor the registry says
SPENT = 1e-12  # dollars left below which a budget is spent


def prompt_token_bound(messages: Any) -> int:
    """An upper bound on the prompt's tokens without a tokenizer: its UTF-8 bytes plus
    framing."""
    return byte_bound(messages)


Prompt = int | PromptSize  # a prompt's tokens: a count, or the prompt to count per model


def prompt_size(messages: Any, pool: Any, schema: Any = None) -> PromptSize:
    """The prompt, to be counted per model by the tokenizers of ``pool``'s providers
    (``schema``: the output schema sent beside it, billed as input too)."""
    return PromptSize(messages, getattr(pool, "plugin_manager", None), schema)


async def count_prompt(size: PromptSize, labels: Any, registry: Any = None, pool: Any = None,
                       requires: Any = ()) -> None:
    """Count ``size`` for ``labels`` by their tokenizers in a worker thread (loading an
    encoding takes about 0.2 s, counting a long transcript more), not on the event loop
    every dialogue shares; nothing to do where none of them has a tokenizer. With a
    ``registry`` (and the ``pool`` labelling its specs), its fallbacks for ``labels``,
    which a failed call weighs on the event loop (``Budget.allows``): counted too when
    the thread is taken anyway, else only their providers asked, once (no thread each
    turn for a model that may never be tried; after a failure the loop counts the
    prompt for them with the tokenizer already made)."""
    labels = list(labels)
    later = [] if registry is None or pool is None else [
        pool.label(f) for label in labels for f in registry.fallbacks_for(label, requires or ())]
    uncounted = size.uncounted(labels)
    unasked: list[str] = []
    if uncounted and later:
        uncounted += size.uncounted(later)
    elif later:
        unasked = size.unasked(later)
    if uncounted or unasked:
        import anyio

        await anyio.to_thread.run_sync(size.count, uncounted, unasked)


def _bound(prompt: Prompt, label: str) -> int:
    return prompt.bound(label) if isinstance(prompt, PromptSize) else prompt


def _estimate(prompt: Prompt, label: str) -> int:
    return prompt.estimate(label) if isinstance(prompt, PromptSize) else prompt


@dataclass
class Reservation:
    model: str
    amount: float
    max_tokens: int
    prompt: Prompt = 0  # the prompt reserved for (its bound, its estimate per model)


class Budget:
    """What one dialogue may still spend; see the module docstring.

    ``within``: a budget shared by many dialogues (a batch's ``max_total_cost``), which
    this one's reservations and spending draw on too; the dialogue may spend no more
    than either has left (``limit`` is then what it could reach now). ``name`` says whose
    limit it is, in the reason a dialogue stopped, when it is not its own ``max_cost``.
    """

    def __init__(self, limit: float, registry: Any, spent: float = 0.0, name: str = "",
                 within: Budget | None = None):
        self.own_limit = float(limit)  # may be infinite when ``within`` is given
        self.registry = registry
        self.spent = float(spent)  # settled
        self.reserved = 0.0  # in flight
        # billed failures charged at their estimate: what the provider may still have
        # billed beyond it, up to the prompts' bound, held against the limit for good
        self.unsure = 0.0
        self.within = within
        self._name = name
        self._settled: Any = None  # an anyio.Event for those waiting on a settlement

    @property
    def limit(self) -> float:
        if self.within is None:
            return self.own_limit
        return min(self.own_limit,
                   self.spent + self.reserved + self.unsure + self.within.left)

    @property
    def name(self) -> str:
        if self.within is not None and self.limit < self.own_limit:  # the shared one binds
            return self.within.name
        return self._name

    @property
    def left(self) -> float:
        return self.limit - self.spent - self.reserved - self.unsure

    def others_hold(self) -> bool:
        """Whether reservations made by others are in flight, which may come back (their
        answers cost less): other dialogues' of the budget this one is ``within`` (a
        batch's), or this one's (sub-dialogues running at once share their parent's
        budget; a turn asks before it reserves)."""
        if self.within is not None:
            return self.within.reserved > self.reserved + 1e-12
        return self.reserved > 1e-12

    async def settled(self) -> None:
        """Wait until a reservation of the shared budget (``within``) is settled."""
        import anyio

        shared = self.within if self.within is not None else self
        if shared._settled is None:
            shared._settled = anyio.Event()
        await shared._settled.wait()

    def hold(self, amount: float) -> Reservation:
        """Set ``amount`` aside (a share handed to a dialogue that runs elsewhere);
        ``settle`` it with what was spent."""
        self.reserved += amount
        return Reservation("", amount, 0)

    def prices(self, label: str) -> tuple[float, float] | None:
        """Dollars per token in and out, or None if the registry does not know them."""
        info = self.registry.get(label) if self.registry is not None else None
        if info is None or info.price_in is None or info.price_out is None:
            return None
        return info.price_in / 1e6, info.price_out / 1e6

    def max_output(self, label: str, asked: int | None) -> int:
        info = self.registry.get(label) if self.registry is not None else None
        limit = info.max_output if info is not None and info.max_output else DEFAULT_OUTPUT
        return min(asked, limit) if asked else limit

    def worst_case(self, label: str, prompt_tokens: Prompt, max_tokens: int) -> float | None:
        prices = self.prices(label)
        if prices is None:
            return None
        return _bound(prompt_tokens, label) * prices[0] + max_tokens * prices[1]

    def fit(self, label: str, prompt_tokens: Prompt, asked: int | None, hold: float = 0.0
            ) -> int | None:
        """The ``max_tokens`` this model can be given within what is left, less ``hold``
        (held back for the turns still to come): as many as asked, or fewer but at least
        ``MIN_OUTPUT``; None if it cannot fit."""
        prices = self.prices(label)
        if prices is None:
            return None
        wanted = self.max_output(label, asked)
        room = self.left - hold - _bound(prompt_tokens, label) * prices[0]
        if room < 0:
            return None
        affordable = wanted if prices[1] == 0 else int(room / prices[1])
        n = min(wanted, affordable)
        return n if n >= min(MIN_OUTPUT, wanted) else None

    def reserve(self, label: str, prompt_tokens: Prompt, max_tokens: int) -> Reservation:
        amount = self.worst_case(label, prompt_tokens, max_tokens)
        if amount is None or amount > self.left + 1e-12:
            raise ValueError(f"{label} does not fit the budget")  # callers check fit()
        self.reserved += amount
        if self.within is not None:
            self.within.reserved += amount
        return Reservation(label, amount, max_tokens, prompt_tokens)

    def allows(self, label: str, reservation: Reservation, prompt_tokens: Prompt) -> bool:
        """Whether a fallback model's worst case fits the turn's reservation (its prompt
        counted by that model's tokenizer when the reservation knows the prompt)."""
        if isinstance(reservation.prompt, PromptSize):
            prompt_tokens = reservation.prompt
        cost = self.worst_case(label, prompt_tokens, reservation.max_tokens)
        return cost is not None and cost <= reservation.amount + 1e-12

    def covers(self, reservation: Reservation, label: str, failed: Any) -> bool:
        """Whether ``reservation`` covers one more attempt on ``label`` after the
        ``failed`` ones: what those were billed (each one's prompt at its bound: the
        provider may bill up to it) and this attempt's worst case. What is missing is
        added to the reservation when what is left has it; else False (no attempt is
        made: a retry after a billed failure could pass the limit)."""
        prompt = reservation.prompt
        need = self.worst_case(label, prompt, reservation.max_tokens)
        if need is None:
            return False
        for attempt in failed or ():
            if getattr(attempt, "billed", False):
                prices = self.prices(attempt.model)
                need += _bound(prompt, attempt.model) * prices[0] if prices else 0.0
        extra = need - reservation.amount
        if extra <= 1e-12:
            return True
        if extra > self.left + 1e-12:
            return False
        reservation.amount += extra
        self.reserved += extra
        if self.within is not None:
            self.within.reserved += extra
        return True

    def settle(self, reservation: Reservation, actual: float | None) -> float:
        """Release ``reservation`` and charge what was really spent; answers the overrun
        (what was spent past the reservation, 0.0 when within it)."""
        self.reserved -= reservation.amount
        self.spent += actual or 0.0
        if self.within is not None:
            self.within.settle(reservation, actual)
        if self._settled is not None:  # wake those waiting for room
            self._settled.set()
            self._settled = None
        return max(0.0, (actual or 0.0) - reservation.amount)

    def settle_turn(self, reservation: Reservation, spent: float | None, billed: float
                    ) -> tuple[dict[str, Any], str | None]:
        """Settle a turn's ``reservation`` with what it ``spent`` (``billed``: its failed
        attempts' share): what the turn's record keeps of it (``metadata["budget"]``), and
        why the dialogue must stop before its next call, if it must (spent past the
        reservation, a provider reporting more than it was given room for or billed
        failures, with the limit passed)."""
        overrun = self.settle(reservation, spent)
        kept = {"reserved": round(reservation.amount, 10),
                "max_tokens": reservation.max_tokens,
                "left_after": round(self.left, 10),
                **({"billed_failures": round(billed, 10)} if billed else {}),
                **({"overrun": round(overrun, 10)} if overrun > 1e-12 else {})}
        stop = (f"spent ${overrun:.6f} more than was reserved for it; the limit of "
                f"${self.limit:g} is passed") if overrun > 1e-12 and self.passed else None
        return kept, stop

    @property
    def passed(self) -> bool:
        """Whether what was spent and is held is past the limit (after an overrun)."""
        return self.left < -1e-12

    def billed(self, attempts: Any, prompt_tokens: Prompt) -> float:
        """What failed ``attempts`` are assumed to have been billed: the input of each one
        that reached the provider (``Attempt.billed``), ``prompt_tokens`` (a count the
        provider reported, else the prompt's best estimate for the attempt's model, not
        its bound) at its model's input price. A model of unknown price counts nothing (it
        is never budgeted). Where the estimate stood in for a count, what the provider may
        have billed beyond it (up to the prompt's bound) is held back as ``unsure``: the
        ledger keeps the likely figure, and the limit still holds whatever was billed."""
        total = margin = 0.0
        for attempt in attempts or ():
            if getattr(attempt, "billed", False):
                prices = self.prices(attempt.model)
                if prices is not None:
                    guess = _estimate(prompt_tokens, attempt.model)
                    total += guess * prices[0]
                    if isinstance(prompt_tokens, PromptSize):
                        margin += max(0, _bound(prompt_tokens, attempt.model) - guess) * prices[0]
        if margin:
            self.hold_unsure(margin)
        return total

    def hold_unsure(self, amount: float) -> None:
        """Hold ``amount`` against the limit for good (see ``billed``)."""
        self.unsure += amount
        if self.within is not None:
            self.within.hold_unsure(amount)

    def shortfall(self, labels: list[str], prompt_tokens: Prompt, asked: int | None) -> str:
        """Why none of ``labels`` can run a turn: for the one whose worst case is least,
        that worst case (the prompt's bound and the fewest output tokens worth asking
        for), what the turn is estimated to cost, and how much is missing."""
        best: tuple[float, str] | None = None
        for label in labels:
            prices = self.prices(label)
            if prices is None:
                continue
            least = min(MIN_OUTPUT, self.max_output(label, asked))
            worst = _bound(prompt_tokens, label) * prices[0] + least * prices[1]
            if best is None or worst < best[0]:
                best = (worst, label)
        if best is None:
            return "no price is known for any of its models"
        worst, label = best
        p_in, p_out = self.prices(label) or (0.0, 0.0)
        bound, guess = _bound(prompt_tokens, label), _estimate(prompt_tokens, label)
        least = min(MIN_OUTPUT, self.max_output(label, asked))
        return (f"its least worst case, on {label}, is ${worst:.6f} (a prompt of at most "
                f"{bound} tokens, estimated {guess}, and {least} output tokens), "
                f"${worst - self.left:.6f} more than is left; estimated "
                f"${guess * p_in + least * p_out:.6f}")

    def plan(self, candidates: list[tuple[Any, str]], prompt_tokens: Prompt,
             asked: int | None, hold: float = 0.0) -> tuple[Any, str, int] | None:
        """The first candidate (model, label) whose worst case fits what is left less
        ``hold``, with the ``max_tokens`` it gets; None if none does."""
        for model, label in candidates:
            n = self.fit(label, prompt_tokens, asked, hold)
            if n is not None:
                return model, label, n
        return None

    def finish_reserve(self, labels: list[str], rest: list[tuple[int, int | None]],
                       least: bool = False) -> float:
        """What the turns still to come cost at the least: each of ``rest`` (its prompt
        tokens, its ``max_tokens`` asked) on the cheapest of ``labels`` whose price is
        known, at its ``max_tokens`` (``least``: at ``MIN_OUTPUT``, what merely finishing
        takes, each prompt no longer than the nearest one's). 0.0 when no price is
        known."""
        priced = [(p, label) for label in labels if (p := self.prices(label)) is not None]
        if not priced or not rest:
            return 0.0
        total = 0.0
        nearest = min(prompt for prompt, _ in rest)
        for prompt, asked in rest:
            prompt = nearest if least else prompt
            total += min(prompt * p_in + (min(MIN_OUTPUT, self.max_output(label, asked))
                                          if least else self.max_output(label, asked)) * p_out
                         for (p_in, p_out), label in priced)
        return total

    def plan_finishing(self, candidates: list[tuple[Any, str]], prompt_tokens: Prompt,
                       asked: int | None, labels: list[str],
                       rest: list[tuple[int, int | None]]) -> tuple[Any, str, int, float] | None:
        """``plan``, holding back the cheapest finish of the turns still to come
        (``finish_reserve``): at their ``max_tokens`` if that leaves room for this turn,
        else at the least they can be given, else nothing held (the greedy plan). The
        plan and what was held back; None if nothing fits at all."""
        if rest and labels:
            for least in (False, True):
                hold = self.finish_reserve(labels, rest, least)
                planned = self.plan(candidates, prompt_tokens, asked, hold)
                if planned is not None:
                    return (*planned, hold)
        planned = self.plan(candidates, prompt_tokens, asked)
        return None if planned is None else (*planned, 0.0)

    def summary(self) -> dict[str, Any]:
        """For the record: the limit (within a shared budget, what the dialogue could
        reach when it was written, and whose limit that is), spent and left."""
        limit = self.limit
        return {"max_cost": round(limit, 10), "spent": round(self.spent, 10),
                "left": round(limit - self.spent - self.unsure, 10),
                **({"held_for_billing": round(self.unsure, 10)} if self.unsure else {}),
                **({"within": self.within.name} if self.within is not None else {})}


class Admission:
    """Which dialogues of a batch start, under its total (``budget``): one starts only
    while what the total has left, less what the dialogues running are expected to
    spend, can finish it. Expected: the most a dialogue of the batch has spent so far,
    else ``estimate`` (``mode_estimate``), else nothing is known and they start one at a
    time until one has finished. With nothing running, one last dialogue starts on what
    is left when that is less than expected (it may finish for less; the total still
    holds), and no more after it."""

    def __init__(self, budget: Budget, estimate: float | None = None) -> None:
        self.budget = budget
        self.estimate = estimate
        self.ended = budget.spent  # what the dialogues that ended (and earlier runs) spent
        self.running: dict[int, float] = {}
        self.most = 0.0  # the most one dialogue has spent
        self.last = False  # the last try (on less than expected) was made
        self._changed: Any = None

    @property
    def expected(self) -> float | None:
        return self.most or self.estimate

    def free(self) -> float:
        """What is left once the running dialogues' expected costs are set aside."""
        return self.budget.limit - self.ended - sum(self.running.values())

    def can_start(self) -> bool:
        if self.budget.left <= SPENT:
            return False
        expected = self.expected
        if expected is not None and self.free() >= expected - 1e-12:
            return True
        return not self.running and not self.last

    def start(self, key: int) -> None:
        expected = self.expected
        if expected is not None and self.free() < expected - 1e-12:
            self.last = True
        self.running[key] = expected or max(0.0, self.free())

    def end(self, key: int, spent: float) -> None:
        self.running.pop(key, None)
        self.ended += spent
        self.most = max(self.most, spent)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self) -> None:
        """Wait until a running dialogue ends."""
        import anyio

        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()


def mode_estimate(budget: Budget, mode: Any, labels: list[str]) -> float | None:
    """What one dialogue of ``mode`` costs at the least: its turns on the cheapest of
    ``labels`` at their ``max_tokens``, each prompt its template's bytes grown by the
    answers before it at 4 bytes a token. None when no price is known."""
    from dlg.language.mode import merged_settings

    rest: list[tuple[int, int | None]] = []
    grown = 0
    for turn in mode.turns:
        participant = mode.participants.get(turn.participant or "")
        asked = merged_settings(mode.settings, participant.settings if participant else {},
                                turn.settings).get("max_tokens")
        rest.append((prompt_token_bound(str(turn.prompt or "")) + grown, asked))
        grown += 4 * (asked or DEFAULT_OUTPUT)
    estimate = budget.finish_reserve(labels, rest)
    return estimate or None


def tree_spent(dialogue: Any) -> float:
    """What a dialogue and the sub-dialogues its record knows the cost of have spent
    (``Dialogue.total_cost_usd``, which counts them)."""
    return float(dialogue.total_cost_usd)


async def budgeted_call(budget: Budget | None, pool: Any, choice: Any, messages: Any,
                        settings: dict[str, Any], **options: Any) -> Any:
    """One more call within a turn (a repair), its worst case reserved first: the result,
    or None when the budget cannot pay for it."""
    from dlg.models.calls import call_model
    from dlg.models.resilience import AllCandidatesFailed

    reservation = None
    # the schema is sent beside the messages and billed with them
    size = prompt_size(messages, pool, options.get("schema"))
    if budget is not None:
        label, bound = pool.label(choice), size
        await count_prompt(size, [label, *(pool.label(c) for c in options.get("fallbacks")
                                          or ())], options.get("registry"), pool,
                           options.get("requires"))
        n = budget.fit(label, bound, settings.get("max_tokens"))
        if n is None:
            return None
        reservation = budget.reserve(label, bound, n)
        settings = {**settings, "max_tokens": n}  # what was reserved for, no more
    cost = None
    try:
        if reservation is not None and budget is not None:
            held, shared = reservation, budget
            options["guard"] = lambda c, failed: shared.covers(held, pool.label(c), failed)
        result = await call_model(pool, choice, messages, settings, **options)
        cost = result.cost_usd
        if budget is not None and result.attempts:
            usage = result.usage
            billed = budget.billed(result.attempts, size
                                   if usage is None or usage.estimated else usage.prompt)
            cost = (cost or 0.0) + billed
            result.cost_usd = cost if cost or result.cost_usd is not None else None
        return result
    except AllCandidatesFailed as exc:
        if budget is not None:
            cost = budget.billed(exc.attempts, size)
        raise
    finally:
        if reservation is not None and budget is not None:
            budget.settle(reservation, cost)
