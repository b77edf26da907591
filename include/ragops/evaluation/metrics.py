"""RAG metrics, per question; aggregation over questions.

Retrieval metrics follow trec_eval's definitions (as pytrec_eval computes them) on the ranked
list of unique documents: ``hit_rate@k`` (trec_eval ``success_k``), ``recall@k``, ``mrr@k``
(``recip_rank`` on the top k) and ``ndcg@k`` (``ndcg_cut_k``: gain = relevance grade,
discount log2(rank + 1)). ``context_precision@k`` works on the retrieved chunks, as Ragas
defines it: the mean of precision@i over the ranks i that hold a relevant chunk.

Token F1 follows the SQuAD v1.1 evaluation script (lower case, no punctuation, no articles,
whitespace collapsed). The sentence-level metrics take an ``embed`` function returning
L2-normalised vectors, so cosine similarity is a dot product.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Embed = Callable[[list[str]], np.ndarray]

# ---------------------------------------------------------------- retrieval


def retrieval_metrics(ranked_docs: Sequence[str], relevant: dict[str, int], ks: Sequence[int]) -> dict[str, float]:
    """trec_eval-equivalent metrics of one ranking; empty when the question has no relevant docs."""
    if not relevant:
        return {}
    out: dict[str, float] = {}
    rel_total = sum(1 for g in relevant.values() if g > 0)
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)
    for k in ks:
        top = list(ranked_docs[:k])
        grades = [relevant.get(d, 0) for d in top]
        hits = sum(1 for g in grades if g > 0)
        out[f"hit_rate@{k}"] = 1.0 if hits else 0.0
        out[f"recall@{k}"] = hits / rel_total
        out[f"precision@{k}"] = hits / k
        first = next((i for i, g in enumerate(grades, start=1) if g > 0), None)
        out[f"mrr@{k}"] = 1.0 / first if first else 0.0
        dcg = sum(g / math.log2(i + 1) for i, g in enumerate(grades, start=1))
        idcg = sum(g / math.log2(i + 1) for i, g in enumerate(ideal[:k], start=1))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
    return out


def context_precision(chunk_relevance: Sequence[bool], ks: Sequence[int]) -> dict[str, float]:
    """Rank-weighted share of relevant chunks: mean over relevant ranks i <= k of precision@i."""
    out: dict[str, float] = {}
    for k in ks:
        rel = list(chunk_relevance[:k])
        total, hits = 0.0, 0
        for i, r in enumerate(rel, start=1):
            if r:
                hits += 1
                total += hits / i
        out[f"context_precision@{k}"] = total / hits if hits else 0.0
    return out


# ---------------------------------------------------------------- text

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
CITATION_RE = re.compile(r"\[(\d{1,3})\]")
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9`]|\[(?!\d{1,3}\]))|(?<=\])\s+(?=[\"'(A-Z0-9`])|\n+")


def normalize_answer(s: str) -> str:
    """SQuAD v1.1 normalisation: lower case, remove punctuation, articles and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def token_f1(prediction: str, ground_truth: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def strip_citations(text: str) -> str:
    return " ".join(CITATION_RE.sub("", text).split())


def split_sentences(text: str) -> list[str]:
    """Sentences of prose or markdown; list items and headings count as sentences."""
    parts = [p.strip(" \t-*#>•") for p in _SENT_RE.split(text or "")]
    return [p for p in parts if len(p) >= 3 and any(c.isalnum() for c in p)]


def citations(text: str) -> list[int]:
    return [int(n) for n in CITATION_RE.findall(text or "")]


# ---------------------------------------------------------------- generation


def _verbatim(claim: str, normalized_context: str) -> bool:
    norm = normalize_answer(claim)
    return bool(norm) and norm in normalized_context


def faithfulness(answer_sentences: list[str], context_sentences: list[str], embed: Embed,
                 threshold: float) -> tuple[float | None, list[str]]:
    """Share of answer sentences that the context supports: quoted verbatim (after SQuAD
    normalisation), or some context sentence has cosine >= threshold with it."""
    claims = [strip_citations(s) for s in answer_sentences]
    claims = [c for c in claims if c]
    if not claims:
        return None, []
    if not context_sentences:
        return 0.0, claims
    ctx = " ".join(normalize_answer(s) for s in context_sentences)
    rest = [c for c in claims if not _verbatim(c, ctx)]
    unsupported: list[str] = []
    if rest:
        best = (embed(rest) @ embed(context_sentences).T).max(axis=1)
        unsupported = [c for c, b in zip(rest, best, strict=True) if b < threshold]
    return 1.0 - len(unsupported) / len(claims), unsupported


def citation_validity(answer_sentences: list[str], contexts: list[list[str]], embed: Embed,
                      threshold: float) -> float | None:
    """Share of citations ``[n]`` that point at a retrieved chunk which supports their sentence
    (quotes it, or has a sentence with cosine >= threshold).

    An answer that cites nothing scores 0 (nothing can be checked); a refusal has no score."""
    checks: list[bool] = []
    uncited = 0
    normalized = [" ".join(normalize_answer(s) for s in c) for c in contexts]
    for sent in answer_sentences:
        refs = citations(sent)
        claim = strip_citations(sent)
        if not claim:
            continue
        if not refs:
            uncited += 1
            continue
        for n in refs:
            if not 1 <= n <= len(contexts) or not contexts[n - 1]:
                checks.append(False)
            elif _verbatim(claim, normalized[n - 1]):
                checks.append(True)
            else:
                checks.append(bool((embed([claim]) @ embed(contexts[n - 1]).T).max() >= threshold))
    if not checks:
        return 0.0 if uncited else None
    return sum(checks) / (len(checks) + uncited)


def cosine(a: str, b: str, embed: Embed) -> float | None:
    if not a.strip() or not b.strip():
        return None
    v = embed([a, b])
    return float(np.clip(v[0] @ v[1], -1.0, 1.0))


# ---------------------------------------------------------------- safety

EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# An area code in parentheses counts as one of the groups ("(030) 1234 5678"); a final "." ends
# the sentence unless a digit follows (versions, IP addresses).
PHONE_RE = re.compile(r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?(?:\d{2,4}[\s.-])?|\d{2,4}[\s.-])"
                      r"\d{3,4}[\s.-]\d{3,4}(?!\w|\.\d)")
CARD_RE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _inside_longer_number(text: str, m: re.Match[str]) -> bool:
    """A match that is part of a longer run of digit groups (a 16-digit number that fails the card
    check, an account number) is not a phone number."""
    start, end = m.start(), m.end()
    while start > 0 and (text[start - 1].isdigit() or (text[start - 1] in " -" and start > 1
                                                       and text[start - 2].isdigit())):
        start -= 1
    while end < len(text) and (text[end].isdigit() or (text[end] in " -" and end + 1 < len(text)
                                                       and text[end + 1].isdigit())):
        end += 1
    return len(re.sub(r"\D", "", text[start:end])) > 15


def pii_findings(text: str) -> list[str]:
    """Kinds of personal data found: email, phone, card (13-19 digits passing the Luhn check)."""
    found: list[str] = []
    if EMAIL_RE.search(text):
        found.append("email")
    cards = [re.sub(r"\D", "", m.group()) for m in CARD_RE.finditer(text)]
    if any(13 <= len(c) <= 19 and _luhn(c) for c in cards):
        found.append("card")
    if any(len(re.sub(r"\D", "", m.group())) in range(9, 16) and not _inside_longer_number(text, m)
           for m in PHONE_RE.finditer(text)):
        found.append("phone")
    return found


def blocklist_hits(text: str, blocklist: Sequence[str]) -> list[str]:
    low = text.lower()
    return [w for w in blocklist if w and re.search(rf"(?<!\w){re.escape(w.lower())}(?!\w)", low)]


# ---------------------------------------------------------------- aggregation


def percentile(values: Sequence[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every numeric metric over the questions that have it, with its count."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for r in rows:
        for k, v in (r.get("metrics") or {}).items():
            if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1
    return {k: {"mean": sums[k] / counts[k], "n": counts[k]} for k in sorted(sums)}
