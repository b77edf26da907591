"""Evaluation metrics against reference implementations.

Token F1 / exact match are compared with the official SQuAD v1.1 script (tests/reference), the
retrieval metrics with trec_eval as pytrec_eval computes it: on a fixed hand-made case always,
and on the 300 test queries of BEIR SciFact (real qrels) when the dataset is present.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from ragops.evaluation.metrics import (
    aggregate,
    blocklist_hits,
    citations,
    context_precision,
    exact_match,
    normalize_answer,
    percentile,
    pii_findings,
    retrieval_metrics,
    split_sentences,
    token_f1,
)
from ragops.gates import compare_metric, paired_bootstrap
from tests.reference import squad_v1_1 as squad

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Same location bench/ingest_scifact.py uses: `shared` sits beside the project checkout.
SCIFACT = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"

# ---------------------------------------------------------------- SQuAD v1.1 token F1 / exact match

SQUAD_CASES = [
    ("The Eiffel Tower", "eiffel tower"),
    ("a cat", "the cat"),
    ("An apple a day", "apple day"),
    ("Hello, world!", "hello world"),
    ("U.S.A.", "USA"),
    ("the the the", "the"),  # both normalise to the empty string
    ("A.", "a"),
    ("cat cat cat", "cat"),  # repeated tokens count once per gold occurrence
    ("cat dog", "cat cat dog dog"),
    ("", "Paris"),  # empty prediction
    ("Paris", ""),
    ("", ""),
    ("Café au lait", "café AU LAIT"),  # unicode, case
    ("naïve résumé", "naive resume"),  # accents are not folded
    ("Straße", "STRASSE"),
    ("İstanbul", "istanbul"),
    ("“Curly quotes” — dash", "curly quotes dash"),  # non-ASCII punctuation is kept
    ("1,000", "1000"),  # numbers: punctuation inside is removed
    ("3.14 meters", "314 meters"),
    ("the answer is 42", "42"),
    ("42 is the answer", "the answer: 42"),
    ("theater", "the ater"),  # article only as a whole word
    ("Anna and the man", "anna man"),
    ("  multiple   spaces\tand\nnewlines ", "multiple spaces and newlines"),
    ("It's 5 o'clock", "its 5 oclock"),
]


@pytest.mark.parametrize(("prediction", "truth"), SQUAD_CASES)
def test_token_f1_and_exact_match_equal_official_squad(prediction: str, truth: str) -> None:
    assert normalize_answer(prediction) == squad.normalize_answer(prediction)
    assert normalize_answer(truth) == squad.normalize_answer(truth)
    assert token_f1(prediction, truth) == pytest.approx(squad.f1_score(prediction, truth), abs=1e-12)
    assert exact_match(prediction, truth) == pytest.approx(float(squad.exact_match_score(prediction, truth)),
                                                           abs=1e-12)


def test_token_f1_hand_computed() -> None:
    # pred tokens [cat, sat, on, mat], gold [cat, sat]: P = 2/4, R = 2/2 -> F1 = 2/3
    assert token_f1("the cat sat on the mat", "a cat sat") == pytest.approx(2 / 3, abs=1e-12)
    # pred [cat, dog], gold [cat, cat, dog, dog]: common 2, P = 1, R = 1/2 -> F1 = 2/3
    assert token_f1("cat dog", "cat cat dog dog") == pytest.approx(2 / 3, abs=1e-12)
    # pred [cat, cat, cat], gold [cat]: common 1, P = 1/3, R = 1 -> F1 = 1/2
    assert token_f1("cat cat cat", "cat") == pytest.approx(0.5, abs=1e-12)
    assert token_f1("", "Paris") == 0.0
    assert exact_match("The Eiffel Tower!", "eiffel   tower") == 1.0
    assert exact_match("Eiffel Tower", "Eiffel") == 0.0
    assert normalize_answer("The  Quick, brown FOX!") == "quick brown fox"


# ---------------------------------------------------------------- retrieval metrics vs trec_eval

KS = (1, 3, 5, 10)
TREC_NAMES = {"hit_rate": "success", "recall": "recall", "precision": "P", "ndcg": "ndcg_cut"}


def trec_reference(qrels: dict[str, dict[str, int]], rankings: dict[str, list[str]],
                   ks: tuple[int, ...] = KS) -> dict[str, dict[str, float]]:
    """pytrec_eval's values under our metric names. The run's scores strictly decrease with rank,
    so trec_eval's ordering (by score) is exactly our ranking; mrr@k is recip_rank of the run
    truncated to the top k."""
    cut = ",".join(str(k) for k in ks)
    measures = {f"{m}.{cut}" for m in TREC_NAMES.values()}
    run = {q: {d: 1000.0 - r for r, d in enumerate(docs, start=1)} for q, docs in rankings.items()}
    full = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    out: dict[str, dict[str, float]] = {}
    for q, vals in full.items():
        out[q] = {f"{ours}@{k}": vals[f"{trec}_{k}"] for ours, trec in TREC_NAMES.items() for k in ks}
    for k in ks:
        truncated = {q: {d: s for d, s in docs.items() if s > 1000.0 - k - 0.5} for q, docs in run.items()}
        for q, vals in rr.evaluate(truncated).items():
            out[q][f"mrr@{k}"] = vals["recip_rank"]
    return out


def assert_same_as_trec(qrels: dict[str, dict[str, int]], rankings: dict[str, list[str]]) -> dict[str, dict]:
    ref = trec_reference(qrels, rankings)
    assert set(ref) == set(rankings), "pytrec_eval dropped a query (empty run?)"
    ours = {q: retrieval_metrics(rankings[q], qrels[q], KS) for q in rankings}
    for q in rankings:
        assert set(ours[q]) == set(ref[q]), q
        for name, value in ref[q].items():
            assert ours[q][name] == pytest.approx(value, abs=1e-9), f"query {q}: {name}"
    return ours


FIXED_QRELS = {
    # graded: a grade-2 doc ranked below grade-1 docs; one relevant doc at rank 11 (outside every k)
    "q1": {"d1": 2, "d2": 1, "d3": 1},
    # nothing relevant retrieved
    "q2": {"a1": 1, "a2": 2},
    # hit at rank 1; a judged non-relevant doc (grade 0) in between
    "q3": {"b1": 1, "b2": 2, "b0": 0},
    # a ranking shorter than k
    "q4": {"c1": 1},
    # more relevant docs than k
    "q5": {f"e{i}": 1 + (i % 2) for i in range(12)},
    # the only relevant doc at rank 6: outside top 5, inside top 10
    "q6": {"f1": 2},
    # lower grade first, the ideal order is the reverse
    "q7": {"g1": 1, "g2": 2, "g3": 2},
}
FIXED_RANKINGS = {
    "q1": ["n1", "d2", "n2", "d1", "n3", "n4", "n5", "n6", "n7", "n8", "d3", "n9"],
    "q2": [f"n{i}" for i in range(12)],
    "q3": ["b2", "b0", "n1", "b1", "n2"],
    "q4": ["n1", "c1", "n2"],
    "q5": ["e0", "n1", "e3", "e1", "n2", "e5", "e2", "n3", "e7", "e4", "e6", "e8"],
    "q6": ["n1", "n2", "n3", "n4", "n5", "f1", "n6"],
    "q7": ["g1", "n1", "g2", "n2", "n3", "g3"],
}


def test_retrieval_metrics_equal_pytrec_eval_on_fixed_case() -> None:
    ours = assert_same_as_trec(FIXED_QRELS, FIXED_RANKINGS)
    # a few values by hand, so the reference itself is sanity-checked
    assert ours["q1"]["mrr@10"] == 0.5 and ours["q1"]["mrr@1"] == 0.0
    assert ours["q1"]["recall@10"] == pytest.approx(2 / 3)
    assert ours["q2"]["hit_rate@10"] == 0.0 and ours["q2"]["ndcg@10"] == 0.0
    assert ours["q4"]["precision@5"] == pytest.approx(1 / 5)
    assert ours["q6"]["hit_rate@5"] == 0.0 and ours["q6"]["hit_rate@10"] == 1.0
    assert ours["q6"]["ndcg@10"] == pytest.approx(1 / math.log2(7))
    # q7: dcg@3 = 1/log2(2) + 2/log2(4); idcg@3 = 2 + 2/log2(3) + 1/2
    assert ours["q7"]["ndcg@3"] == pytest.approx(2 / (2 + 2 / math.log2(3) + 0.5))


def test_retrieval_metrics_without_relevant_docs_are_empty() -> None:
    assert retrieval_metrics(["a", "b"], {}, KS) == {}


TOKEN = re.compile(r"[a-z0-9]+")


def _bm25_rankings(folder: Path, qrels: dict[str, dict[str, int]], pool: int = 1000,
                   depth: int = 100) -> dict[str, list[str]]:
    """Deterministic, realistic rankings without the embedding model: BM25 over each query's
    judged docs plus ``pool`` corpus docs drawn with a per-query seed."""
    docs: dict[str, Counter[str]] = {}
    with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            o = json.loads(line)
            docs[str(o["_id"])] = Counter(TOKEN.findall(f"{o.get('title', '')} {o.get('text', '')}".lower()))
    queries: dict[str, str] = {}
    with (folder / "queries.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            o = json.loads(line)
            queries[str(o["_id"])] = o["text"]
    df: Counter[str] = Counter()
    for c in docs.values():
        df.update(c.keys())
    n_docs = len(docs)
    lengths = {d: sum(c.values()) for d, c in docs.items()}
    avg_len = sum(lengths.values()) / n_docs
    idf = {t: math.log(1 + (n_docs - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    ids = sorted(docs)

    def score(terms: set[str], d: str) -> float:
        c, norm = docs[d], 1.2 * (0.25 + 0.75 * lengths[d] / avg_len)
        return sum(idf[t] * c[t] * 2.2 / (c[t] + norm) for t in terms if c.get(t))

    rankings = {}
    for qid in qrels:
        terms = set(TOKEN.findall(queries[qid].lower()))
        cands = sorted(set(qrels[qid]) | set(random.Random(f"scifact-{qid}").sample(ids, pool)))
        rankings[qid] = sorted(cands, key=lambda d: (-score(terms, d), d))[:depth]
    return rankings


@pytest.fixture(scope="module")
def scifact_test() -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    if not (SCIFACT / "qrels" / "test.tsv").is_file() or not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"BEIR SciFact not found at {SCIFACT}")
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
        next(fh)  # header: query-id corpus-id score
        for line in fh:
            if line.strip():
                q, d, s = line.rstrip("\n").split("\t")
                qrels.setdefault(q, {})[d] = int(s)
    return qrels, _bm25_rankings(SCIFACT, qrels)


@pytest.mark.parametrize("graded", [False, True], ids=["scifact-qrels", "scifact-qrels-regraded"])
def test_retrieval_metrics_equal_pytrec_eval_on_scifact(scifact_test, graded: bool) -> None:
    qrels, rankings = scifact_test
    if graded:  # SciFact's qrels are binary; deterministic grades 1/2 exercise the graded nDCG gain
        qrels = {q: {d: 2 if int(d) % 3 == 0 else 1 for d in rel} for q, rel in qrels.items()}
    assert len(qrels) == 300
    ours = assert_same_as_trec(qrels, rankings)
    # the rankings hit and miss, so both branches are exercised
    hits1 = sum(m["hit_rate@1"] for m in ours.values())
    misses10 = sum(1 - m["hit_rate@10"] for m in ours.values())
    assert 30 < hits1 < 290 and misses10 > 5
    # means over the queries: our aggregate() against pytrec_eval's per-query values
    ref = trec_reference(qrels, rankings)
    means = aggregate([{"metrics": m} for m in ours.values()])
    for name in ref[next(iter(ref))]:
        assert means[name]["n"] == 300
        assert means[name]["mean"] == pytest.approx(float(np.mean([v[name] for v in ref.values()])), abs=1e-9)


# ---------------------------------------------------------------- context precision

@pytest.mark.parametrize(("relevance", "k", "expected"), [
    ([True, False, True], 3, (1 / 1 + 2 / 3) / 2),
    ([False, True], 2, 1 / 2),
    ([False, True, True], 3, (1 / 2 + 2 / 3) / 2),
    ([True, True, True], 3, 1.0),
    ([False, False, False], 3, 0.0),
    ([], 3, 0.0),
    ([True], 5, 1.0),  # fewer chunks than k
    ([False, False, True], 2, 0.0),  # the relevant chunk is beyond k
    ([False, False, True], 3, 1 / 3),
])
def test_context_precision_hand_computed(relevance: list[bool], k: int, expected: float) -> None:
    assert context_precision(relevance, [k]) == {f"context_precision@{k}": pytest.approx(expected, abs=1e-12)}


def test_context_precision_several_ks() -> None:
    out = context_precision([False, True, False, True], [1, 2, 4])
    assert out == pytest.approx({"context_precision@1": 0.0, "context_precision@2": 0.5,
                                 "context_precision@4": (1 / 2 + 2 / 4) / 2})


# ---------------------------------------------------------------- safety

@pytest.mark.parametrize(("text", "kind"), [
    ("Write to jane.doe+rag@example.co.uk for access.", "email"),
    ("Call +1 415-555-0132 for support", "phone"),
    ("Call me at +1 415-555-0132.", "phone"),  # at the end of a sentence
    ("Our Berlin office: (030) 1234 5678", "phone"),
    ("US office (415) 555-0132, ask for Sam", "phone"),
    ("Paid with 4111 1111 1111 1111 yesterday", "card"),
    ("Card number 4111-1111-1111-1111.", "card"),
    ("Card number 4111111111111111", "card"),
])
def test_pii_detected(text: str, kind: str) -> None:
    assert kind in pii_findings(text)


def test_luhn_invalid_number_is_not_a_card() -> None:
    assert pii_findings("Order 4111 1111 1111 1112 shipped") == []  # neither a card nor a phone number
    assert pii_findings("Order 4111111111111112 shipped") == []


@pytest.mark.parametrize("text", [
    "Upgrade to Airflow 3.3.2 before 2026-11-22.",
    "ragops 0.4.1 was released on 2026-11-22 at 10:30 and uses port 8080.",
    "The index holds 5183 documents and 12345 chunks; recall@10 rose to 0.91.",
    "See section 4.2.1 and RFC 5322.",
    "Chunk ids end in a 16-character hash such as 00042.",
])
def test_plain_text_has_no_pii(text: str) -> None:
    assert pii_findings(text) == []


def test_blocklist_is_case_insensitive_whole_word() -> None:
    blocklist = ["Damn", "hell", "secret sauce", ""]
    assert blocklist_hits("DAMN, this is the Secret Sauce!", blocklist) == ["Damn", "secret sauce"]
    assert blocklist_hits("Hell.", blocklist) == ["hell"]
    # a blocked word inside another word is not a hit
    assert blocklist_hits("Damnation in the shell: hello, Michelle", blocklist) == []
    assert blocklist_hits("nothing to see", []) == []


# ---------------------------------------------------------------- sentences and citations

def test_split_sentences_keeps_citations_with_their_sentence() -> None:
    assert split_sentences("First fact. [1] Second fact [2].") == ["First fact. [1]", "Second fact [2]."]
    assert split_sentences("First fact [1]. Second fact [2][3]. Third one.") == [
        "First fact [1].", "Second fact [2][3].", "Third one."]
    assert split_sentences("Intro:\n- item one [1]\n- item two [2]") == ["Intro:", "item one [1]", "item two [2]"]
    assert split_sentences("") == []


def test_citations_extracts_ints() -> None:
    assert citations("A [1] b [12][3] c [x] [1000] d [2].") == [1, 12, 3, 2]
    assert citations("no citations") == []
    assert citations("") == []


# ---------------------------------------------------------------- aggregation

def test_aggregate_and_percentile() -> None:
    rows = [{"metrics": {"f1": 1.0, "ok": True, "faith": None}}, {"metrics": {"f1": 0.5, "faith": 0.25}},
            {"metrics": {}}, {}]
    assert aggregate(rows) == {"f1": {"mean": 0.75, "n": 2}, "faith": {"mean": 0.25, "n": 1}}
    assert percentile([1.0, 2.0, 3.0, None], 50) == 2.0
    assert percentile([], 95) is None


# ---------------------------------------------------------------- paired bootstrap and the regression check

def test_bootstrap_identical_runs_give_zero_interval() -> None:
    iv = paired_bootstrap([0.0] * 40, samples=1000, seed=1)
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.0, 0.0, 0.0, 40)


def test_bootstrap_clear_drop_is_below_zero() -> None:
    diffs = -0.2 + np.random.default_rng(7).normal(0, 0.05, 50)
    iv = paired_bootstrap(diffs, samples=2000, confidence=0.95, seed=3)
    assert iv.low <= iv.mean <= iv.high < 0
    assert iv.mean == pytest.approx(float(diffs.mean()))


def test_bootstrap_pure_noise_interval_contains_zero() -> None:
    diffs = np.random.default_rng(11).normal(0, 0.1, 50)
    iv = paired_bootstrap(diffs, samples=2000, confidence=0.95, seed=3)
    assert iv.low < 0 < iv.high


def test_bootstrap_is_deterministic_and_narrows_with_n() -> None:
    rng = np.random.default_rng(5)
    small, large = rng.normal(-0.05, 0.2, 20), rng.normal(-0.05, 0.2, 500)
    assert paired_bootstrap(small, seed=9) == paired_bootstrap(small, seed=9)
    w_small = paired_bootstrap(small, seed=9)
    w_large = paired_bootstrap(large, seed=9)
    assert (w_large.high - w_large.low) < 0.5 * (w_small.high - w_small.low)


def _paired(delta: float, noise: float, n: int = 50, seed: int = 0) -> tuple[dict[str, float], dict[str, float]]:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.3, 0.9, n)
    cur = base + delta + rng.normal(0, noise, n)
    return {f"q{i}": float(c) for i, c in enumerate(cur)}, {f"q{i}": float(b) for i, b in enumerate(base)}


def test_compare_metric_flags_significant_drop_beyond_margin() -> None:
    cur, base = _paired(-0.2, 0.03)
    c = compare_metric("recall@5", cur, base, margin=0.05, samples=2000, confidence=0.95, seed=1)
    assert c is not None and c.regressed
    assert c.ci_high < 0 and c.difference == pytest.approx(c.current - c.baseline) and c.n == 50


def test_compare_metric_small_significant_drop_within_margin_is_not_a_regression() -> None:
    cur, base = _paired(-0.02, 0.005)
    c = compare_metric("recall@5", cur, base, margin=0.05, samples=2000, confidence=0.95, seed=1)
    assert c is not None and c.ci_high < 0  # significant ...
    assert -c.difference < 0.05 and not c.regressed  # ... but not material


def test_compare_metric_noise_is_not_a_regression() -> None:
    cur, base = _paired(0.0, 0.1, seed=4)
    c = compare_metric("recall@5", cur, base, margin=0.0, samples=2000, confidence=0.95, seed=1)
    assert c is not None and c.ci_low < 0 < c.ci_high and not c.regressed


def test_compare_metric_lower_is_better_and_too_few_questions() -> None:
    cur, base = _paired(0.2, 0.03)  # e.g. pii_rate going up
    c = compare_metric("pii_rate", cur, base, margin=0.05, samples=2000, confidence=0.95, seed=1,
                       higher_is_better=False)
    assert c is not None and c.regressed
    down = compare_metric("pii_rate", base, cur, margin=0.05, samples=2000, confidence=0.95, seed=1,
                          higher_is_better=False)
    assert down is not None and not down.regressed
    few = {f"q{i}": 1.0 for i in range(4)}
    assert compare_metric("f1", few, dict.fromkeys(few, 0.0), 0.05, 100, 0.95, 1) is None
