"""A semantic answer cache that cannot serve an answer made by another index or prompt version.

An entry is keyed EXACTLY by ``index@version|prompt@version`` (its scope) and found by the cosine
similarity of the question's embedding: a question at least ``production.cache.threshold``
similar to a cached one, asked of the same scope within ``ttl_hours``, gets that answer. An index
swap or a prompt promotion changes the scope, so nothing made by the old version can be served.
Entries live in the state store (shared by every process of the application); beyond
``max_entries`` per scope the least recently used go, expired entries first.

Similarity alone is not enough: a sentence embedding barely moves when one word changes the
meaning ("... quarantined?" / "... not quarantined?" score 0.98 with the bundled MiniLM, "version
3" / "version 4" 0.95). So when the caller passes the question text, a candidate is served only if
the two questions also agree on what an embedding blurs (:func:`mismatch`): the numbers, negation,
code-like literals (``chunk_tokens``, ``--dry-run``), capitalised names, and no word swapped for
its opposite (enable/disable, before/after, ...). A refused candidate costs a generation, never a
wrong answer.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, update

from ragops import state
from ragops.config import Settings

log = logging.getLogger(__name__)


def scope(index: str, index_version: int, prompt: str, prompt_version: int) -> str:
    return f"{index}@{index_version}|{prompt}@{prompt_version}"


def _unit(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, dtype=np.float32).ravel()
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


# ---- what an embedding blurs --------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
# identifiers, settings keys, flags, paths, refs: two or more alphanumeric parts joined by . _ / @ : = -
_LITERAL = re.compile(r"(?<![\w.])(?:--?[A-Za-z][\w-]*|[\w]+(?:[._/@:=-][\w]+)+|\w*_\w*)")
_NEGATION = frozenset({"not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "cannot",
                       "without", "unless"})
# "one" and "once" are left out: far more often an article or "as soon as" than a count
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if w != "_"}
_NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80",
                      "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000", "twice": "2",
                      "first": "1", "second": "2", "third": "3", "fourth": "4", "fifth": "5", "1st": "1", "2nd": "2",
                      "3rd": "3"})
# a number's unit is part of it: "30 seconds" is not "30 minutes" (aliases of one unit are equal)
_QUANTITY = re.compile(r"(\d+(?:[.,]\d+)*)\s*(%|[A-Za-z]+)?")
_UNITS = {u: name for name, aliases in {
    "ms": "ms msec msecs millisecond milliseconds", "s": "s sec secs second seconds", "min": "min mins minute minutes",
    "h": "h hr hrs hour hours", "d": "d day days", "wk": "wk week weeks", "mo": "month months",
    "y": "yr yrs year years", "B": "byte bytes", "KB": "kb kib kilobyte kilobytes", "MB": "mb mib megabyte megabytes",
    "GB": "gb gib gigabyte gigabytes", "TB": "tb tib terabyte terabytes",
    "%": "% percent pct", "tok": "token tokens", "char": "char chars character characters",
    "word": "word words", "line": "line lines"}.items() for u in aliases.split()}
# Words whose swap for the other turns a question into another one (general English, both ways).
_OPPOSITES = (
    ("enable", "disable"), ("add", "remove"), ("add", "delete"), ("create", "delete"), ("create", "drop"),
    ("create", "destroy"), ("insert", "delete"), ("keep", "drop"), ("keep", "delete"), ("keep", "discard"),
    ("start", "stop"), ("start", "finish"), ("begin", "end"), ("include", "exclude"), ("increase", "decrease"),
    ("increase", "reduce"), ("raise", "lower"), ("allow", "deny"), ("allow", "block"), ("allow", "forbid"),
    ("allow", "prevent"), ("accept", "reject"), ("approve", "reject"), ("grant", "revoke"), ("before", "after"),
    ("min", "max"), ("minimum", "maximum"), ("first", "last"), ("more", "less"), ("more", "fewer"),
    ("most", "least"), ("above", "below"), ("over", "under"), ("upper", "lower"), ("high", "low"),
    ("higher", "lower"), ("large", "small"), ("larger", "smaller"), ("big", "small"), ("long", "short"),
    ("longer", "shorter"), ("fast", "slow"), ("faster", "slower"), ("early", "late"), ("earlier", "later"),
    ("best", "worst"), ("better", "worse"), ("good", "bad"), ("positive", "negative"), ("old", "new"),
    ("older", "newer"), ("oldest", "newest"), ("on", "off"), ("up", "down"), ("open", "close"),
    ("import", "export"), ("upload", "download"), ("read", "write"), ("input", "output"), ("push", "pull"),
    ("send", "receive"), ("show", "hide"), ("true", "false"), ("local", "remote"), ("online", "offline"),
    ("internal", "external"), ("public", "private"), ("inside", "outside"), ("upstream", "downstream"),
    ("parent", "child"), ("promote", "demote"), ("promote", "reject"), ("promote", "rollback"),
    ("upgrade", "downgrade"), ("succeed", "fail"), ("success", "failure"), ("pass", "fail"), ("join", "leave"),
    ("encode", "decode"), ("encrypt", "decrypt"), ("compress", "decompress"), ("merge", "split"),
    ("pause", "resume"), ("ascending", "descending"), ("all", "none"), ("always", "sometimes"),
    ("same", "different"), ("manual", "automatic"), ("manually", "automatically"), ("sync", "async"),
    ("acquire", "release"), ("hold", "release"), ("tighten", "loosen"), ("grow", "shrink"), ("expand", "shrink"),
    ("expand", "collapse"), ("enter", "exit"), ("gain", "lose"), ("win", "lose"), ("find", "lose"),
)
# a prefix that negates the word it is put before (lock/unlock, able/disable, valid/invalid)
_NEG_PREFIXES = ("un", "dis", "de", "non", "in", "im", "ir", "il", "mis", "anti")


def _stem(word: str) -> str:
    """A crude English stem, enough to match enable/enabled/enables/enabling and stop/stopped."""
    w = word.lower()
    if w.endswith("'s"):
        w = w[:-2]
    for suf in ("ing", "ed", "es", "s"):
        if w.endswith(suf) and len(w) - len(suf) >= 3 and not (suf == "s" and w.endswith("ss")):
            w = w[:-len(suf)]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz":
        w = w[:-1]
    return w


_OPPOSITE_STEMS = tuple((_stem(a), _stem(b)) for a, b in _OPPOSITES)


class _Q:
    """What :func:`mismatch` compares of one question."""

    def __init__(self, text: str) -> None:
        text = text.replace("\u2019", "'")
        found = list(_WORD.finditer(text))
        raw = [re.sub(r"'s$", "", m.group()) for m in found]  # possessives: LangChain's is LangChain
        self.words = [w.lower() for w in raw]
        self.stems = {_stem(w) for w in self.words}
        self.numbers = {(n.replace(",", "").lstrip("0") or "0", _UNITS.get(u.lower()) if u else None)
                        for n, u in _QUANTITY.findall(text)}
        self.numbers |= {(_NUMBER_WORDS[w], _UNITS.get(self.words[i + 1]) if i + 1 < len(self.words) else None)
                         for i, w in enumerate(self.words) if w in _NUMBER_WORDS}
        self.negated = any(w in _NEGATION or w.endswith("n't") for w in self.words)
        self.literals = {tuple(p.lower() for p in re.findall(r"[A-Za-z0-9]+", m)) for m in _LITERAL.findall(text)}
        self.literals.discard(())
        # capitalised words not opening a sentence, and acronyms: names (Chroma, PostgreSQL, DAG)
        opening, last = set(), 0
        for i, m in enumerate(found):
            gap = text[last:m.start()].rstrip()
            if (i == 0 and not gap) or gap[-1:] in (".", "?", "!", ":", ";"):
                opening.add(i)
            last = m.end()
        self.names = {w.lower() for i, w in enumerate(raw) if w != "I" and not w[0].isdigit() and w.lower() not in _UNITS
                      and ((w[0].isupper() and i not in opening) or (len(w) > 1 and w.isupper()))}

    def has_sequence(self, parts: tuple[str, ...]) -> bool:
        """``parts`` occur as consecutive words (``chunk_tokens`` is found in "the chunk tokens")."""
        n = len(parts)
        return any(tuple(self.words[i:i + n]) == parts for i in range(len(self.words) - n + 1))


def _opposed(a: _Q, b: _Q) -> str | None:
    for x, y in _OPPOSITE_STEMS:
        for p, q in ((a, b), (b, a)):
            if x in p.stems and y not in p.stems and y in q.stems and x not in q.stems:
                return f"{x}/{y}"
    for p, q in ((a, b), (b, a)):
        for w in p.stems - q.stems:
            for pre in _NEG_PREFIXES:
                if w.startswith(pre) and len(w) - len(pre) >= 4 and w[len(pre):] in q.stems - p.stems:
                    return f"{w[len(pre):]}/{w}"
    return None


def mismatch(a: str, b: str) -> str | None:
    """Why questions ``a`` and ``b`` may have different answers although their embeddings are
    close, or None when nothing an embedding blurs differs (the cache may then serve one for the
    other). Strict on purpose: a miss costs one generation, a false hit a wrong answer."""
    qa, qb = _Q(a), _Q(b)
    if qa.numbers != qb.numbers:
        show = [sorted(f"{n} {u}" if u else n for n, u in q.numbers) for q in (qa, qb)]
        return f"numbers differ: {show[0]} vs {show[1]}"
    if qa.negated != qb.negated:
        return "one question is negated"
    for p, q in ((qa, qb), (qb, qa)):
        for lit in sorted(p.literals):
            if not q.has_sequence(lit):
                return f"literal {'_'.join(lit)!r} only in one question"
        for name in sorted(p.names):
            if name not in q.words:
                return f"name {name!r} only in one question"
    opposite = _opposed(qa, qb)
    if opposite is not None:
        return f"opposite words {opposite}"
    return None


# ---- the cache ----------------------------------------------------------------------------------


def lookup(settings: Settings, key: str, vec: np.ndarray, question: str | None = None) -> dict[str, Any] | None:
    """The closest fresh entry of ``key`` at or above the threshold (its hit counted), or None.

    With ``question`` (the text ``vec`` embeds), a candidate whose question differs in numbers,
    negation, literals, names or an opposite word (:func:`mismatch`) is passed over for the next
    closest one. Without it, similarity alone decides: pass the question."""
    c = settings.production.cache
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=c.ttl_hours)
    q = _unit(vec)
    E = state.AnswerCacheEntry
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(E.id, E.vector).where(E.scope == key, E.created_at >= since)).all()
        rows = [(i, v) for i, v in rows if len(v) == q.nbytes]  # another model's vectors can never match
        if not rows:
            return None
        mat = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
        sims = mat @ q
        order = [int(i) for i in np.argsort(-sims, kind="stable") if float(sims[i]) >= c.threshold]
        for i in order:
            entry = s.get(E, rows[i][0])
            if entry is None:
                continue
            if question is not None:
                why = mismatch(question, entry.question)
                if why is not None:
                    log.debug("cache: %r not served for %r (similarity %.4f): %s", entry.question, question,
                              float(sims[i]), why)
                    continue
            s.execute(update(E).where(E.id == entry.id).values(hits=E.hits + 1, last_hit_at=dt.datetime.now(dt.UTC)))
            return {"payload": dict(entry.payload), "similarity": round(float(sims[i]), 4),
                    "question": entry.question, "trace_id": entry.trace_id}
        return None


def store(settings: Settings, key: str, question: str, vec: np.ndarray, trace_id: str | None,
          payload: dict[str, Any]) -> bool:
    """Add an answer; returns whether it was stored. An answer that failed (no text, or only
    white space) is never cached. Expired entries of the scope are dropped first, then the least
    recently used beyond ``max_entries``."""
    answer = payload.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return False
    c = settings.production.cache
    E = state.AnswerCacheEntry
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=c.ttl_hours)
    with state.session_scope(settings.state_db_url) as s:
        s.execute(delete(E).where(E.scope == key, E.created_at < since))
        s.add(E(scope=key, question=question, vector=_unit(vec).tobytes(), payload=payload, trace_id=trace_id,
                hits=0))
        s.flush()
        n = s.execute(select(func.count()).select_from(E).where(E.scope == key)).scalar_one()
        if n > c.max_entries:
            last = func.coalesce(E.last_hit_at, E.created_at)
            old = s.execute(select(E.id).where(E.scope == key).order_by(last, E.id)
                            .limit(n - c.max_entries)).scalars().all()
            s.execute(delete(E).where(E.id.in_(old)))
    return True


def clear(settings: Settings, key: str | None = None) -> int:
    """Drop every entry (of one scope); returns how many."""
    with state.session_scope(settings.state_db_url) as s:
        stmt = delete(state.AnswerCacheEntry)
        if key is not None:
            stmt = stmt.where(state.AnswerCacheEntry.scope == key)
        return int(s.execute(stmt).rowcount or 0)
