"""Dense search tuning (VectorStore.tune_search): a per-collection HNSW ef_search chosen by
measuring recall@10 against exact search, persisted, and deterministic in a new process.

Real embedded Chroma, real (clustered random, 384-d) vectors; the exact neighbours come from
numpy over the generated vectors, not from the store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragops.vectorstore import VectorStore

N, DIM, K = 3000, 384, 10
ROOT = Path(__file__).resolve().parents[2]


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters, of a lower intrinsic dimension than DIM (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n // 50, 128))
    proj = rng.normal(size=(128, DIM)) / np.sqrt(128)
    z = centers[rng.integers(0, len(centers), n)] + rng.normal(size=(n, 128))
    x = z @ proj + 0.3 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near_duplicates(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight clusters of about 100 near-duplicates (cosine about 0.88 to their
    centre): HNSW with a small ef_search misses true neighbours among them."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n // 100, DIM))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(0.0, 0.02, (n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def questions(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Own vectors moved by noise of norm 1 (cosine about 0.7 to their vector)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, x.shape[1]))
    q = x[rng.choice(len(x), n, replace=False)] + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def recall(store: VectorStore, x: np.ndarray, ids: list[str], q: np.ndarray) -> tuple[float, list[list[str]]]:
    exact = np.argsort(-(q @ x.T), axis=1)[:, :K]
    got = store.query_many("tune_me", q, K, include=())["ids"]
    hits = sum(len(set(g) & {ids[i] for i in e}) for g, e in zip(got, exact, strict=True))
    return hits / (K * len(q)), got


def fill(settings, x: np.ndarray) -> tuple[VectorStore, np.ndarray, list[str]]:
    n = len(x)
    ids = [f"doc{i:05d}#0" for i in range(n)]
    store = VectorStore(settings)
    store.collection("tune_me", create=True)
    with store.writer():
        store.upsert("tune_me", ids, x, [f"chunk {i}" for i in range(n)], [{"doc_id": f"doc{i:05d}"} for i in range(n)])
    return store, x, ids


@pytest.fixture
def filled(settings) -> tuple[VectorStore, np.ndarray, list[str]]:
    return fill(settings, clustered(N))


@pytest.fixture
def crowded(settings) -> tuple[VectorStore, np.ndarray, list[str]]:
    """12,000 near-duplicates: here the grid's small values do not reach the target."""
    return fill(settings, near_duplicates(12_000))


CHILD = ("import json, sys, numpy as np\n"
         "from ragops.config import load_settings\nfrom ragops.vectorstore import VectorStore\n"
         "s = VectorStore(load_settings())\nq = np.load(sys.argv[1])\n"
         "print(json.dumps({'config': s.search_config('tune_me'), "
         "'ids': s.query_many('tune_me', q, 10, include=())['ids']}))\n")


def in_new_process(settings, q: np.ndarray) -> dict:
    """The ef_search in force and the top 10 of each query, in a new process that opens the store."""
    np.save(settings.data_dir / "q.npy", q)
    out = subprocess.run([sys.executable, "-c", CHILD, str(settings.data_dir / "q.npy")], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def hits(x: np.ndarray, ids: list[str], q: np.ndarray, got: list[list[str]]) -> float:
    exact = np.argsort(-(q @ x.T), axis=1)[:, :K]
    return sum(len(set(g) & {ids[i] for i in e}) for g, e in zip(got, exact, strict=True)) / (K * len(q))


def test_tuned_ef_reaches_the_target_persists_and_ranks_identically_in_new_processes(crowded, settings) -> None:
    store, x, ids = crowded
    assert store.search_config("tune_me")["tuned_ef_search"] is None
    target = 0.995
    report = store.tune_search("tune_me", target=target, sample=200)
    tried = report["tried"]
    assert report["met"] and report["recall"] >= target
    assert report["ef_search"] == min(v for v, r in tried.items() if r >= target)
    # each value was measured at that value (not at the ef_search the writer's index was loaded with)
    assert len(set(tried.values())) > 1, tried
    lower = [v for v in tried if v < report["ef_search"]]
    assert lower and all(tried[v] < target for v in lower), tried
    q = questions(x, 100, seed=7)  # other questions than the tuning's own
    measured, got = recall(store, x, ids, q)
    assert measured >= 0.99, measured

    # the choice is real: a new process searches with it and reaches the target on the tuning's own
    # queries, and the grid value below it (set, then measured in another new process) does not
    tuning_q = store.sample_queries("tune_me", 200)
    chosen = in_new_process(settings, tuning_q)
    assert chosen["config"]["ef_search"] == report["ef_search"] == chosen["config"]["tuned_ef_search"]
    assert hits(x, ids, tuning_q, chosen["ids"]) >= target
    below = max(lower)
    col = store.collection("tune_me")
    col.modify(configuration={"hnsw": {"ef_search": below}})
    try:
        low = in_new_process(settings, tuning_q)
    finally:
        col.modify(configuration={"hnsw": {"ef_search": report["ef_search"]}})
    assert low["config"]["ef_search"] == below
    assert hits(x, ids, tuning_q, low["ids"]) < target, (below, tried)

    children = [in_new_process(settings, q) for _ in range(2)]  # the same graph, the same answers
    for child in children:
        assert child["config"]["ef_search"] == report["ef_search"] == child["config"]["tuned_ef_search"]
    assert children[0]["ids"] == children[1]["ids"]
    # the writing process keeps the graph it built in memory, which can rank a few queries otherwise
    # than the graph read back from disk: most rows still agree
    assert sum(a == b for a, b in zip(children[0]["ids"], got, strict=True)) >= 0.9 * len(got)


def test_bad_tuning_arguments_are_refused(filled) -> None:
    from ragops.errors import ConfigError

    store, _x, _ids = filled
    with pytest.raises(ConfigError, match="target must be in"):
        store.tune_search("tune_me", target=1.5)


def test_finish_settles_only_until_the_collection_grew_past_the_share(filled) -> None:
    store, x, ids = filled
    small = store.finish("tune_me")  # 3,000 vectors are searched exhaustively: nothing to tune
    assert not small["retuned"] and "exhaustively" in small["skipped"]
    assert store.search_config("tune_me")["tuned_ef_search"] is None
    first = store.finish("tune_me", min_vectors=1000)
    assert first["retuned"] and first["vectors"] == N
    assert not store.finish("tune_me", min_vectors=1000)["retuned"]  # unchanged: only settled
    more = clustered(800, seed=3)
    with store.writer():
        store.upsert("tune_me", [f"new{i:05d}#0" for i in range(800)], more, [f"n {i}" for i in range(800)],
                     [{"doc_id": f"new{i}"} for i in range(800)])
    again = store.finish("tune_me", min_vectors=1000)  # 3,800 vectors: grown by 27 % (> 20 %)
    assert again["retuned"] and again["vectors"] == N + 800
    assert store.search_config("tune_me")["tuned_count"] == N + 800
