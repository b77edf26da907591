"""Lexical (BM25) index and reciprocal rank fusion: unit tests, plus a SciFact quality check."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest

from ragops.errors import LexicalIndexError, RagopsError
from ragops.evaluation.metrics import retrieval_metrics
from ragops.lexical import Bm25Settings, LexicalIndex, folder_for, ids_digest, rrf

SCIFACT = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "scifact"

CHUNKS = {
    "c1": ("d1", "The scheduler retries a failed task three times before giving up."),
    "c2": ("d1", "Each retry waits longer than the previous one: exponential backoff."),
    "c3": ("d2", "Chroma stores embeddings in collections; an alias points at the live one."),
    "c4": ("d2", "The ingest retried the upload after the network error was resolved."),
    "c5": ("d3", "Airflow parses DAG files every thirty seconds by default."),
    "c6": ("d3", "Quarantined records carry the zygomorphic validation code."),
}


def _build(settings: Bm25Settings | None = None) -> LexicalIndex:
    ids = list(CHUNKS)
    return LexicalIndex.build(ids, [CHUNKS[c][1] for c in ids], [CHUNKS[c][0] for c in ids],
                              settings or Bm25Settings())


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return _build()


# ---------------------------------------------------------------- build and query


def test_rare_term_ranks_its_chunk_first(index: LexicalIndex) -> None:
    hits = index.query("which code is zygomorphic?", k=3)
    assert hits[0][:2] == ("c6", "d3")
    assert all(score > 0 for _, _, score in hits)


def test_stemming_matches_inflections(index: LexicalIndex) -> None:
    hits = index.query("retries", k=10)
    assert {c for c, _, _ in hits} == {"c1", "c2", "c4"}  # retries, retry, retried
    assert [s for _, _, s in hits] == sorted((s for _, _, s in hits), reverse=True)


def test_without_stemming_only_exact_tokens_match() -> None:
    plain = _build(Bm25Settings(stemmer=None))
    assert [c for c, _, _ in plain.query("retries", k=10)] == ["c1"]


def test_stopword_only_and_unknown_queries_return_nothing(index: LexicalIndex) -> None:
    assert index.query("the of and a is", k=5) == []
    assert index.query("", k=5) == []
    assert index.query("xylophone", k=5) == []


def test_k_is_respected_and_doc_ids_carried(index: LexicalIndex) -> None:
    hits = index.query("retries scheduler chroma airflow", k=2)
    assert len(hits) == 2
    assert index.query("retries", k=0) == []
    assert len(index.query("retries", k=1000)) == 3  # k above the number of chunks
    for chunk_id, doc_id, _ in index.query("retries scheduler chroma airflow", k=10):
        assert CHUNKS[chunk_id][0] == doc_id


def test_query_many_equals_query(index: LexicalIndex) -> None:
    texts = ["retries", "the", "zygomorphic code", "alias collections", "nothing matches xylophone"]
    assert index.query_many(texts, k=3) == [index.query(t, k=3) for t in texts]
    assert index.query_many([], k=3) == []


def test_properties(index: LexicalIndex) -> None:
    assert index.n_chunks == 6
    assert index.ids_sha256 == ids_digest(["c6", "c5", "c4", "c3", "c2", "c1"])
    assert len(index.ids_sha256) == 64


def test_empty_index_returns_nothing(tmp_path: Path) -> None:
    empty = LexicalIndex.build([], [], [])
    assert empty.n_chunks == 0
    assert empty.query("retries", k=5) == []
    empty.save(tmp_path / "e")
    assert LexicalIndex.load(tmp_path / "e").query("retries", k=5) == []


def test_chunks_without_any_term_are_indexed_but_never_returned() -> None:
    idx = LexicalIndex.build(["a", "b"], ["the of", ""], ["d", "d"])
    assert idx.n_chunks == 2
    assert idx.query("the", k=5) == []


def test_bad_input_raises() -> None:
    with pytest.raises(LexicalIndexError, match="one text and one doc id"):
        LexicalIndex.build(["a", "b"], ["x"], ["d", "d"])
    with pytest.raises(LexicalIndexError, match="'a' appears more than once"):
        LexicalIndex.build(["a", "a"], ["x", "y"], ["d", "d"])
    with pytest.raises(LexicalIndexError, match="unknown stemmer"):
        _build(Bm25Settings(stemmer="klingon"))
    with pytest.raises(LexicalIndexError, match="stop-word"):
        _build(Bm25Settings(stopwords="klingon"))


def test_falls_back_without_pystemmer(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                      tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "Stemmer", None)  # makes `import Stemmer` fail
    with caplog.at_level(logging.WARNING, logger="ragops.lexical"):
        idx = _build()
    assert "PyStemmer is not installed" in caplog.text
    assert [c for c, _, _ in idx.query("retries", k=10)] == ["c1"]
    idx.save(tmp_path / "nostem")
    assert LexicalIndex.load(tmp_path / "nostem").query("retries", k=10) == idx.query("retries", k=10)


def test_load_refuses_a_stemmed_index_without_pystemmer(index: LexicalIndex, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    index.save(tmp_path / "x")
    monkeypatch.setitem(sys.modules, "Stemmer", None)
    with pytest.raises(LexicalIndexError, match="PyStemmer is not installed"):
        LexicalIndex.load(tmp_path / "x")


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip(index: LexicalIndex, tmp_path: Path) -> None:
    folder = folder_for(tmp_path, "docs_v1")
    assert folder == tmp_path / "lexical" / "docs_v1"
    index.save(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["docs_v1"]  # no temp folders left
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["n_chunks"] == 6 and manifest["ids_sha256"] == index.ids_sha256
    assert manifest["settings"] == {"k1": 1.5, "b": 0.75, "stemmer": "english", "stopwords": "en"}
    assert manifest["bm25s_version"] and manifest["created_at"]
    loaded = LexicalIndex.load(folder)
    assert (loaded.n_chunks, loaded.ids_sha256, loaded.settings) == (6, index.ids_sha256, index.settings)
    texts = ["retries", "zygomorphic code", "alias collections", "the"]
    assert loaded.query_many(texts, k=4) == index.query_many(texts, k=4)


def test_save_replaces_an_existing_index(index: LexicalIndex, tmp_path: Path) -> None:
    folder = tmp_path / "lexical" / "c"
    index.save(folder)
    (folder / "stale-file").write_text("from the old index")
    other = LexicalIndex.build(["n1"], ["a brand new zygomorphic text"], ["nd"])
    other.save(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["c"]
    assert not (folder / "stale-file").exists()
    loaded = LexicalIndex.load(folder)
    assert loaded.n_chunks == 1
    assert [c for c, _, _ in loaded.query("zygomorphic", k=5)] == ["n1"]


def test_failed_save_keeps_the_old_index_and_leaves_no_temp(index: LexicalIndex, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "c"
    index.save(folder)

    def boom(self: LexicalIndex, tmp: Path) -> None:
        (tmp / "partial").write_text("x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LexicalIndex, "_write", boom)
    with pytest.raises(LexicalIndexError, match="cannot write the lexical index"):
        LexicalIndex.build(["z"], ["zebra"], ["d"]).save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
    assert LexicalIndex.load(folder).n_chunks == 6


def test_load_missing_folder_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "lexical" / "nope"
    with pytest.raises(LexicalIndexError, match="does not exist") as err:
        LexicalIndex.load(folder)
    assert str(folder) in str(err.value) and "re-run the ingest" in str(err.value)
    assert isinstance(err.value, RagopsError)


@pytest.mark.parametrize("damage", ["no_manifest", "bad_json", "ids_mismatch", "missing_matrix", "empty_matrix",
                                    "bad_vocab", "count"])
def test_load_corrupt_folder_names_it(index: LexicalIndex, tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "c"
    index.save(folder)
    manifest = folder / "manifest.json"
    if damage == "no_manifest":
        manifest.unlink()
    elif damage == "bad_json":
        manifest.write_text("{not json")
    elif damage == "ids_mismatch":
        (folder / "ids.json").write_text(json.dumps({"chunk_ids": ["c1", "c2", "c3", "c4", "c5", "cX"],
                                                     "doc_ids": ["d"] * 6}))
    elif damage == "missing_matrix":
        (folder / "data.csc.index.npy").unlink()
    elif damage == "empty_matrix":
        (folder / "indptr.csc.index.npy").write_bytes(b"")
    elif damage == "bad_vocab":
        (folder / "vocab.index.json").write_text(json.dumps({"retri": 10_000, "": 10_001}))
    else:
        m = json.loads(manifest.read_text())
        manifest.write_text(json.dumps(dict(m, n_chunks=7)))
    with pytest.raises(LexicalIndexError) as err:
        LexicalIndex.load(folder)
    assert str(folder) in str(err.value) and "re-run the ingest" in str(err.value)


# ---------------------------------------------------------------- rrf


def test_rrf_two_rankings() -> None:
    out = rrf([["a", "b", "c"], ["b", "a", "d"]], k=60)
    assert [i for i, _ in out] == ["a", "b", "c", "d"]  # a and b tie: a appears first
    scores = dict(out)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["a"] == scores["b"]  # exact tie
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 63)


def test_rrf_weights_and_ids_in_one_ranking() -> None:
    out = rrf([["a", "b"], ["c", "b"]], weights=[1.0, 2.0], k=1)
    # a: 1/2; b: 1/3 + 2/3 = 1; c: 2/2 = 1 -> b and c tie at 1.0; b appears first (ranking 1)
    assert [i for i, _ in out] == ["b", "c", "a"]
    assert dict(out) == pytest.approx({"a": 0.5, "b": 1.0, "c": 1.0})


def test_rrf_tie_order_is_first_appearance() -> None:
    # x, y, w tie, their terms summed in different orders; z only in ranking 2.
    out = rrf([["x", "y", "w"], ["y", "w", "x", "z"], ["w", "x", "y"]], k=10)
    scores = dict(out)
    assert scores["x"] == scores["y"] == scores["w"] == pytest.approx(1 / 11 + 1 / 12 + 1 / 13)
    assert [i for i, _ in out] == ["x", "y", "w", "z"]
    assert scores["z"] == pytest.approx(1 / 14)
    # b and c tie and first appear in ranking 2, where c comes first
    assert [i for i, _ in rrf([["a"], ["c", "b"], ["b", "c"]])] == ["c", "b", "a"]
    assert rrf([["q", "p"], ["p", "q"]]) == [("q", 1 / 61 + 1 / 62), ("p", 1 / 61 + 1 / 62)]


def test_rrf_edge_cases() -> None:
    assert rrf([]) == []
    assert rrf([[], []]) == []
    assert rrf([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", 1 / 3)]  # a repeat counts once
    with pytest.raises(LexicalIndexError, match="one weight per ranking"):
        rrf([["a"]], weights=[1.0, 2.0])
    with pytest.raises(LexicalIndexError, match=">= 0"):
        rrf([["a"]], weights=[-1.0])


# ---------------------------------------------------------------- SciFact


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"SciFact not found at {SCIFACT}")
def test_scifact_bm25_ndcg(tmp_path: Path) -> None:
    corpus = _read_jsonl(SCIFACT / "corpus.jsonl")
    queries = {q["_id"]: q["text"] for q in _read_jsonl(SCIFACT / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with (SCIFACT / "qrels" / "test.tsv").open(encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) >= 1:
                qrels.setdefault(qid, {})[did] = int(score)
    assert len(corpus) == 5183 and len(qrels) == 300

    t0 = time.perf_counter()
    idx = LexicalIndex.build([d["_id"] for d in corpus], [f"{d['title']} {d['text']}" for d in corpus],
                             [d["_id"] for d in corpus])
    t1 = time.perf_counter()
    qids = list(qrels)
    results = idx.query_many([queries[q] for q in qids], k=10)
    t2 = time.perf_counter()
    ndcg = [retrieval_metrics([doc for _, doc, _ in hits], qrels[q], [10])["ndcg@10"]
            for q, hits in zip(qids, results, strict=True)]
    mean = sum(ndcg) / len(ndcg)
    print(f"\nSciFact BM25: nDCG@10 {mean:.4f} over {len(ndcg)} queries; "
          f"build {t1 - t0:.2f} s, {len(qids)} queries {t2 - t1:.3f} s")
    assert mean >= 0.67
    idx.save(tmp_path / "scifact")
    assert LexicalIndex.load(tmp_path / "scifact").query_many([queries[q] for q in qids[:20]], k=10) == results[:20]


def test_batched_build_scores_equal_bm25s_built_from_all_texts_at_once() -> None:
    """The build tokenizes a batch at a time into compact token ids (memory): the scores must be the
    ones bm25s gives when it indexes every text in one call, whatever the batch size."""
    import bm25s
    import numpy as np

    import ragops.lexical as L

    texts = [CHUNKS[c][1] for c in sorted(CHUNKS)] + ["retry retry retry backoff", "the of and"]
    ids = [f"c{i:02d}" for i in range(len(texts))]
    stem = L._stemmer("english")
    ref = bm25s.BM25()
    ref.index(bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=stem, show_progress=False),
              show_progress=False)
    for batch in (1, 3, 1000):
        old, L.BUILD_BATCH = L.BUILD_BATCH, batch
        try:
            idx = LexicalIndex.build(ids, texts, ids)
        finally:
            L.BUILD_BATCH = old
        for q in ("retries backoff", "zygomorphic code", "chroma alias live"):
            toks = bm25s.tokenize([q], lower=True, stopwords="en", stemmer=stem, return_ids=False,
                                  show_progress=False)[0]
            np.testing.assert_allclose(idx._bm25.get_scores(toks), ref.get_scores(toks), rtol=1e-6)
        assert idx.query("retries backoff", k=1)[0][0] == "c06"
