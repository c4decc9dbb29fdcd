"""The embedded model's text: dlg's sampling defaults against the earlier ones, same run.

    python bench/bench_local_text.py             # 3 topics, seeds 1 and 2
    python bench/bench_local_text.py --quick     # 2 topics, seed 1

Runs the ``debate`` mode (six turns, each reading the earlier ones) on the default local
model with its sampling defaults, and with the defaults dlg had before (a repetition
penalty of 1.3 over the last 256 tokens, no DRY), on the same topics and seeds. Prints
what can be counted of readable text, lower is better for each:

- repeated 4-grams: the share of a turn's 4-word sequences it already used (loops);
- copied 8-grams: the share of a turn's 8-word sequences found in earlier turns (a small
  model copies the transcript in its prompt);
- run-on sentences: the share of sentences over 40 words (a penalty on common tokens
  penalises full stops);
- garbled: mojibake, HTML entities and broken contractions per 1,000 words;
- turns cut at ``max_tokens``, and seconds per turn.

Needs ``dlg models pull``. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

import dlg

TOPICS = ["Should cities ban cars from their centres?",
          "Is remote work better than office work?",
          "Should schools teach programming to every child?"]
EARLIER = "local?repeat_penalty=1.3&repeat_last_n=256&dry_multiplier=0"
GARBLED = re.compile(r"â€|Ã.|&#\w*;?|[A-Za-z][\u00b4`][A-Za-z]|``")


def _grams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def measure(texts: list[str], cut: int) -> dict[str, float]:
    """The counts above for one dialogue's answers, in order."""
    repeated = copied = runs = garbled = 0
    fours = eights = sentences = words_total = 0
    earlier: set[tuple[str, ...]] = set()
    for text in texts:
        words = re.findall(r"[a-z']+", text.lower())
        four, eight = _grams(words, 4), _grams(words, 8)
        repeated += len(four) - len(set(four))
        fours += len(four)
        copied += sum(1 for g in eight if g in earlier)
        eights += len(eight)
        earlier |= set(eight)
        parts = [p for p in re.split(r"[.!?\n]+", text) if p.strip()]
        runs += sum(1 for p in parts if len(p.split()) > 40)
        sentences += len(parts)
        garbled += len(GARBLED.findall(text))
        words_total += len(words)
    return {"repeated_4grams": repeated / max(fours, 1),
            "copied_8grams": copied / max(eights, 1),
            "run_on_sentences": runs / max(sentences, 1),
            "garbled_per_1000_words": 1000 * garbled / max(words_total, 1),
            "cut_turns": cut / max(len(texts), 1)}


def run_one(spec: str, topic: str, seed: int) -> tuple[dict[str, float], float]:
    mode = {"name": "debate-seeded", "extends": "debate", "settings": {"seed": seed}}
    started = time.perf_counter()
    d = dlg.run_sync(mode, model=spec, topic=topic, store=None)
    seconds = (time.perf_counter() - started) / len(d.turns)
    assert d.status == "completed", d.error
    limit = 400  # the debate mode's max_tokens
    cut = sum(1 for t in d.turns if t.usage.completion >= limit)
    return measure([t.response or "" for t in d.turns], cut), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    topics, seeds = (TOPICS[:2], [1]) if args.quick else (TOPICS, [1, 2])
    results: dict[str, list[tuple[dict[str, float], float]]] = {"earlier": [], "now": []}
    for topic in topics:
        for seed in seeds:  # in turn, so the machine's load hits both alike
            results["earlier"].append(run_one(EARLIER, topic, seed))
            results["now"].append(run_one("local", topic, seed))
    keys = list(results["now"][0][0])
    print(f"{len(topics)} topics x {len(seeds)} seeds, debate mode (6 turns each)\n")
    print(f"{'figure (lower is better)':<28} {'earlier':>9} {'now':>9}")
    for key in [*keys, "seconds_per_turn"]:
        row = []
        for name in ("earlier", "now"):
            values = [s if key == "seconds_per_turn" else m[key] for m, s in results[name]]
            row.append(statistics.mean(values))
        print(f"{key:<28} {row[0]:>9.3f} {row[1]:>9.3f}")


if __name__ == "__main__":
    main()
