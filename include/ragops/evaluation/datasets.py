"""Golden question sets (JSON Lines) and the BEIR importer.

One object a line: ``id``, ``question``, optional ``reference_answer``, optional
``relevant_doc_ids`` (list; a dict of doc id to graded relevance is accepted too, as BEIR's
qrels are graded), ``answerable`` (default true; false = the right answer is a refusal),
optional ``tags``. Every error names the file, the line and the field.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragops.errors import DatasetError, brief

log = logging.getLogger(__name__)
FIELDS = ("id", "question", "reference_answer", "relevant_doc_ids", "answerable", "tags")
MAX_QUESTION_CHARS = 4000


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    reference_answer: str = ""
    relevant: dict[str, int] = field(default_factory=dict, hash=False)  # doc id -> relevance grade (>= 1)
    answerable: bool = True
    tags: tuple[str, ...] = ()

    @property
    def relevant_doc_ids(self) -> list[str]:
        return list(self.relevant)


@dataclass(frozen=True)
class Dataset:
    path: str
    questions: tuple[Question, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.questions)

    def sample(self, n: int, seed: int) -> Dataset:
        """A seeded random sample of ``n`` questions (all of them when n is 0 or too big). The hash
        stays the file's, so runs on samples pair with full runs question by question."""
        if n <= 0 or n >= len(self.questions):
            return self
        picked = sorted(random.Random(seed).sample(range(len(self.questions)), n))
        qs = tuple(self.questions[i] for i in picked)
        return Dataset(self.path, qs, self.sha256)


def _err(path: Path, line: int, fieldname: str | None, msg: str) -> DatasetError:
    if fieldname and len(fieldname) > 80:  # an unknown field's name comes from the file
        fieldname = fieldname[:77] + "..."
    where = f"{path}:{line}" + (f": field '{fieldname}'" if fieldname else "")
    return DatasetError(f"{where}: {msg}")


def parse_question(obj: Any, path: Path, line: int) -> Question:
    if not isinstance(obj, dict):
        raise _err(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(FIELDS))
    if unknown:
        raise _err(path, line, unknown[0], f"unknown field; allowed fields are {', '.join(FIELDS)}")
    qid = obj.get("id")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip():
        raise _err(path, line, "id", "missing or empty; every question needs a unique string id")
    question = obj.get("question")
    if not isinstance(question, str) or not question.strip():
        raise _err(path, line, "question", "missing or empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise _err(path, line, "question", f"longer than {MAX_QUESTION_CHARS} characters")
    ref = obj.get("reference_answer", "")
    if ref is None:
        ref = ""
    if not isinstance(ref, str):
        raise _err(path, line, "reference_answer", f"expected a string, got {type(ref).__name__}")
    rel_raw = obj.get("relevant_doc_ids", [])
    relevant: dict[str, int] = {}
    if rel_raw is None:
        rel_raw = []
    if isinstance(rel_raw, list):
        for d in rel_raw:
            if not isinstance(d, str) or not d:
                raise _err(path, line, "relevant_doc_ids", f"expected a list of document id strings, found {brief(d)}")
            relevant[d] = 1
    elif isinstance(rel_raw, dict):
        for d, g in rel_raw.items():
            if isinstance(g, bool) or not isinstance(g, int) or g < 0:
                raise _err(path, line, "relevant_doc_ids", f"grade of {brief(d)} must be a non-negative integer, got {brief(g)}")
            if g > 0:
                relevant[d] = g
    else:
        raise _err(path, line, "relevant_doc_ids", f"expected a list of document ids, got {type(rel_raw).__name__}")
    answerable = obj.get("answerable", True)
    if not isinstance(answerable, bool):
        raise _err(path, line, "answerable", f"expected true or false, got {brief(answerable)}")
    if not answerable and relevant:
        raise _err(path, line, "relevant_doc_ids", "an unanswerable question (answerable: false) cannot have "
                   "relevant documents; remove them or set answerable to true")
    tags = obj.get("tags", [])
    if tags is None:
        tags = []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise _err(path, line, "tags", f"expected a list of strings, got {brief(tags)}")
    return Question(id=str(qid).strip(), question=question.strip(), reference_answer=ref.strip(), relevant=relevant,
                    answerable=answerable, tags=tuple(tags))


def load_dataset(path: str | Path, known_doc_ids: set[str] | None = None) -> Dataset:
    """Read and validate a golden set. ``known_doc_ids``: refuse relevant ids not in the index."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {path} does not exist; check the path (on the command line a relative path "
                           "is relative to the current directory, in the settings file and DAG Params to the project "
                           "root) or start from include/eval/golden/docs.jsonl") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read dataset: {exc}") from exc
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _err(path, n, None, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            raise _err(path, n, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except RecursionError as exc:
            raise _err(path, n, None, "invalid JSON: nested too deeply; a question is a flat JSON object") from exc
        except ValueError as exc:  # e.g. an integer of more than 4,300 digits
            raise _err(path, n, None, f"invalid JSON ({exc})") from exc
        q = parse_question(obj, path, n)
        if q.id in seen:
            raise _err(path, n, "id", f"duplicate id {brief(q.id)} (first used on line {seen[q.id]})")
        seen[q.id] = n
        questions.append(q)
    if not questions:
        raise DatasetError(f"dataset {path} has no questions; add one JSON object a line")
    if known_doc_ids is not None:
        check_doc_ids(questions, known_doc_ids, path, seen)
    return Dataset(str(path), tuple(questions), hashlib.sha256(data).hexdigest())


def combine(base: Dataset, extra: Dataset, known_doc_ids: set[str] | None = None) -> tuple[Dataset, dict[str, Any]]:
    """``base`` plus the questions of ``extra`` (the reviewed production questions of an index).

    An ``extra`` question whose id ``base`` already uses is left out (the golden set wins), and so,
    when ``known_doc_ids`` is given, is one that names a document no longer in the index (deleted
    since it was reviewed): neither stops a run. The path names both files and the hash covers both
    and what was left out, so runs on other questions never share it."""
    ids = {q.id for q in base.questions}
    clash = [q.id for q in extra.questions if q.id in ids]
    gone = [q.id for q in extra.questions if q.id not in ids and known_doc_ids is not None
            and any(d not in known_doc_ids for d in q.relevant)]
    keep = tuple(q for q in extra.questions if q.id not in ids and q.id not in gone)
    if clash:
        log.warning("%d question(s) of %s left out: their ids are used in %s (%s)", len(clash), extra.path,
                    base.path, ", ".join(clash[:10]))
    if gone:
        log.warning("%d question(s) of %s left out: a relevant document is no longer in the index (%s)",
                    len(gone), extra.path, ", ".join(gone[:10]))
    key = "\n".join([base.sha256, extra.sha256, *sorted(clash + gone)])
    return (Dataset(f"{base.path} + {extra.path}", base.questions + keep, hashlib.sha256(key.encode()).hexdigest()),
            {"path": extra.path, "sha256": extra.sha256, "questions": len(keep), "id_clashes": clash[:50],
             "unknown_doc_left_out": gone[:50]})


def check_doc_ids(questions: list[Question] | tuple[Question, ...], known: set[str], path: Path | str,
                  lines: dict[str, int] | None = None) -> None:
    bad = [(q, d) for q in questions for d in q.relevant if d not in known]
    if bad:
        q, d = bad[0]
        line = (lines or {}).get(q.id, "?")
        err = UnknownDocsError(
            f"{path}:{line}: field 'relevant_doc_ids': document {brief(d)} of question {brief(q.id)} is not in the index "
            f"({len(bad)} unknown id(s) in all); fix the id, or ingest the document first. Ids look like "
            f"{', '.join(sorted(known)[:3]) or '(index is empty)'}. To evaluate anyway, pass --allow-unknown-docs "
            "(eval.allow_unknown_doc_ids)"
        )
        err.missing = [(q.id, d, (lines or {}).get(q.id)) for q, d in bad]
        err.path = str(path)
        raise err


class UnknownDocsError(DatasetError):
    """Relevant documents missing from the index; ``missing`` holds (question id, doc id, line) so a
    caller that can read the state store says why each one is missing (ragops.retrieval.explain_missing_docs)."""

    missing: list[tuple[str, str, int | None]]
    path: str


def import_beir(folder: str | Path, split: str, out: str | Path, doc_prefix: str = "",
                min_grade: int = 1) -> dict[str, Any]:
    """BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) -> golden JSONL.

    Only queries with a relevance judgement in the split are written. ``doc_prefix`` maps BEIR
    corpus ids onto index doc ids (records in a directory source get ``<file>#``)."""
    folder = Path(folder)
    qrels_path, queries_path = folder / "qrels" / f"{split}.tsv", folder / "queries.jsonl"
    for p in (qrels_path, queries_path):
        if not p.exists():
            raise DatasetError(f"{p} does not exist: a BEIR folder has queries.jsonl and qrels/<split>.tsv "
                               f"(splits here: {', '.join(sorted(x.stem for x in (folder / 'qrels').glob('*.tsv'))) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for n, row in enumerate(reader, start=1):
            if not row or (n == 1 and row[0] in ("query-id", "query_id", "qid")):
                continue
            if len(row) < 3:
                raise DatasetError(f"{qrels_path}:{n}: expected query-id, corpus-id, score separated by tabs")
            try:
                grade = int(float(row[2]))
            except ValueError as exc:
                raise DatasetError(f"{qrels_path}:{n}: score {row[2]!r} is not a number") from exc
            if grade >= min_grade:
                qrels.setdefault(row[0], {})[f"{doc_prefix}{row[1]}"] = grade
    corpus_ids: set[str] | None = None
    if (folder / "corpus.jsonl").exists():
        corpus_ids = set()
        with (folder / "corpus.jsonl").open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    corpus_ids.add(f"{doc_prefix}{json.loads(line)['_id']}")
    written = missing_docs = 0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with queries_path.open(encoding="utf-8") as fh, tmp.open("w", encoding="utf-8") as dst:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)
                qid, text = str(q["_id"]), q["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{queries_path}:{n}: expected {{\"_id\": ..., \"text\": ...}} ({exc})") from exc
            rel = qrels.get(qid)
            if not rel:
                continue
            if corpus_ids is not None:
                missing_docs += sum(1 for d in rel if d not in corpus_ids)
            graded = any(g != 1 for g in rel.values())
            dst.write(json.dumps({"id": qid, "question": text, "relevant_doc_ids": rel if graded else list(rel),
                                  "answerable": True, "tags": [f"beir:{folder.name}", split]},
                                 ensure_ascii=False) + "\n")
            written += 1
    if not written:
        tmp.unlink()
        raise DatasetError(f"no query in {queries_path} has a judgement in {qrels_path}; nothing written")
    tmp.replace(out)
    log.info("wrote %d questions to %s", written, out)
    return {"questions": written, "output": str(out), "qrels_queries": len(qrels),
            "relevant_ids_not_in_corpus": missing_docs}
