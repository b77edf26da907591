"""Two eval runs compared (ragops.evaluation.compare): the demo corpus in embedded Chroma, the
bundled golden set and the offline generator. The known-bad case removes the only relevant document
of eight golden questions between two runs: those questions must come first among the regressions,
and hit rate must be worse with an interval below zero. The control runs twice on an unchanged
index: nothing may be flagged."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import pytest

from ragops.errors import EvalError
from ragops.evaluation.compare import compare_runs, lower_is_better, metric_group
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "include" / "eval" / "golden" / "docs.jsonl"


def only_relevant_docs() -> dict[str, str]:
    """question id -> its one relevant document, for the questions whose document no other question names."""
    qs = [json.loads(line) for line in GOLDEN.read_text().splitlines() if line.strip()]
    named = collections.Counter(d for q in qs for d in q.get("relevant_doc_ids") or [])
    return {q["id"]: q["relevant_doc_ids"][0] for q in qs
            if len(q.get("relevant_doc_ids") or []) == 1 and named[q["relevant_doc_ids"][0]] == 1}


@pytest.fixture
def corpus_runs(settings, embedder, tmp_path: Path):
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "include" / "corpus", corpus)
    sync(settings, str(corpus), "docs", trigger="test", embedder=embedder)
    run = lambda: run_eval(settings, GOLDEN, "rag_answer@1", "docs", embedder=embedder,  # noqa: E731
                           allow_unknown_docs=True)["run_id"]
    return settings, corpus, run


def test_removed_documents_make_their_questions_the_worst_regressions(corpus_runs, capsys) -> None:
    settings, corpus, run = corpus_runs
    before = run()
    again = run()
    gone = only_relevant_docs()
    assert len(gone) >= 6
    for doc in gone.values():
        (corpus / doc).unlink()
    sync(settings, str(corpus), "docs", trigger="test")
    after = run()

    # control: the same index twice, nothing changes and nothing is flagged
    same = compare_runs(settings, before, again)
    assert same["counts"]["worse"] == same["counts"]["better"] == 0 and same["counts"]["paired"] == 50
    assert all(m["verdict"] in ("no significant change", "same", "n/a", "changed") for m in same["metrics"]
               if m["group"] != "operations"), [m for m in same["metrics"] if m["verdict"] in ("worse", "better")]

    cmp = compare_runs(settings, before, after)
    qs = cmp["questions"]
    lost = {q["id"] for q in qs if q["a"]["metrics"].get("hit_rate@5") == 1.0 and q["b"]["metrics"].get("hit_rate@5") == 0.0}
    assert lost and lost <= set(gone), (lost, gone)  # only the questions whose document went lost their hit
    first = [q["id"] for q in qs[:len(lost)]]
    assert set(first) == lost, [(q["id"], q["change"]) for q in qs[:12]]  # worst regressions first
    assert all(q["change"] < 0 for q in qs[:len(lost)])
    assert cmp["counts"]["worse"] >= len(lost)
    hit = next(m for m in cmp["metrics"] if m["metric"] == "hit_rate@5")
    assert hit["group"] == "retrieval" and hit["verdict"] == "worse" and hit["ci_high"] < 0 < hit["a"]
    assert hit["difference"] == pytest.approx(hit["b"] - hit["a"], abs=1e-6)
    # each regression carries both sides: answers, contexts with their texts, relevant documents
    worst = qs[0]
    assert worst["relevant_doc_ids"] and worst["relevant_doc_ids"][0] in worst["a"]["retrieved_docs"]
    assert worst["relevant_doc_ids"][0] not in worst["b"]["retrieved_docs"]
    assert worst["a"]["contexts"] and all(c["text"] for c in worst["a"]["contexts"] + worst["b"]["contexts"])
    assert "output_dir" not in cmp["a"] and "output_dir" not in cmp["b"]  # no server paths
    assert cmp["a"]["dataset"] == "docs.jsonl" and not cmp["warnings"] and not same["warnings"]
    # known-bad: another golden set (the same file name, other questions) is named, not taken as the same
    other = corpus.parent / "golden" / "docs.jsonl"
    other.parent.mkdir()
    other.write_text("".join(GOLDEN.read_text().splitlines(keepends=True)[:10]))
    subset = run_eval(settings, other, "rag_answer@1", "docs", allow_unknown_docs=True)["run_id"]
    assert any("different datasets" in w for w in compare_runs(settings, after, subset)["warnings"])

    # the command line: the same figures, the worst question named first
    from ragops.cli import main

    assert main(["eval", "compare", before, after, "--limit", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{after} (rag_answer@1" in out and "retrieval:" in out and "WORSE" in out
    assert f"{cmp['counts']['worse']} worse" in out
    listed = out.split("worst regressions:")[1].split()
    assert listed[0] == qs[0]["id"]

    with pytest.raises(EvalError, match="two different runs"):
        compare_runs(settings, before, before)
    with pytest.raises(EvalError, match="unknown eval run 'nope'"):
        compare_runs(settings, before, "nope")


@pytest.mark.parametrize(("name", "group", "lower"), [
    ("ndcg@10", "retrieval", False), ("hit_rate@5", "retrieval", False), ("faithfulness", "groundedness", False),
    ("hallucination_rate", "groundedness", True), ("citation_validity", "groundedness", False),
    ("pii_rate", "safety", True), ("latency_ms_p95", "operations", True), ("tokens_in", "operations", True),
    ("false_refusal", "operations", True), ("answer_f1", "answer", False), ("refusal_accuracy", "answer", False),
])
def test_metric_groups_and_directions(name, group, lower) -> None:
    assert metric_group(name) == group and lower_is_better(name) is lower
