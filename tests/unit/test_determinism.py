"""Identical input, identical rankings: the same query on an unchanged index version ranks the
same chunks in the same order in every process (issue 19).

The cause found on the demo index (899 chunks): Chroma's embedded store persists its HNSW graph
only every ``sync_threshold`` (1000) writes and rebuilds the rest from its log, with several
threads, whenever a process opens it, and a search for k neighbours explores only about
max(k, ef_search) nodes: the same query missed true top-50 neighbours, differently in each fresh
process, and the fused ranking moved. Ties were a second, smaller source: equal BM25 scores
were ranked by the order the chunks were loaded in, equal distances by HNSW's internal labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragops import state
from ragops.config import load_settings
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync
from ragops.lexical import LexicalIndex
from ragops.vectorstore import VectorStore
from tests.conftest import write

ROOT = Path(__file__).resolve().parents[2]
RAGOPS = str(Path(sys.executable).parent / "ragops")


# ----------------------------------------------------------------------------------------------
# BM25: ties and build order


def tie_corpus() -> tuple[list[str], list[str], list[str]]:
    """Chunks whose texts repeat (equal BM25 scores), in a scrambled id order."""
    texts = ["the scheduler retries a failed ingest twice"] * 6 + ["vectors live in chroma collections"] * 4 + \
            [f"alert e-mails fold identical alerts number {i}" for i in range(5)]
    ids = [f"c{(7 * i) % len(texts):02d}" for i in range(len(texts))]  # a permutation of c00..c14
    return ids, texts, [f"doc-{cid}" for cid in ids]


def test_a_bm25_index_ranks_the_same_whatever_order_the_chunks_were_loaded_in() -> None:
    ids, texts, docs = tie_corpus()
    forward = LexicalIndex.build(ids, texts, docs)
    backward = LexicalIndex.build(ids[::-1], texts[::-1], docs[::-1])
    for query in ("scheduler retries", "chroma vectors", "identical alerts", "retries chroma alerts"):
        a, b = forward.query(query, 50), backward.query(query, 50)
        assert a == b, query
        # equal scores rank by chunk id
        for (c1, _, s1), (c2, _, s2) in zip(a, a[1:], strict=False):
            assert s1 > s2 or (s1 == s2 and c1 < c2), (query, a)
    assert forward.ids_sha256 == backward.ids_sha256


def test_the_cut_at_k_among_equal_bm25_scores_keeps_the_smallest_chunk_ids() -> None:
    ids, texts, docs = tie_corpus()
    for order in (ids, ids[::-1]):
        pos = {c: i for i, c in enumerate(ids)}
        idx = LexicalIndex.build(order, [texts[pos[c]] for c in order], [docs[pos[c]] for c in order])
        got = idx.query("scheduler retries", 3)
        tied = sorted(c for c, t in zip(ids, texts, strict=True) if "scheduler" in t)
        assert [c for c, _, _ in got] == tied[:3]
        assert len({s for _, _, s in got}) == 1


BUILD_AND_QUERY = """
import json, sys
from ragops.lexical import LexicalIndex
ids, texts, docs, folder = json.loads(sys.argv[1])
LexicalIndex.build(ids, texts, docs).save(folder)
idx = LexicalIndex.load(folder)
print(json.dumps([idx.query(q, 50) for q in ("scheduler retries", "chroma vectors", "identical alerts")]))
"""


def test_bm25_indexes_built_in_processes_with_other_hash_seeds_rank_alike(tmp_path: Path) -> None:
    """bm25s numbers the stemmed terms in set order (PYTHONHASHSEED): the files differ from one
    build to the next, the rankings must not."""
    ids, texts, docs = tie_corpus()
    out = []
    for seed, order in (("1", slice(None)), ("2", slice(None, None, -1)), ("3", slice(None))):
        arg = json.dumps([ids[order], texts[order], docs[order], str(tmp_path / f"bm25-{seed}")])
        proc = subprocess.run([sys.executable, "-c", BUILD_AND_QUERY, arg], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=300, check=True)
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert out[0] == out[1] == out[2]


# ----------------------------------------------------------------------------------------------
# dense: exact top k, ties by chunk id, the same in a fresh process


def exact_top(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    d = 1.0 - v.astype(np.float64) @ (query / np.linalg.norm(query)).astype(np.float64)
    return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (round(float(d[i]), 6), ids[i]))][:k]


def dense_fixture(settings) -> tuple[VectorStore, list[str], np.ndarray, np.ndarray]:
    """600 vectors (between Chroma's HNSW batch size and its sync threshold: the graph is rebuilt
    from the log in every process), clustered so that many are close, with exact duplicates;
    inserted in an order that is not the id order."""
    rng = np.random.default_rng(19)
    centres = rng.normal(size=(6, 48))
    vecs = np.repeat(centres, 100, axis=0) + 0.35 * rng.normal(size=(600, 48))
    vecs[550:] = vecs[500:550]  # 50 exact duplicates: equal distances to every query
    vecs = vecs.astype(np.float32)
    ids = [f"chunk-{(i * 37) % 600:04d}" for i in range(600)]
    store = VectorStore(settings)
    store.collection("det__v1", create=True)
    with store.writer():
        store.upsert("det__v1", ids, vecs, [f"text {c}" for c in ids], [{"doc_id": f"d{c[-2:]}"} for c in ids])
    queries = (centres[rng.integers(0, 6, 40)] + 0.35 * rng.normal(size=(40, 48))).astype(np.float32)
    queries[:10] = vecs[500:510]  # queries right on a duplicated pair
    return store, ids, vecs, queries


QUERY_AGAIN = """
import json, sys
import numpy as np
from ragops.config import load_settings
from ragops.vectorstore import VectorStore
queries, k = json.loads(sys.argv[1])
res = VectorStore(load_settings()).query_many("det__v1", np.asarray(queries, dtype=np.float32), k)
print(json.dumps(res["ids"]))
"""


def test_dense_search_returns_the_exact_top_k_with_ties_by_chunk_id(settings) -> None:
    store, ids, vecs, queries = dense_fixture(settings)
    k = 30
    res = store.query_many("det__v1", queries, k)
    for j, q in enumerate(queries):
        assert res["ids"][j] == exact_top(vecs, ids, q, k), j
        assert res["distances"][j] == sorted(res["distances"][j])
        assert [m["doc_id"] for m in res["metadatas"][j]] == [f"d{c[-2:]}" for c in res["ids"][j]]
        assert res["documents"][j] == [f"text {c}" for c in res["ids"][j]]
    one = store.query("det__v1", queries[0], 5)
    assert one["ids"] == [res["ids"][0][:5]] and set(one) == {"ids", "documents", "metadatas", "distances"}
    assert store.query_many("det__v1", queries[:2], 3, include=["distances"]).keys() == {"ids", "distances"}


def test_dense_search_ranks_alike_in_a_fresh_process_with_another_hash_seed(settings) -> None:
    store, ids, vecs, queries = dense_fixture(settings)
    k = 50
    here = store.query_many("det__v1", queries, k)["ids"]
    for seed in ("11", "12"):
        proc = subprocess.run([sys.executable, "-c", QUERY_AGAIN, json.dumps([queries.tolist(), k])],
                              capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed},
                              timeout=300, check=True)
        assert json.loads(proc.stdout.strip().splitlines()[-1]) == here


def test_an_empty_collection_has_no_neighbours(settings) -> None:
    store = VectorStore(settings)
    store.collection("empty__v1", create=True)
    res = store.query_many("empty__v1", np.ones((2, 4), dtype=np.float32), 5)
    assert res == {"ids": [[], []], "distances": [[], []], "documents": [[], []], "metadatas": [[], []]}


# ----------------------------------------------------------------------------------------------
# the same evaluation twice: identical rankings in both results.jsonl


TOPICS = ["scheduler retries", "chroma collections", "alert e-mails", "state store", "prompt registry",
          "drift checks", "bm25 index", "embedding model"]


def small_corpus(root: Path) -> None:
    """130 short documents on a few topics in near-identical words (many near-ties in both
    rankings), some of them word for word the same (exact ties): more than Chroma's HNSW batch of
    100, so each process rebuilds part of the graph from the log."""
    for i in range(130):
        topic = TOPICS[i % len(TOPICS)]
        n = i % 13 if i % 5 else 0  # every fifth document of a topic repeats the same text
        write(root, f"{topic.split()[0]}/{i:03d}.md",
              f"# {topic.title()} note {i}\n\nThe {topic} of ragops keeps working when a task fails. "
              f"Note {n} about the {topic}: read it before changing the settings.\n")


def eval_env(tmp_path: Path, embedder, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    cfg = tmp_path / "ragops.yaml"
    cfg.write_text("indexes:\n  docs: {}\n")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    s = load_settings()
    state.upgrade(s.state_db_url)
    small_corpus(tmp_path / "corpus")
    sync(s, str(tmp_path / "corpus"), "docs", trigger="test", embedder=embedder)
    rows = [{"id": f"q{i:02d}", "question": f"What does the {t} of ragops do when a task fails?",
             "reference_answer": f"the {t} keeps working", "relevant_doc_ids": [f"{t.split()[0]}/{i:03d}.md"]}
            for i, t in enumerate(TOPICS)]
    rows += [{"id": "q90", "question": "Which note about the settings should I read?", "reference_answer": "",
              "relevant_doc_ids": [], "answerable": False},
             {"id": "q91", "question": "ragops task fails note settings", "reference_answer": "",
              "relevant_doc_ids": [], "answerable": False}]
    golden = tmp_path / "golden.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return cfg, golden


def rankings(results: Path) -> dict[str, dict]:
    out = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        out[r["id"]] = {"docs": [(d["rank"], d["doc_id"], d["score"]) for d in r["retrieved_docs"]],
                        "chunks": [(c["n"], c["chunk_id"], c["doc_id"]) for c in r["contexts"]],
                        "refused": r["refused"]}
    return out


def test_the_same_evaluation_twice_gives_identical_rankings(tmp_path: Path, data_dir: Path, embedder,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """hybrid (the default mode) runs both retrievers and the fusion."""
    mode = "hybrid"
    cfg, golden = eval_env(tmp_path, embedder, monkeypatch)
    s = load_settings()
    first = run_eval(s, golden, "rag_answer@1", "docs", retrieval=mode, embedder=embedder,
                     output_dir=tmp_path / "first")
    # the second run in a fresh process, with another hash seed: the CLI, as a person runs it
    env = {**os.environ, "PYTHONHASHSEED": "4242", "RAGOPS_CONFIG": str(cfg)}
    proc = subprocess.run([RAGOPS, "eval", "run", "--dataset", str(golden), "--prompt", "rag_answer@1",
                           "--retrieval", mode, "--output", str(tmp_path / "second"), "--json"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = rankings(Path(first["output_dir"]) / "results.jsonl")
    b = rankings(tmp_path / "second" / "results.jsonl")
    assert len(a) == 10 and a.keys() == b.keys()
    for qid in a:
        assert a[qid] == b[qid], qid
    assert json.loads(proc.stdout)["metrics"] == first["metrics"]
