"""The deterministic groundedness check: is every claim of an answer supported by one passage?

A claim is supported only if a single context passage supports all of it:

- its numbers, dates and quantities (with their units, and words such as "daily" or "twice");
- its names: identifiers (``rebuild_index``, ``chroma.mode``), acronyms and capitalised names;
- its negation polarity, read on the passage sentence the claim lines up with;
- its meaning: enough of its content terms are in the passage, or the passage has a sentence
  close to it in embedding space and shares a fair part of its terms.

An unsupported claim is reported with the reason (``missing_number``, ``contradicted_negation``,
``unknown_name``, ``unsupported_terms``, ``nothing_similar``), the terms at fault and the closest
passage. The same test decides whether a citation ``[n]`` is valid.

Why not cosine similarity alone: sentence embeddings barely move when one word flips the
meaning ("runs weekly" vs "does not run weekly" vs "runs daily at 05:00" all score about 1.0
with MiniLM), which is exactly the error a RAG answer makes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ragops.evaluation.metrics import normalize_answer, split_sentences
from ragops.grounding.claims import Claim, Facts, content_terms, facts, split_claims, split_clauses

Embed = Callable[[list[str]], np.ndarray]
_EQUIV_FREQ = {"nightly": "daily"}


@dataclass(frozen=True)
class CheckerSettings:
    """Thresholds of the deterministic check (measured with `ragops eval groundedness`)."""

    coverage: float = 0.75  # share of a claim's content terms in the passage that supports it on terms alone
    min_coverage: float = 0.5  # ... and the least share when a close sentence (similarity) vouches for it
    similarity: float = 0.55  # cosine of the claim with a passage sentence (or two adjacent) that counts as close
    facts_similarity: float = 0.45  # a claim whose numbers and names all matched needs only this cosine
    nothing_similar: float = 0.35  # below this cosine and coverage the claim has nothing similar in the passage
    align_coverage: float = 0.5  # negation is compared on a sentence sharing at least this share of the terms


@dataclass
class Passage:
    n: int
    text: str
    sentences: list[str]
    facts: Facts
    sentence_facts: list[Facts]
    lower: str
    n_single: int = 0  # sentences[:n_single] are clauses; the rest are pairs of adjacent clauses

    @classmethod
    def of(cls, n: int, text: str) -> Passage:
        sents, f, sf, lower = _parts(text)
        return cls(n, text, list(sents), f, list(sf), lower, len(sents))


@lru_cache(maxsize=8192)  # a passage is retrieved for many questions: split and read it once
def _parts(text: str) -> tuple[tuple[str, ...], Facts, tuple[Facts, ...], str]:
    sents = [c for s in split_sentences(text) for c in split_clauses(s)] or ([text] if text.strip() else [])
    return tuple(sents), facts(text), tuple(facts(s) for s in sents), " " + " ".join(text.lower().split()) + " "


@dataclass
class ClaimVerdict:
    claim: str
    sentence: int
    supported: bool
    passage: int | None  # the supporting passage, or the closest one when unsupported
    reason: str | None = None
    detail: list[str] = field(default_factory=list)  # the numbers, names or terms at fault
    closest: str = ""  # the closest passage sentence(s)
    similarity: float = 0.0
    coverage: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["similarity"] = round(self.similarity, 4)
        d["coverage"] = round(self.coverage, 4)
        return d


@dataclass
class _Try:
    ok: bool
    reason: str | None
    detail: list[str]
    sim: float
    cov: float
    closest: str
    rank: float


def _has_name(name: str, p: Passage) -> bool:
    name = name.removesuffix("'s")
    if name in p.facts.names or f"{name}" in p.lower:
        return True
    if "/" in name and all(part in p.lower for part in name.split("/") if part):
        return True  # blue/green, a path written another way
    alt = name.replace("_", " ").replace("-", " ")
    return alt != name and alt in p.lower


def _numbers_ok(c: Facts, p: Facts) -> list[str]:
    missing = sorted(n for n in c.numbers if n not in p.numbers)
    for pair in c.units:
        n = pair.split(" ", 1)[0]
        if pair not in p.units and any(u.split(" ", 1)[0] == n for u in p.units) and n not in missing:
            missing.append(pair)  # the passage has this number with another unit
    freq_p = {_EQUIV_FREQ.get(f, f) for f in p.frequencies}
    missing += sorted(f for f in c.frequencies if _EQUIV_FREQ.get(f, f) not in freq_p)
    return missing


class GroundednessChecker:
    """Claim-level support of answers by context passages. ``embed`` returns L2-normalised vectors."""

    name = "deterministic"

    def __init__(self, embed: Embed, settings: CheckerSettings | None = None) -> None:
        self.embed = embed
        self.s = settings or CheckerSettings()

    # ------------------------------------------------------------------ one claim, one passage

    def _try(self, cf: Facts, p: Passage, cvec: np.ndarray, svecs: np.ndarray) -> _Try:
        terms = cf.terms
        # coverage on the best clause or pair of adjacent clauses: terms scattered over a passage
        # ("metadata" here, "content hash" there) do not make a statement
        cov = max((len(terms & sf.terms) / len(terms) for sf in p.sentence_facts), default=0.0) if terms else 1.0
        sims = svecs @ cvec if len(svecs) else np.zeros(0)
        sim = float(sims.max()) if sims.size else 0.0
        best = int(sims.argmax()) if sims.size else -1
        closest = p.sentences[best] if 0 <= best < len(p.sentences) else p.text[:300]
        # the sentence the claim lines up with: most shared terms, similarity breaking ties
        align = -1
        align_cov = 0.0
        for i, sf in enumerate(p.sentence_facts[:p.n_single]):  # single clauses: a pair mixes polarities
            sc = len(terms & sf.terms) / len(terms) if terms else 0.0
            if sc > align_cov + 1e-9 or (abs(sc - align_cov) < 1e-9 and align >= 0 and sims.size
                                         and sims[i] > sims[align]):
                align, align_cov = i, sc
        rank = sim + cov
        missing_nums = _numbers_ok(cf, p.facts)
        if missing_nums:
            return _Try(False, "missing_number", missing_nums, sim, cov, closest, rank)
        if align >= 0 and align_cov >= self.s.align_coverage:
            af = p.sentence_facts[align]
            # Exactly one side is negated, and what it negates is what the other side states: the claim
            # negates what the passage says, or drops the passage's negation. (Both negated: the same
            # polarity, whatever the wording.) Two shared words at least, so one common word is no proof.
            flipped: list[str] = []
            if cf.negated and not af.negated:  # the passage states it plainly, the claim denies it
                flipped = sorted(cf.negated_terms & af.terms)
                if cf.verbal:  # "does not run": the statement itself is denied
                    flipped = flipped or ["claim negated"]
                need = 1 if cf.verbal else 2  # a contrast ("by hash, not by time") must name what it denies
            elif af.negated and not cf.negated:
                flipped = sorted(af.negated_terms & cf.terms)
                need = min(2, len(af.negated_terms))
            elif af.negated and cf.negated:  # both negate something: is it the same thing?
                flipped = sorted(((af.negated_terms & cf.terms) - cf.negated_terms)
                                 | ((cf.negated_terms & af.terms) - af.negated_terms))
                need = 2
            if flipped and len(flipped) >= need:
                return _Try(False, "contradicted_negation",
                            [f"{', '.join(flipped[:4])}: {p.sentences[align][:200]}"], sim, cov, p.sentences[align], rank)
        unknown = sorted(n for n in cf.names if not _has_name(n, p))
        if unknown:
            return _Try(False, "unknown_name", unknown, sim, cov, closest, rank)
        facts_ok = bool(cf.numbers or cf.names) and sim >= self.s.facts_similarity  # its facts all matched
        if cov >= self.s.coverage or (sim >= self.s.similarity and cov >= self.s.min_coverage) or facts_ok:
            return _Try(True, None, [], sim, cov, closest, rank + 10)
        if sim < self.s.nothing_similar and cov < self.s.min_coverage:
            return _Try(False, "nothing_similar", [], sim, cov, closest, rank)
        return _Try(False, "unsupported_terms", sorted(terms - p.facts.terms)[:8], sim, cov, closest, rank)

    def _vectors(self, passages: list[Passage]) -> list[np.ndarray]:
        """Per passage: a vector for each clause (pairs of clauses are compared on terms only: embedding
        them too doubled the cost and moved no verdict on the labelled set)."""
        flat = [t for p in passages for t in p.sentences]
        vecs = self.embed(flat) if flat else np.zeros((0, 1), dtype=np.float32)
        out, i = [], 0
        for p in passages:
            out.append(vecs[i:i + len(p.sentences)])
            i += len(p.sentences)
        return out

    def _extend(self, p: Passage, vecs: np.ndarray) -> tuple[Passage, np.ndarray]:
        """Sentence facts for the pairs too (same order as the vectors)."""
        pairs = [f"{a} {b}" for a, b in zip(p.sentences, p.sentences[1:], strict=False)]
        q = Passage(p.n, p.text, p.sentences + pairs, p.facts, p.sentence_facts + [facts(x) for x in pairs], p.lower,
                    p.n_single)
        return q, vecs

    def check_claims(self, claims: Sequence[Claim], passages: Sequence[str]) -> list[ClaimVerdict]:
        ps = [Passage.of(i, t) for i, t in enumerate(passages, start=1) if t and t.strip()]
        if not claims:
            return []
        if not ps:
            return [ClaimVerdict(c.text, c.sentence, False, None, "nothing_similar", ["no passages"]) for c in claims]
        pvecs = self._vectors(ps)
        ext = [self._extend(p, v) for p, v in zip(ps, pvecs, strict=True)]
        cvecs = self.embed([c.text for c in claims])
        out: list[ClaimVerdict] = []
        for c, cvec in zip(claims, cvecs, strict=True):
            cf = facts(c.text)
            best: tuple[_Try, Passage] | None = None
            for p, v in ext:
                t = self._try(cf, p, cvec, v)
                if best is None or t.rank > best[0].rank:
                    best = (t, p)
                if t.ok:
                    break
            assert best is not None
            t, p = best
            out.append(ClaimVerdict(c.text, c.sentence, t.ok, p.n, t.reason, t.detail, t.closest[:400], t.sim, t.cov))
        return out

    def supported_by(self, claims: Sequence[Claim], passage: str) -> bool:
        return all(v.supported for v in self.check_claims(claims, [passage]))

    # ------------------------------------------------------------------ one answer

    def check(self, answer: str, passages: Sequence[str]) -> dict[str, Any]:
        """Verdicts of every claim; ``faithfulness`` (supported share), ``hallucinated`` (any unsupported)
        and ``citation_validity`` (share of [n] whose passage supports their sentence by the same test)."""
        claims = split_claims(answer)
        verdicts = self.check_claims(claims, passages)
        out: dict[str, Any] = {"claims": [v.as_dict() for v in verdicts], "n_claims": len(verdicts)}
        if not verdicts:
            out.update(faithfulness=None, hallucinated=None, citation_validity=None)
            return out
        supported = sum(v.supported for v in verdicts)
        out["faithfulness"] = supported / len(verdicts)
        out["hallucinated"] = supported < len(verdicts)
        out["citation_validity"] = self.citation_validity(claims, passages)
        return out

    def citation_validity(self, claims: Sequence[Claim], passages: Sequence[str]) -> float | None:
        """A citation [n] is valid when passage n alone supports every claim of its sentence. Sentences
        without a citation count as invalid; an answer with no claims has no score."""
        by_sentence: dict[int, list[Claim]] = {}
        for c in claims:
            by_sentence.setdefault(c.sentence, []).append(c)
        checks: list[bool] = []
        for cs in by_sentence.values():
            refs = cs[0].citations
            if not refs:
                checks.append(False)
                continue
            for n in dict.fromkeys(refs):
                ok = 1 <= n <= len(passages) and bool(passages[n - 1].strip()) and self.supported_by(cs, passages[n - 1])
                checks.append(ok)
        return sum(checks) / len(checks) if checks else None


def answer_relevance(question: str, answer: str, embed: Embed) -> float | None:
    """Cosine of question and answer, scaled by how much the answer adds: an answer that only echoes the
    question's terms ("The rebuild_index DAG runs.") or says nothing scores near 0, an answer with three
    or more new content terms keeps its full cosine."""
    from ragops.evaluation.metrics import strip_citations

    a = strip_citations(answer)
    if not a.strip() or not question.strip():
        return None
    q_terms = content_terms(question)
    new = {t for t in content_terms(a) if t not in q_terms}
    if normalize_answer(a) and normalize_answer(a) in normalize_answer(question):
        return 0.0
    v = embed([question, a])
    cos = float(np.clip(v[0] @ v[1], -1.0, 1.0))
    return max(cos, 0.0) * min(1.0, len(new) / 3)
