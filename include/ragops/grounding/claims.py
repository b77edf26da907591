"""Answers as atomic claims, and the facts a claim commits to.

A claim is the smallest part of an answer that can be true or false on its own: a sentence,
split again at semicolons and at clause-joining conjunctions when both sides are full clauses.
Each claim carries what a supporting passage must also say: its numbers (with their units), its
negation polarity, its names (identifiers, capitalised words, acronyms) and its content terms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ragops.evaluation.metrics import CITATION_RE, split_sentences

STOPWORDS = frozenset("""a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just let me more most my myself
nor of off on once only or other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves one ones its it's use used uses
using may might must shall via per etc e.g i.e instead rather even still yes every each happen happens happened
occur occurs make makes made get gets got take takes took go goes went come comes way thing things also""".split())
# Words that flip a statement. "no" counts only before a noun phrase ("no alias"), not as an answer word.
NEGATIONS = frozenset("not no never none nothing nobody neither nor cannot without n't isn't aren't wasn't weren't "
                      "doesn't don't didn't won't wouldn't can't couldn't shouldn't hasn't haven't hadn't "
                      "mustn't needn't".split())
NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
                "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
                "forty": 40, "fifty": 50, "sixty": 60, "hundred": 100, "thousand": 1000, "million": 1000000,
                "once": 1, "twice": 2, "single": 1, "double": 2, "triple": 3, "half": 0.5, "dozen": 12}
# Quantities written as words: "daily" and "weekly" are as much a fact as "every 7 days".
FREQUENCY_WORDS = frozenset("hourly daily nightly weekly monthly yearly annually immediately instantly "
                            "minutely".split())
# A negation's scope: the content words right after the cue, up to a clause boundary.
_SCOPE_END = frozenset("but however although though whereas while because since so which that who , ; : .".split())
_CUES_2 = (("rather", "than"), ("instead", "of"), ("no", "longer"), ("fails", "to"), ("fail", "to"))
UNITS = {"ms": "ms", "millisecond": "ms", "milliseconds": "ms", "s": "s", "sec": "s", "secs": "s", "second": "s",
         "seconds": "s", "min": "min", "mins": "min", "minute": "min", "minutes": "min", "h": "h", "hr": "h",
         "hrs": "h", "hour": "h", "hours": "h", "day": "d", "days": "d", "d": "d", "week": "w", "weeks": "w",
         "month": "mo", "months": "mo", "year": "y", "years": "y", "kb": "kb", "kib": "kb", "mb": "mb", "mib": "mb",
         "gb": "gb", "gib": "gb", "tb": "tb", "%": "%", "percent": "%", "x": "x", "times": "x"}
_NUM_RE = re.compile(r"(?<![\w.])(\d+(?:[.,:]\d+)*)(?:\s*(%|[a-zA-Z]+))?")
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@/:'-]*[A-Za-z0-9%]|[A-Za-z0-9]")
# per-token tests, compiled once (facts() runs on every clause of every retrieved passage)
_ALPHA = re.compile(r"[a-z]+").fullmatch
_CAMEL = re.compile(r"[a-z][A-Z]").search
_DIGIT = re.compile(r"[0-9]").search
_NAME_TOK = re.compile(r"[A-Za-z_][A-Za-z0-9_./@-]*[A-Za-z0-9_]|[A-Za-z]")
_CLAUSE_SPLIT = re.compile(r"\s*;\s+|\s+(?:—|--|–)\s+")
_CONJ_SPLIT = re.compile(r",?\s+(?:and then|but|whereas|while|so that|so)\s+|,\s+and\s+(?=(?:it|they|the|this|that|"
                         r"a|an|each|every|its|their|ragops|airflow|chroma)\b)", re.I)


@lru_cache(maxsize=1)
def _stem():  # noqa: ANN202 - PyStemmer's word stemmer
    try:
        import Stemmer

        return Stemmer.Stemmer("english").stemWord
    except ImportError:  # PyStemmer is a dependency; without it, a crude plural strip
        return lambda w: w[:-1] if w.endswith("s") and len(w) > 3 else w


def stem(word: str) -> str:
    return _stem()(word.lower())


def _norm_number(text: str) -> str:
    """'1,000' -> '1000', '05:00' -> '5:00', '3.50' -> '3.5'."""
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):
        text = text.replace(",", "")
    parts = re.split(r"([.:])", text)
    out = []
    for p in parts:
        if p.isdigit():
            out.append(str(int(p)))
        else:
            out.append(p)
    s = "".join(out)
    if "." in s and ":" not in s:
        s = s.rstrip("0").rstrip(".") if re.fullmatch(r"\d+\.\d+", s) else s
    return s


@dataclass(frozen=True)
class Facts:
    numbers: frozenset[str]  # normalised numbers, with "n unit" entries when a unit follows
    units: frozenset[str]  # "n unit" pairs only
    frequencies: frozenset[str]
    negated: bool
    verbal: bool  # the negation is on a verb
    negated_terms: frozenset[str]
    names: frozenset[str]  # lower-cased identifiers, capitalised words, acronyms
    terms: frozenset[str]  # stems of content words


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text)


def numbers(text: str) -> tuple[set[str], set[str]]:
    nums: set[str] = set()
    units: set[str] = set()
    low = text.replace("\u2011", "-")
    for m in _NUM_RE.finditer(low):
        raw, unit = m.group(1), (m.group(2) or "").lower()
        if re.fullmatch(r"\d+\.\d+\.\d+", raw):  # a version: the whole string is the fact
            nums.add(raw)
            continue
        n = _norm_number(raw)
        nums.add(n)
        if unit in UNITS:
            units.add(f"{n} {UNITS[unit]}")
    for w in re.findall(r"[a-z]+", low.lower()):
        if w in NUMBER_WORDS and w not in ("one", "single"):  # "one" is mostly a pronoun
            n = _norm_number(str(NUMBER_WORDS[w])) if NUMBER_WORDS[w] >= 1 else "0.5"
            nums.add(n)
    for m in re.finditer(r"\b(one|two|three|four|five|six|seven|eight|nine|ten|twelve|fifteen|twenty|thirty|sixty)"
                         r"[\s-]+([a-z]+)", low.lower()):
        if m.group(2) in UNITS:
            n = str(NUMBER_WORDS[m.group(1)])
            nums.add(n)
            units.add(f"{n} {UNITS[m.group(2)]}")
    return nums, units


def negated(text: str) -> bool:
    """True when the statement contains a negation (the answer words "No." / "Yes." do not count)."""
    t = re.sub(r"^\s*(no|yes)\s*[,.:;!-]\s*", "", text.strip(), flags=re.I)
    low = t.lower().replace("\u2019", "'")
    low = re.sub(r"--?[a-z][\w-]*", " ", low)  # flags such as --no-check
    toks = re.findall(r"[a-z]+(?:n't)?|n't", low)
    return (any(w in NEGATIONS or w.endswith("n't") for w in toks)
            or any(pair in _CUES_2 for pair in zip(toks, toks[1:], strict=False)))


_VERBAL_NEG = re.compile(r"\b(?:is|are|was|were|does|do|did|can|could|will|would|must|should|has|have|had|may)\s+not\b"
                         r"|\b(?:never|cannot|no longer)\b|n't\b", re.I)


def verbal_negation(text: str) -> bool:
    """A negated verb ("does not run", "never runs"), as opposed to a contrast ("by hash, not by time")."""
    return bool(_VERBAL_NEG.search(text.replace("\u2019", "'")))


def negated_terms(text: str) -> frozenset[str]:
    """Stems of the content words a negation applies to: up to five words after "not", "never",
    "no", "without", "rather than", "instead of" ..., stopping at a clause boundary."""
    t = re.sub(r"^\s*(no|yes)\s*[,.:;!-]\s*", "", text.strip(), flags=re.I)
    toks = re.findall(r"--?[a-z][\w-]*|[A-Za-z0-9][A-Za-z0-9_.@/'-]*[A-Za-z0-9]|[A-Za-z0-9]|[,;:.]",
                      t.replace("\u2019", "'"))
    low = [w.lower() for w in toks]
    out: set[str] = set()
    i = 0
    while i < len(low):
        w = low[i]
        cue = 0
        if w.startswith("-"):
            i += 1
            continue  # a flag such as --no-check
        if w in NEGATIONS or w.endswith("n't"):
            cue = 1
        elif i + 1 < len(low) and (w, low[i + 1]) in _CUES_2:
            cue = 2
        if cue:
            j, taken = i + cue, 0
            while j < len(low) and taken < 5 and low[j] not in _SCOPE_END:
                tok = low[j].strip("'")
                if tok not in STOPWORDS and tok not in NEGATIONS and not tok.isdigit() and len(tok) > 1:
                    out.add(stem(tok) if _ALPHA(tok) else tok)
                    taken += 1
                j += 1
            i = j
            continue
        i += 1
    return frozenset(out)


def names(text: str) -> set[str]:
    """Identifiers and proper names: snake_case, dotted.paths, CamelCase, ACRONYMS, `code`, and capitalised
    words that do not start the sentence."""
    out: set[str] = set()
    for code in re.findall(r"`([^`]{1,80})`", text):
        out.add(code.lower().strip())
    text = re.sub(r"`([^`]{1,80})`", r"\1", text)
    toks = _NAME_TOK.findall(text)
    start = True
    for tok in toks:
        low = tok.lower()
        ident = ("_" in tok or ("." in tok and not tok.endswith(".")) or "/" in tok or "@" in tok
                 or _CAMEL(tok) is not None or _DIGIT(tok) is not None)  # tok is ASCII (_NAME_TOK)
        acronym = len(tok) >= 2 and tok.isupper()
        proper = tok[0].isupper() and not start and low not in STOPWORDS
        if ident or acronym or proper:
            out.add(low.strip("./-"))
        start = False
    return {n for n in out if n and len(n) > 1}


def content_terms(text: str) -> set[str]:
    text = CITATION_RE.sub(" ", text)
    out = set()
    for w in _words(text):
        low = w.lower().strip("'").removesuffix("'s")
        if low in STOPWORDS or low in NEGATIONS or len(low) < 2 or low.isdigit():
            continue
        out.add(stem(low) if _ALPHA(low) else low)
    return out


@lru_cache(maxsize=65536)  # passages repeat across the questions of a run; Facts is immutable
def facts(text: str) -> Facts:
    clean = CITATION_RE.sub(" ", text)
    nums, units = numbers(clean)
    freq = {w for w in re.findall(r"[a-z]+", clean.lower()) if w in FREQUENCY_WORDS and w != "never"}
    return Facts(frozenset(nums), frozenset(units), frozenset(freq), negated(clean), verbal_negation(clean), negated_terms(clean),
                 frozenset(names(clean)),
                 frozenset(content_terms(clean)))


@dataclass(frozen=True)
class Claim:
    text: str  # the claim without citations
    sentence: int  # index of the answer sentence it came from
    citations: tuple[int, ...]  # [n] of its sentence


def split_clauses(sentence: str) -> list[str]:
    """A sentence cut at semicolons, dashes and clause-joining conjunctions; a piece of fewer than four
    words stays with the piece before it (it is rarely a statement of its own)."""
    parts: list[str] = []
    for piece in _CLAUSE_SPLIT.split(sentence):
        for sub in (p for p in _CONJ_SPLIT.split(piece) if p and p.strip()):
            if parts and len(sub.split()) < 3:
                parts[-1] = f"{parts[-1]}, {sub}"
            else:
                parts.append(sub)
    return [p.strip(" ,.") for p in parts if len(p.split()) >= 2]


# "No.", "Yes, it does.", "The answer is: yes." state no fact of their own
_ANSWER_WORD = re.compile(r"(?i)\s*(?:(?:the )?answer is:?\s*)?(?:no|yes)(?:,? it (?:does|is|can|will|do)(?: not)?)?\s*[.!]?\s*")


def split_claims(answer: str) -> list[Claim]:
    """Atomic claims of an answer. Lone answer words ("No.", "Yes.") are not claims; the rest of their
    sentence is."""
    out: list[Claim] = []
    for i, sent in enumerate(split_sentences(answer) or ([answer] if answer.strip() else [])):
        refs = tuple(int(n) for n in CITATION_RE.findall(sent))
        clean = " ".join(CITATION_RE.sub(" ", sent).split())
        clean = re.sub(r"^\s*(no|yes)\s*[,.:;!]\s*", "", clean, flags=re.I)
        if re.fullmatch(_ANSWER_WORD, clean) or not clean:
            continue
        for part in split_clauses(clean):
            out.append(Claim(part, i, refs))
    return out
