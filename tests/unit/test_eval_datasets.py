"""Golden question sets: the bundled set, validation errors, sampling and the BEIR importer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragops.errors import DatasetError
from ragops.evaluation.datasets import Dataset, import_beir, load_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[2]
GOLDEN = PROJECT_ROOT / "include" / "eval" / "golden" / "docs.jsonl"
CORPUS = PROJECT_ROOT / "include" / "corpus"
# Same location bench/ingest_scifact.py uses: `shared` sits beside the project checkout.
SCIFACT = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"


def jl(*objs: object) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


GOOD = {"id": "ok1", "question": "What is ragops?", "reference_answer": "A RAG ops toolkit.",
        "relevant_doc_ids": ["concepts/a.md"]}


# ---------------------------------------------------------------- the bundled set

def test_bundled_golden_set_loads_and_points_at_real_docs() -> None:
    ds = load_dataset(GOLDEN)
    assert len(ds) >= 40
    unanswerable = [q for q in ds.questions if not q.answerable]
    assert len(unanswerable) >= 8
    assert all(not q.relevant for q in unanswerable)
    for q in ds.questions:
        if q.answerable:
            assert q.reference_answer, q.id
            assert q.relevant_doc_ids, q.id
    corpus_ids = {p.relative_to(CORPUS).as_posix() for p in CORPUS.rglob("*") if p.is_file()}
    missing = [(q.id, d) for q in ds.questions for d in q.relevant_doc_ids if d not in corpus_ids]
    assert missing == []
    # the same check through the loader
    assert len(load_dataset(GOLDEN, known_doc_ids=corpus_ids)) == len(ds)


# ---------------------------------------------------------------- validation errors

BAD_CASES = {
    "invalid_json": (jl(GOOD, '{"id": "x", "question": "unterminated'), 2, None),
    "missing_question": (jl(GOOD, {"id": "x", "reference_answer": "r"}), 2, "question"),
    "relevant_not_a_list": (jl({"id": "x", "question": "q?", "relevant_doc_ids": "a.md"}), 1, "relevant_doc_ids"),
    "relevant_list_of_non_strings": (jl({"id": "x", "question": "q?", "relevant_doc_ids": [1]}), 1,
                                     "relevant_doc_ids"),
    "answerable_not_bool": (jl(GOOD, GOOD | {"id": "x", "answerable": "yes"}), 2, "answerable"),
    "unknown_field": (jl(GOOD, GOOD | {"id": "x", "colour": "red"}), 2, "colour"),
    "unanswerable_with_docs": (jl(GOOD | {"id": "x", "answerable": False}), 1, "relevant_doc_ids"),
    "missing_id": (jl({"question": "q?"}), 1, "id"),
    "not_an_object": (jl(GOOD, "[1, 2]"), 2, None),
    "bad_tags": (jl(GOOD | {"tags": "x"}), 1, "tags"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_malformed_line_names_file_line_and_field(tmp_path: Path, case: str) -> None:
    text, line, fieldname = BAD_CASES[case]
    path = tmp_path / f"{case}.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert f"{path.name}:{line}:" in msg
    if fieldname:
        assert f"field '{fieldname}'" in msg


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(jl(GOOD, GOOD | {"id": "other"}, "", GOOD | {"question": "again?"}), encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        load_dataset(path)
    msg = str(exc.value)
    assert "dup.jsonl:4:" in msg and "field 'id'" in msg and "line 1" in msg and "'ok1'" in msg


@pytest.mark.parametrize("content", [b"", b"\n  \n\n"], ids=["empty", "blank-lines"])
def test_empty_file_has_no_questions(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match="no questions") as exc:
        load_dataset(path)
    assert "empty.jsonl" in str(exc.value)


def test_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(jl(GOOD).encode() + '{"id": "x", "question": "Caf\u00e9?"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="UTF-8") as exc:
        load_dataset(path)
    assert "latin1.jsonl:2:" in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.jsonl")


def test_unknown_doc_id_names_id_and_line(tmp_path: Path) -> None:
    path = tmp_path / "golden.jsonl"
    path.write_text(jl(GOOD, {"id": "q2", "question": "Where?", "relevant_doc_ids": ["concepts/missing.md"]}),
                    encoding="utf-8")
    known = {"concepts/a.md", "concepts/b.md"}
    with pytest.raises(DatasetError) as exc:
        load_dataset(path, known_doc_ids=known)
    msg = str(exc.value)
    assert "golden.jsonl:2:" in msg and "field 'relevant_doc_ids'" in msg
    assert "'concepts/missing.md'" in msg and "'q2'" in msg
    assert len(load_dataset(path, known_doc_ids=known | {"concepts/missing.md"})) == 2


def test_graded_relevance_and_defaults(tmp_path: Path) -> None:
    path = tmp_path / "graded.jsonl"
    path.write_text(jl({"id": 7, "question": "  Graded?  ", "relevant_doc_ids": {"a": 2, "b": 1, "c": 0}},
                       {"id": "u", "question": "Out of scope?", "answerable": False, "reference_answer": None}),
                    encoding="utf-8")
    ds = load_dataset(path)
    q, u = ds.questions
    assert (q.id, q.question, q.relevant, q.answerable) == ("7", "Graded?", {"a": 2, "b": 1}, True)
    assert (u.answerable, u.relevant, u.reference_answer) == (False, {}, "")
    assert len(ds.sha256) == 64


# ---------------------------------------------------------------- sampling

def test_sample_is_deterministic_and_zero_means_all() -> None:
    ds = load_dataset(GOLDEN)
    a, b = ds.sample(10, seed=42), ds.sample(10, seed=42)
    assert [q.id for q in a.questions] == [q.id for q in b.questions]
    assert a.sha256 == b.sha256 == ds.sha256  # the file's hash: sampled runs pair with full runs
    assert len(a) == 10 and len({q.id for q in a.questions}) == 10
    order = [q.id for q in ds.questions]
    assert [order.index(q.id) for q in a.questions] == sorted(order.index(q.id) for q in a.questions)
    assert [q.id for q in ds.sample(10, seed=43).questions] != [q.id for q in a.questions]
    assert ds.sample(0, seed=42) is ds
    assert ds.sample(len(ds) + 5, seed=1) is ds
    assert isinstance(a, Dataset)


# ---------------------------------------------------------------- BEIR import

def _tiny_beir(root: Path) -> Path:
    folder = root / "tinybeir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(jl(*({"_id": d, "title": d.upper(), "text": f"text of {d}"}
                                                for d in ("d1", "d2", "d3", "d4"))), encoding="utf-8")
    (folder / "queries.jsonl").write_text(jl({"_id": "q1", "text": "first query?"},
                                             {"_id": "q2", "text": "graded query?"},
                                             {"_id": "q3", "text": "only judged non-relevant"},
                                             {"_id": "q4", "text": "not judged at all"},
                                             {"_id": "q5", "text": "points outside the corpus"}), encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n"
        "q1\td1\t1\n"
        "q2\td2\t2\n"
        "q2\td3\t1\n"
        "q3\td4\t0\n"
        "q5\td9\t1\n", encoding="utf-8")
    return folder


def test_import_beir_writes_judged_queries_with_prefix(tmp_path: Path) -> None:
    folder = _tiny_beir(tmp_path)
    out = tmp_path / "out" / "golden.jsonl"
    res = import_beir(folder, "test", out, doc_prefix="corpus.jsonl#")
    assert res["questions"] == 3 and res["relevant_ids_not_in_corpus"] == 1 and res["output"] == str(out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2", "q5"]
    assert rows[0]["relevant_doc_ids"] == ["corpus.jsonl#d1"]  # binary qrels stay a list
    assert rows[1]["relevant_doc_ids"] == {"corpus.jsonl#d2": 2, "corpus.jsonl#d3": 1}  # graded -> dict
    assert rows[0]["tags"] == ["beir:tinybeir", "test"]
    ds = load_dataset(out)
    assert [q.id for q in ds.questions] == ["q1", "q2", "q5"]
    assert ds.questions[1].relevant == {"corpus.jsonl#d2": 2, "corpus.jsonl#d3": 1}
    assert ds.questions[0].question == "first query?" and all(q.answerable for q in ds.questions)
    assert not out.with_name(out.name + ".tmp").exists()


def test_import_beir_missing_split_lists_available(tmp_path: Path) -> None:
    folder = _tiny_beir(tmp_path)
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    with pytest.raises(DatasetError) as exc:
        import_beir(folder, "dev", tmp_path / "out.jsonl")
    msg = str(exc.value)
    assert "dev.tsv" in msg and "test, train" in msg
    assert not (tmp_path / "out.jsonl").exists()


def test_import_beir_on_scifact(tmp_path: Path) -> None:
    if not (SCIFACT / "qrels" / "test.tsv").is_file():
        pytest.skip(f"BEIR SciFact not found at {SCIFACT}")
    out = tmp_path / "scifact.jsonl"
    res = import_beir(SCIFACT, "test", out)
    assert res["questions"] == 300 and res["relevant_ids_not_in_corpus"] == 0
    corpus_ids = {json.loads(line)["_id"] for line in (SCIFACT / "corpus.jsonl").open(encoding="utf-8")}
    ds = load_dataset(out, known_doc_ids=corpus_ids)
    assert len(ds) == 300
    assert sum(len(q.relevant) for q in ds.questions) == 339
