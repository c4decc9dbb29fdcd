"""Choosing within turns: the sentences of earlier turns a turn reads under a token limit.

Each text is cut into chunks (sentences; a long one into its clauses, a long clause into
windows of words). Every chunk is scored against what the reading turn asks (its role,
description and prompt template): lexical overlap, BM25-weighted over all the chunks read
(so words every turn repeats count for little), plus the cosine similarity of the
embeddings when an embeddings object is given (``hashing`` offline, or a plugin's). First
each text's best chunk is taken, best texts first, while half the limit lasts (so every turn read is
represented when it can be); then the best chunks of all, while they fit. A text keeps
its chunks in their original order, with ``[...]`` where text was left out.

When the turn asks questions (its prompt's sentences ending in ``?``, a sentence asking
several split at each question word), each is scored on its own (a chunk's score is its
best over them and the whole), each question's best chunks are taken first (the best of
each, then the second best of each, up to three, in half the limit), and a chunk
holding the kind of fact a question asks for (``who``: a name; ``when``: a date; ``how
many``, ``how heavy``...: a number; ``why``: a cause, "because", "due to"...) that
shares a word with it scores higher: the answer's type is a signal that needs no
embeddings when the words of the question and the answer differ ("How heavy is the
shipment?" and "the shipment weight came to 4,318 kg"). A chunk that goes on from the
one before it ("It came to ...", "The figure was ...") scores at least as well as that
one; so does, for a question asking for a kind of fact, a chunk holding that kind right
after one that holds none of that kind, whatever its opening words ("The shipment weight
was checked by Anna Lee. Scales showed 45,123 kg.": a name is not the number asked for;
one chunk on, and without the kind's bonus: the chunk before's score, not its words, is
carried).

Words are matched without the stop words of each text's language and lightly stemmed,
and question words and causal markers are known, in English, Spanish, French, German,
Portuguese and Italian (``dlg.running.languages``). A text guessed to be in another
language than the query is read under the query's language too (the guess is from a few
function words: "Die Hard was released in 1988." reads as German).

``keep_facts`` is the check on a summary: the numbers, dates and names of the source
that a summary dropped are added back, each with the words before it, within a limit.
"""

from __future__ import annotations

import math
import re
from typing import Any

from dlg.models.calls import estimate_tokens
from dlg.running.languages import CAUSE, HOW_MUCH, STOP, WHEN, WHO, WHY, continues, language
from dlg.running.languages import terms as language_terms

__all__ = ["ELIDED", "asks", "chunks", "cosine", "facts", "keep_facts", "lexical_scores",
           "select", "wanted"]

ELIDED = "[...]"
WINDOW = 40  # words in a chunk cut from a sentence longer than twice this
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)|\n\s*\n?")
# numbers (1,234.5 12% 2025-03-14 10:30), and runs of capitalised words (names)
_NUMBER = re.compile(r"\d(?:[\d,.:/-]*\d)?%?")
_NAME = re.compile(r"\b[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+)*")
_PERSON = re.compile(r"\b[A-Z][a-z'-]+\s+[A-Z][a-z'-]+")  # two capitalised words
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}:\d{2}\b|\b(?:jan|feb|mar|apr|may|jun|jul|"
                   r"aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{1,2}\b|\b\d{1,2}\s+(?:jan|feb|mar|apr|"
                   r"may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b", re.IGNORECASE)
_QUESTION = re.compile(r"[^.?!\n]*\?")
_SEVERAL = re.compile(r"(?:,\s*|\s+and\s+)(?=(?:who|whom|whose|what|when|where|which|how)\b)",
                      re.IGNORECASE)
_WANTS = (("cause", WHY), ("name", WHO), ("date", WHEN), ("number", HOW_MUCH))
_NUMBER_WORDS = re.compile(r"\b(?:hundred|thousand|million|billion|dozen)s?\b", re.IGNORECASE)
_CLAUSE = re.compile(r"(?<=[;:])\s+|\s+(?=[\u2013\u2014]\s)")  # after ; and :, before dashes
_COMMA = re.compile(r"(?<=,)\s+")
TYPE_BONUS = 0.5  # added to a chunk's score for holding the kind of fact asked for
ASKED = 3  # each question's best chunks taken first


def chunks(text: str) -> list[str]:
    """``text`` cut into sentences; a sentence longer than ``WINDOW`` words into its
    clauses (at ``;``, ``:`` and dashes, then at commas), a clause longer than twice
    ``WINDOW`` words into windows of ``WINDOW`` words."""
    out: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        sentence = sentence.strip()
        if not sentence:
            continue
        if len(sentence.split()) <= WINDOW:
            out.append(sentence)
            continue
        for clause in _clauses(sentence):
            words = clause.split()
            if len(words) <= 2 * WINDOW:
                out.append(clause)
            else:
                out.extend(" ".join(words[i:i + WINDOW]) for i in range(0, len(words),
                                                                        WINDOW))
    return out


def _clauses(sentence: str) -> list[str]:
    """A long sentence's clauses: cut at ``;``, ``:`` and dashes, a part still longer
    than ``WINDOW`` words also at its commas, its pieces joined again up to half
    ``WINDOW`` words each."""
    out: list[str] = []
    for part in _CLAUSE.split(sentence):
        part = part.strip()
        if not part:
            continue
        if len(part.split()) <= WINDOW:
            out.append(part)
            continue
        group: list[str] = []
        for piece in _COMMA.split(part):
            if group and len(" ".join([*group, piece]).split()) > WINDOW // 2:
                out.append(" ".join(group))
                group = []
            group.append(piece)
        out.append(" ".join(group))
    return out


def asks(query: str) -> list[str]:
    """The questions in ``query``: its sentences ending in ``?``, one asking several
    ("who ..., what ... and when ...?") cut at each question word."""
    out: list[str] = []
    for question in _QUESTION.findall(query):
        out.extend(p.strip() for p in _SEVERAL.split(question) if p.strip())
    return out


def wanted(question: str) -> str | None:
    """The kind of fact a question asks for: ``name``, ``date``, ``number``, or None."""
    for kind, pattern in _WANTS:
        if pattern.search(question):
            return kind
    return None


def _holds(chunk: str) -> set[str]:
    """The kinds of fact in ``chunk``."""
    kinds = set()
    if CAUSE.search(chunk):
        kinds.add("cause")
    if _DATE.search(chunk):
        kinds.add("date")
    if any(not _DATE.search(n) and any(c.isdigit() for c in n)
           for n in _NUMBER.findall(_DATE.sub(" ", chunk))) or _NUMBER_WORDS.search(chunk):
        kinds.add("number")
    if _PERSON.search(chunk):
        kinds.add("name")
    return kinds


def _terms(text: str, lang: str | None = None, also: str | None = None) -> list[str]:
    """The words of ``text`` that are not stop words (of ``lang``, else of the language
    it is in), lowercased and stemmed, also read under ``also``'s rules when given
    (``dlg.running.languages``)."""
    return language_terms(text, lang, also)


def _links(pieces: list[tuple[int, int, str]]) -> list[int | None]:
    """For each chunk, the chunk before it in the same text when it goes on with it (it
    opens with a pronoun, a connective or a word standing for what was just named, in
    any of ``dlg.running.languages``' languages: "It came to 4,318 kg.", "The figure was
    4,318 kg.", "Eso costó 4.318 EUR."), else None."""
    out: list[int | None] = [None] * len(pieces)
    for k in range(1, len(pieces)):
        if pieces[k][0] == pieces[k - 1][0] and continues(pieces[k][2]):
            out[k] = k - 1
    return out


def _answers(links: list[int | None], pieces: list[tuple[int, int, str]],
             kinds: list[set[str]], kind: str | None) -> list[int | None]:
    """``links`` and, for a question asking for ``kind``, each chunk holding that kind
    after one in the same text that holds no fact of that kind (one chunk on, whatever
    its opening words: "The shipment weight was checked by Anna Lee. Scales showed
    45,123 kg."; a chunk holding the kind is an answer of its own, not an introduction)."""
    if kind is None:
        return links
    out = list(links)
    for k in range(1, len(pieces)):
        if (out[k] is None and pieces[k][0] == pieces[k - 1][0] and kind in kinds[k]
                and kind not in kinds[k - 1]):
            out[k] = k - 1
    return out


def _carry(scores: list[float], links: list[int | None]) -> list[float]:
    """A chunk that goes on with the one before scores at least as well as that one."""
    out = list(scores)
    for k, before in enumerate(links):
        if before is not None:
            out[k] = max(out[k], out[before])
    return out


def lexical_scores(query: str, docs: list[str], k1: float = 1.2, b: float = 0.75,
                   terms: list[list[str]] | None = None, also: str | None = None
                   ) -> list[float]:
    """BM25 scores of ``docs`` against ``query``, the inverse document frequencies taken
    over ``docs`` themselves (``terms``: each doc's, when worked out already; ``also``: a
    language the query's words are read under as well as their own)."""
    if terms is None:
        terms = [_terms(d) for d in docs]
    if not terms:
        return []
    frequency: dict[str, int] = {}
    for words in terms:
        for w in set(words):
            frequency[w] = frequency.get(w, 0) + 1
    n = len(docs)
    average = sum(len(t) for t in terms) / n or 1.0
    wanted = set(_terms(query, None, also))
    scores = []
    for words in terms:
        counts: dict[str, int] = {}
        for w in words:
            if w in wanted:
                counts[w] = counts.get(w, 0) + 1
        score = 0.0
        for w, c in counts.items():
            idf = math.log(1 + (n - frequency[w] + 0.5) / (frequency[w] + 0.5))
            score += idf * c * (k1 + 1) / (c + k1 * (1 - b + b * len(words) / average))
        scores.append(score)
    return scores


def select(texts: list[str], query: str, max_tokens: int, embed: Any = None
           ) -> tuple[list[str | None], int]:
    """For each of ``texts``, what is kept of it (the whole text, an excerpt with
    ``[...]`` where text was left out, or None), and the tokens kept in all."""
    pieces = [(i, j, c) for i, text in enumerate(texts) for j, c in enumerate(chunks(text))]
    if not pieces:
        return [None] * len(texts), 0
    docs = [c for _, _, c in pieces]
    questions = asks(query)
    vectors = embed.embed_documents(docs) if embed is not None else None
    links = _links(pieces)
    # each text's own language (a turn is in one), and the query's too: a guess can be
    # wrong (an English turn with "Die Hard was ..." reads as German), so a text guessed
    # other than the query is matched under both (an English dialogue matches as English)
    asked = language(query)
    langs = [language(text) for text in texts]
    also = [None if lang == asked else asked for lang in langs]
    terms = [_terms(d, langs[i], also[i]) for i, _, d in pieces]  # once: each question too
    scores = _carry(_scores(query, lexical_scores(query, docs, terms=terms), embed, vectors),
                    links)
    kinds = [_holds(c) for c in docs] if questions else []
    firsts_asked: list[list[int]] = []  # each question's best chunks
    for question in questions:
        bm25 = lexical_scores(question, docs, terms=terms, also=asked)
        kind = wanted(question)
        joined = _answers(links, pieces, kinds, kind)
        own = _carry(_scores(question, bm25, embed, vectors), joined)
        lexical = _carry(bm25, links)  # the kind's bonus: for a chunk's own words
        if kind is not None:
            own = [s + TYPE_BONUS * (kind in kinds[k] and lexical[k] > 0)
                   for k, s in enumerate(own)]
        scores = [max(a, b) for a, b in zip(scores, own, strict=True)]
        firsts_asked.append(sorted(range(len(docs)), key=lambda k: (-own[k], k))[:ASKED])
    mine: dict[int, list[int]] = {}
    for k, (i, _, _) in enumerate(pieces):
        mine.setdefault(i, []).append(k)
    chosen: set[int] = set()
    size = [0] * len(texts)  # the characters of each text's excerpt as chosen so far
    count = [0] * len(texts)  # and its chunks chosen
    used = [0]  # the tokens of them all

    def excerpt(i: int) -> str | None:
        take = [k for k in mine.get(i, ()) if k in chosen]
        if not take:
            return None
        if len(take) == len(mine[i]):
            return texts[i].strip()
        parts: list[str] = []
        for k in mine[i]:
            if k in chosen:
                parts.append(pieces[k][2])
            elif not parts or parts[-1] != ELIDED:
                parts.append(ELIDED)
        return " ".join(parts)

    def taken(k: int, i: int) -> bool:  # a text's ends count as taken: nothing to elide
        return k < 0 or k >= len(pieces) or pieces[k][0] != i or k in chosen

    def grown(k: int) -> int:
        """The characters of chunk ``k``'s text's excerpt with ``k`` taken too, worked out
        from its neighbours (making the excerpt for every chunk tried was quadratic in a
        turn of thousands of short sentences or clauses)."""
        i = pieces[k][0]
        if count[i] + 1 == len(mine[i]):
            return len(texts[i].strip())
        base = size[i] if count[i] else len(ELIDED)  # nothing taken: one elided run
        before, after = taken(k - 1, i), taken(k + 1, i)
        chunk = len(pieces[k][2])
        if before and after:  # the run it was is gone
            return base - len(ELIDED) + chunk
        if before or after:  # the run it was in goes on at one side
            return base + chunk + 1
        return base + chunk + 2 + len(ELIDED)  # the run is cut in two

    def grow(k: int, limit: int) -> bool:
        """Take chunk ``k`` if the excerpts still fit in ``limit``."""
        if k in chosen:
            return True
        i = pieces[k][0]
        chars = grown(k)
        before, after = _tokens(size[i]), _tokens(chars)
        if used[0] - before + after > limit:
            return False
        chosen.add(k)
        count[i] += 1
        size[i] = chars
        used[0] += after - before
        return True

    for rank in range(ASKED):  # each question's best chunks, in turn, in half the limit
        for best in firsts_asked:
            if rank < len(best) and best[rank] not in chosen:
                grow(best[rank], max_tokens // 2)
    order = sorted(range(len(pieces)), key=lambda k: (-scores[k], k))
    firsts: dict[int, int] = {}
    for k in order:
        firsts.setdefault(pieces[k][0], k)
    for k in sorted(firsts.values(), key=lambda k: (-scores[k], k)):
        if not grow(k, max_tokens // 2):  # each text's best chunk, best first, in half
            break
    for k in order:  # then the best chunks of all, while they fit
        if k not in chosen:
            grow(k, max_tokens)
    kept = [excerpt(i) for i in range(len(texts))]
    return kept, sum(estimate_tokens(e) for e in kept if e)  # what _tokens counted


def _tokens(chars: int) -> int:
    """``estimate_tokens`` of a text of ``chars`` characters."""
    return -(-chars // 4) if chars else 0


def _scores(query: str, lexical: list[float], embed: Any, vectors: Any) -> list[float]:
    """Each doc's BM25 score against ``query`` (``lexical``, scaled to the best one's),
    plus its embedding's cosine similarity to the query's when embeddings are given."""
    top = max(lexical) or 1.0
    scores = [s / top for s in lexical]
    if embed is not None:
        target = embed.embed_query(query)
        scores = [s + cosine(v, target) for s, v in zip(scores, vectors, strict=True)]
    return scores


def facts(text: str) -> list[str]:
    """The numbers and dates, then the names, in ``text`` (a name: capitalised words
    that do not only start a sentence), each once."""
    found: list[str] = []
    for m in _NUMBER.finditer(text):
        found.append(m.group())
    for m in _NAME.finditer(text):
        name = m.group()
        start = m.start()
        before = text[:start].rstrip()
        if " " not in name and (not before or before[-1] in ".!?:\n#"):
            continue  # a single capitalised word starting a sentence: not a name
        if name.lower() in STOP["en"]:
            continue
        found.append(name)
    return list(dict.fromkeys(found))


def keep_facts(source: str, summary: str, max_tokens: int) -> str:
    """``summary`` with the facts of ``source`` it dropped added back (each with up to
    four words before it, for what it is; overlapping ones as one), as many as fit in
    ``max_tokens``."""
    missing = [f for f in facts(source) if f not in summary]
    spans: list[list[int]] = []
    for fact in missing:
        at = source.find(fact)
        before = source[:at]
        words = before.split()[-4:]
        start = before.rfind(words[0]) if words else at
        sentence = max(before.rfind(". "), before.rfind("\n")) + 1  # not past its sentence
        span = [max(start, sentence), at + len(fact)]
        merged = [s for s in spans if s[0] <= span[1] and span[0] <= s[1]]
        for s in merged:
            span = [min(span[0], s[0]), max(span[1], s[1])]
        trial = sorted([s for s in spans if s not in merged] + [span])
        if estimate_tokens(_also(summary, source, trial)) > max_tokens:
            continue  # a shorter one may still fit
        spans = trial
    return _also(summary, source, spans) if spans else summary


def _also(summary: str, source: str, spans: list[list[int]]) -> str:
    """The summary and the facts added back, a sentence each (so they can be chosen
    from one by one)."""
    added = [source[a:b].strip(" ,;") for a, b in spans]
    return f"{summary} Also: {'. '.join(s[0].upper() + s[1:] for s in added)}."


def cosine(a: list[float], b: list[float]) -> float:
    """The cosine similarity of two vectors (0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
