"""The word lists choosing sentences needs, for English, Spanish, French, German,
Portuguese and Italian, and a cheap guess of which one a text is in.

``language(text)`` counts the text's words that are in each language's stop words (the
short function words every text of it is full of) and takes the language with the most,
English on a tie or when none is found. ``terms(text)`` is the text's words without its
language's stop words, lightly stemmed: English loses a plural or verb ending ("changes",
"changed" and "change" alike), the others their accents and a plural or gender ending
("envíos" and "envío" alike). Question words are stop words in every language: a question
matches on what it is about.

Also the words that tell what a question asks for or what a sentence holds, in all six
languages at once (a question in one language is matched against its own kind of
words): ``WHY`` (a question asking for a cause), ``CAUSE`` (a sentence giving one),
``WHO``, ``WHEN``, ``HOW_MUCH``, and ``CONTINUES``, the words that open a sentence going
on from the one before ("It came to 4,318 kg.", "The figure was ...", "Eso costó ...").
No list is complete; a text in another language is read as English (its words still
match, only its function words are left to the inverse document frequency).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

__all__ = ["CAUSE", "CONTINUES", "HOW_MUCH", "LANGUAGES", "STOP", "WHEN", "WHO", "WHY",
           "continues", "language", "stem", "terms"]

LANGUAGES = ("en", "es", "fr", "de", "pt", "it")
_WORD = re.compile(r"[\w']+", re.UNICODE)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOP: dict[str, frozenset[str]] = {
    "en": _words(
        "a an and are as at be but by did do does for from had has have he her his how i if "
        "in into is it its me my no not of on or our she so that the their them then there "
        "these they this to us was we were what when where which who whom why will with "
        "would you your"),
    "es": _words(
        "el la los las un una unos unas y o pero de del al a en con por para sin sobre es "
        "son era fue ser está están estaba ha han había se su sus lo le les que qué quién "
        "quiénes cuál cuáles cuándo cuánto cuánta cuántos cuántas dónde cómo porqué este esta "
        "estos estas ese esa esos esas yo tú él ella ellos ellas nos nosotros mi mis no ni "
        "muy más ya también como si"),
    "fr": _words(
        "le la les un une des du de d' l' et ou mais à au aux en dans sur sous par pour avec "
        "sans après avant selon est sont était été être a ont avait se sa son ses leur leurs "
        "ce cet cette ces "
        "qui que qu' quoi quel quelle quels quelles quand combien où comment pourquoi je tu "
        "il elle ils elles nous vous ne pas plus y très aussi comme si"),
    "de": _words(
        "der die das den dem des ein eine einen einem einer eines und oder aber von zu zum "
        "zur im in an am auf aus bei mit nach für über unter ohne ist sind war waren wurde "
        "wurden sein hat haben hatte sich sie er es ich du wir ihr ihre ihren sein seine "
        "wer was wann wie wo warum weshalb wieso welche welcher welches viel viele nicht "
        "kein keine auch noch sehr als dass ob"),
    "pt": _words(
        "o a os as um uma uns umas e ou mas de do da dos das ao aos em no na nos nas com por "
        "pelo pela para sem sobre é são era foi ser está estão estava tem têm tinha se seu "
        "sua seus suas lhe que quem qual quais quando quanto quanta quantos quantas onde como "
        "porque porquê este esta isto esse essa isso eu tu ele ela eles elas nós não muito "
        "mais já também"),
    "it": _words(
        "il lo la i gli le un uno una e ed o ma di del della dei delle degli a al alla ai "
        "alle da dal in nel nella nei con su sul per tra fra è sono era erano stato essere "
        "ha hanno aveva si suo sua suoi sue loro che chi cosa quale quali quando quanto "
        "quanta quanti quante dove come perché questo questa quello quella io tu lui lei noi "
        "voi non più molto già anche"),
}
_ALL_QUESTION_WORDS = _words(
    "how what when where which who whom whose why qué quién quiénes cuál cuáles cuándo "
    "cuánto cuánta cuántos cuántas dónde cómo qui quoi quel quelle quels quelles quand "
    "combien où comment pourquoi wer was wann wie wo warum weshalb wieso welche welcher "
    "welches quem qual quais quando quanto quanta quantos quantas onde como porquê chi "
    "cosa quale quali quanti quante dove perché")
_SUFFIXES = {
    "en": ("ing", "ed", "es", "s"),
    "es": ("es", "s"), "pt": ("es", "s"), "it": (), "fr": ("s", "x"),
    "de": ("ern", "em", "er", "en", "es", "e", "s", "n"),
}
_VOWEL_END = {"es": "aeo", "pt": "aeo", "it": "aeio", "fr": "e", "de": ""}

# what a question asks for, and what a sentence holds, in any of the six languages
WHY = re.compile(r"\b(?:why|what caused|for what reason|por ?qu[eé]|pourquoi|warum|weshalb|"
                 r"wieso|perch[eé]|per quale motivo)\b", re.IGNORECASE)
CAUSE = re.compile(
    r"\b(?:because|due to|owing to|caused by|on account of|as a result of|thanks to|"
    r"porque|debido a|a causa de|por culpa de|ya que|puesto que|gracias a|"
    r"parce que|parce qu'|à cause de|en raison de|grâce à|dû à|due à|puisque|"
    r"weil|wegen|aufgrund|infolge|"
    r"perch[eé]|poich[eé]|dovut[oa] a|per via d[ie]|"
    r"devido a|por causa de|graças a|visto que)\b", re.IGNORECASE)
WHO = re.compile(r"\b(?:who|whom|whose|qui[eé]n(?:es)?|qui|wer|wem|wen|quem|chi)\b",
                 re.IGNORECASE)
WHEN = re.compile(r"\b(?:when|what (?:date|day|time)|which (?:date|day)|cu[aá]ndo|quand|"
                  r"wann|quando|qu[eé] d[ií]a|quel jour|welche[mnr]? (?:tag|datum))\b",
                  re.IGNORECASE)
HOW_MUCH = re.compile(
    r"\bhow (?:many|much|heavy|long|far|big|large|old|expensive|tall|wide|high|often|"
    r"costly)\b|\bwhat (?:number|amount|size|price|cost|weight|share|percentage|total)\b|"
    r"\bweigh\b|\bcu[aá]nt[oa]s?\b|\bcombien\b|\bwie (?:viele?|hoch|lang|schwer|teuer|"
    r"gro(?:ß|ss))\b|\bquant[oaie]s?\b", re.IGNORECASE)
# a sentence opening with one of these goes on with the one before: a pronoun, a
# connective, or "the" and a word that stands for what was just named ("The figure ...")
CONTINUES = _words(
    "it its this that these those they their he she his her there which also so then thus "
    "hence therefore however still yet "
    "eso esto ello esta este su sus además entonces así luego "
    "il elle ils elles cela ceci ça son sa ses leur ensuite donc ainsi "
    "er sie es dies dieser diese sein seine ihr ihre dann also danach deshalb daher "
    "isso isto ele ela eles elas seu sua então assim depois "
    "esso essa questo questa ciò quindi allora poi inoltre")
SHELL = _words(  # "the <word>" opening a sentence refers back ("The figure was 45,123 kg.")
    "figure total amount number sum result outcome answer value count price reason cause "
    "bill invoice final latest same")
_ARTICLES = _words("the el la le die der das o a il lo")


_SHARED: dict[str, tuple[str, ...]] = {}  # each stop word: the languages it is one of
for _lang in LANGUAGES:
    for _w in STOP[_lang]:
        _SHARED[_w] = (*_SHARED.get(_w, ()), _lang)


def language(text: str) -> str:
    """The language ``text`` is most likely in (one of ``LANGUAGES``; ``en`` when none of
    their stop words is found or on a tie)."""
    counts = dict.fromkeys(LANGUAGES, 0.0)
    for token in _WORD.findall(text.lower()):
        word = token.split("'", 1)[0] + "'" if "'" in token[1:] else token  # "d'après"
        for lang in _SHARED.get(word, ()):
            counts[lang] += 1 / len(_SHARED[word])  # "la" is weak, "der" strong evidence
    best = max(LANGUAGES, key=lambda lang: counts[lang])  # first on a tie: en
    return best if counts[best] > counts["en"] else "en"


def terms(text: str, lang: str | None = None, also: str | None = None) -> list[str]:
    """The words of ``text`` that are not stop words (of ``lang``, else of the language
    it is in, nor question words of any), lowercased and stemmed. With ``also`` (another
    language), each word is read under both languages' rules, each form it has once: a
    guess can be wrong ("Die Hard was released in 1988." reads as German), and its words
    still match a question read under ``also``."""
    lang = lang or language(text)
    if also is None or also == lang:
        stop = STOP[lang]
        words = (m.lower() for m in _WORD.findall(text))
        if lang in ("fr", "it"):  # "l'envoi", "d'après", "dell'anno": the word after
            words = (w.rsplit("'", 1)[-1] or w for w in words)
        return [stem(w, lang) for w in words if w not in stop and w not in _ALL_QUESTION_WORDS]
    out: list[str] = []
    for first, second in zip(_forms(text, lang), _forms(text, also), strict=True):
        if first is not None:
            out.append(first)
        if second is not None and second != first:
            out.append(second)
    return out


def _forms(text: str, lang: str) -> list[str | None]:
    """Each word of ``text`` stemmed under ``lang``, None for a stop word of it or a
    question word (so two languages' readings line up word by word)."""
    stop = STOP[lang]
    return [None if w in stop or w in _ALL_QUESTION_WORDS else stem(w, lang)
            for w in _words_of(text, lang)]


def _words_of(text: str, lang: str) -> Iterator[str]:
    """The words of ``text``, lowercased (in French and Italian, the word after an
    apostrophe: "l'envoi", "d'après", "dell'anno")."""
    words = (m.lower() for m in _WORD.findall(text))
    if lang in ("fr", "it"):
        return (w.rsplit("'", 1)[-1] or w for w in words)
    return words


def stem(word: str, lang: str = "en") -> str:
    """``word`` without a plural or verb ending (English) or its accents and a plural or
    gender ending (the others): a light stemmer."""
    if lang != "en":
        word = "".join(c for c in unicodedata.normalize("NFKD", word)
                       if not unicodedata.combining(c))
    for suffix in _SUFFIXES[lang]:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    if lang == "en":
        return word[:-1] if word.endswith("e") and len(word) > 4 else word
    vowels = _VOWEL_END[lang]
    return word[:-1] if vowels and word[-1] in vowels and len(word) > 4 else word


def continues(sentence: str) -> bool:
    """Whether ``sentence`` opens as going on from the one before it."""
    words = _WORD.findall(sentence[:40].lower())
    if not words:
        return False
    if words[0] in CONTINUES:
        return True
    return len(words) > 1 and words[0] in _ARTICLES and words[1] in SHELL
