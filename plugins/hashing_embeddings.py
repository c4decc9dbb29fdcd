"""The ``hashing`` embeddings: offline, no key, no download, no model.

Words and word pairs are hashed into a fixed-size vector (the "hashing trick"), weighted
by a dampened count and normalised, so cosine similarity is the overlap of vocabulary,
with pairs rewarding shared phrases. It is what ``context_compression: relevant_only``
uses when no other embeddings are configured: crude next to a neural model, but
deterministic, fast (microseconds a text) and always there. A plugin registering a
LangChain ``Embeddings`` (``register_embeddings``) replaces it by name
(``DLG_EMBEDDINGS``).
"""

from __future__ import annotations

import hashlib
import math
import re
from itertools import pairwise

from dlg.plugin import hookimpl

DIMENSIONS = 1024
_WORD = re.compile(r"[\w']+", re.UNICODE)


class HashingEmbeddings:
    name = "hashing"

    def __init__(self, dimensions: int = DIMENSIONS):
        self.dimensions = dimensions

    def _vector(self, text: str) -> list[float]:
        words = [w.lower() for w in _WORD.findall(text or "")]
        counts: dict[int, float] = {}
        for token in (*words, *(f"{a} {b}" for a, b in pairwise(words))):
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dimensions
            sign = 1.0 if digest[4] & 1 else -1.0
            counts[index] = counts.get(index, 0.0) + sign
        vector = [0.0] * self.dimensions
        for index, value in counts.items():
            vector[index] = math.copysign(math.log1p(abs(value)), value)
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


@hookimpl
def register_embeddings(register):
    register("hashing", HashingEmbeddings)
