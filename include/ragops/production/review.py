"""The review queue: production answers that went wrong, judged by a person, become golden questions.

A loaded trace waits for review when a user disliked it (``feedback < 0``) or online evaluation
found a claim of its answer unsupported by the retrieved chunks (``trace_evals.hallucinated = 1``).
A reviewer gives one verdict:

* ``answer``: the correct answer and the documents that hold it (ids of the trace's index);
* ``unanswerable``: the corpus does not answer it, so the right behaviour is a refusal;
* ``not_a_problem``: nothing to fix.

The first two append one question to ``<reviewed_dir>/<index>.jsonl`` in the golden-set format
(``ragops.evaluation.datasets``, tag ``production``, id ``prod-<trace id>``), which nightly_eval
evaluates next to the index's golden set. Every verdict is a ``trace_reviews`` row and an audit
entry. The file is written whole to a temporary file and renamed (a reader sees the old or the new
file, never half a line), under a file lock, before the row is committed: a submit that failed
half-way is repeated safely, and the same trace never adds a second line.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select

from ragops import state
from ragops.config import Settings, check_index_name
from ragops.errors import RagopsError, brief

log = logging.getLogger(__name__)
VERDICTS = ("answer", "unanswerable", "not_a_problem")
TAG = "production"
MAX_ANSWER_CHARS = 4000  # a reference answer
MAX_RELEVANT = 20  # documents named in one review
MAX_LIMIT = 500  # queue entries in one call
LOCK_TIMEOUT = 30.0


class ReviewError(RagopsError):
    """A review that cannot be recorded as given; the message names the fix."""


def question_id(trace_id: str) -> str:
    """The golden question id of a reviewed trace: ``prod-`` and the first 12 characters of a
    random (32 hex) trace id, else the whole id (an application's own ids need not be random)."""
    hexid = len(trace_id) == 32 and all(c in "0123456789abcdef" for c in trace_id.lower())
    return f"prod-{trace_id[:12] if hexid else trace_id}"


def golden_path(settings: Settings, index: str) -> Path:
    return settings.reviewed_dir / f"{check_index_name(index)}.jsonl"


def _when(ts: dt.datetime | None) -> str | None:
    if ts is None:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)).isoformat()


def _claims(detail: Any) -> list[dict[str, Any]]:
    """Unsupported claims of an online evaluation, as {claim, reason, ...} (plain strings tolerated)."""
    raw = (detail or {}).get("unsupported_claims") if isinstance(detail, dict) else None
    out = []
    for c in raw or []:
        if isinstance(c, dict) and c.get("claim"):
            out.append({**c, "claim": str(c["claim"]), "reason": str(c.get("reason") or "")})
        elif isinstance(c, str) and c:
            out.append({"claim": c, "reason": ""})
    return out


def _pending(index: str | None) -> list[Any]:
    T, E, R = state.Trace, state.TraceEval, state.TraceReview
    where = [or_(T.feedback < 0, E.hallucinated == 1), R.trace_id.is_(None)]
    if index:
        where.append(T.index_name == index)
    return where


def queue(settings: Settings, index: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Traces waiting for review, newest first: disliked by a user or with an unsupported claim,
    not reviewed yet. Each with what a reviewer needs to judge it."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ReviewError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {brief(limit)}")
    state.require_schema(settings.state_db_url)
    T, E, R = state.Trace, state.TraceEval, state.TraceReview
    q = (select(T, E.hallucinated, E.faithfulness, E.detail)
         .outerjoin(E, E.trace_id == T.trace_id).outerjoin(R, R.trace_id == T.trace_id)
         .where(*_pending(index)).order_by(T.ts.desc(), T.trace_id).limit(limit))
    out = []
    with state.session_scope(settings.state_db_url) as s:
        for t, hallucinated, faithfulness, detail in s.execute(q):
            reasons = (["negative feedback"] if t.feedback is not None and t.feedback < 0 else []) + (
                ["unsupported claim"] if hallucinated == 1 else [])
            out.append({
                "trace_id": t.trace_id, "ts": _when(t.ts), "index": t.index_name, "index_version": t.index_version,
                "index_ref": f"{t.index_name}@v{t.index_version}" if t.index_version is not None else t.index_name,
                "prompt": f"{t.prompt_name}@{t.prompt_version}" if t.prompt_name else None,
                "question": t.question, "answer": t.answer, "refused": bool(t.refused), "error": t.error,
                "contexts": [c for c in (t.chunks or []) if isinstance(c, dict)],
                "unsupported_claims": _claims(detail), "faithfulness": faithfulness,
                "feedback": t.feedback, "feedback_comment": t.feedback_comment, "reasons": reasons,
                "question_id": question_id(t.trace_id)})
    return out


def pending_count(settings: Settings, index: str | None = None) -> int:
    T, E, R = state.Trace, state.TraceEval, state.TraceReview
    with state.session_scope(settings.state_db_url) as s:
        return int(s.execute(select(func.count()).select_from(T).outerjoin(E, E.trace_id == T.trace_id)
                             .outerjoin(R, R.trace_id == T.trace_id).where(*_pending(index))).scalar_one())


def _relevant(relevant: Iterable[str] | str | None) -> list[str]:
    if relevant is None:
        return []
    if isinstance(relevant, str):  # "a.md, b.md" as typed in a form or on the command line
        relevant = relevant.replace("\n", ",").split(",")
    out: list[str] = []
    for d in relevant:
        if not isinstance(d, str):
            raise ReviewError(f"relevant documents are document id strings, got {brief(d)}")
        d = d.strip()
        if d and d not in out:
            out.append(d)
    if len(out) > MAX_RELEVANT:
        raise ReviewError(f"{len(out)} relevant documents named: at most {MAX_RELEVANT}; name the ones that hold "
                          "the answer")
    return out


def _golden_line(trace: state.Trace, verdict: str, reference: str, relevant: list[str]) -> dict[str, Any]:
    from ragops.evaluation.datasets import MAX_QUESTION_CHARS, parse_question

    line = {"id": question_id(trace.trace_id), "question": trace.question.strip(),
            "reference_answer": reference if verdict == "answer" else "",
            "relevant_doc_ids": relevant, "answerable": verdict == "answer", "tags": [TAG]}
    if len(line["question"]) > MAX_QUESTION_CHARS:
        raise ReviewError(f"the question of trace {trace.trace_id} has {len(line['question'])} characters; a golden "
                          f"question has at most {MAX_QUESTION_CHARS}: it cannot join the golden set (choose "
                          "not_a_problem, or add a shorter question to the golden set by hand)")
    parse_question(line, Path("(review)"), 1)  # the format `ragops eval validate` accepts, or an error here
    return line


def _id_of(raw: bytes) -> str | None:
    try:
        obj = json.loads(raw)
    except ValueError:  # a line that does not parse is left as it is (`ragops eval validate` names it)
        return None
    return obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None


def _write(path: Path, line: dict[str, Any]) -> bool:
    """Put ``line`` into the file: appended, or replacing the line of the same id that a submit
    which failed before its review was recorded left behind. The whole file goes to a temporary
    file renamed over it (atomic). False when the file already holds exactly this line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [raw for raw in (path.read_bytes() if path.exists() else b"").split(b"\n") if raw.strip()]
    new = json.dumps(line, ensure_ascii=False).encode("utf-8")
    same = [i for i, raw in enumerate(lines) if _id_of(raw) == line["id"]]
    if same:
        old = json.loads(lines[same[0]])
        if old == line:
            return False
        if old.get("question") != line["question"]:
            raise ReviewError(f"{path} already has a question {line['id']} that is not this trace's: rename that "
                              "question's id (the ids of reviewed questions are prod-<trace id>)")
        lines[same[0]] = new
    else:
        lines.append(new)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        fh.write(b"".join(raw + b"\n" for raw in lines))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return True


def _same(review: state.TraceReview, verdict: str, reference: str | None, relevant: list[str]) -> bool:
    return (review.verdict == verdict and (review.reference_answer or "") == (reference or "")
            and list(review.relevant or []) == relevant)


def _result(review: state.TraceReview, index: str | None, added: bool, already: bool) -> dict[str, Any]:
    return {"trace_id": review.trace_id, "verdict": review.verdict, "index": index,
            "question_id": question_id(review.trace_id) if review.golden_path else None,
            "golden_path": review.golden_path, "relevant": list(review.relevant or []),
            "reviewer": review.reviewer, "reviewed_at": _when(review.reviewed_at), "added": added,
            "already_reviewed": already}


def submit(settings: Settings, trace_id: str, verdict: str, *, reference_answer: str | None = None,
           relevant: Iterable[str] | str | None = (), reviewer: str) -> dict[str, Any]:
    """Record a reviewer's verdict on a trace; ``answer`` and ``unanswerable`` also add the trace's
    question to the index's reviewed golden set. Repeating the same submit changes nothing."""
    if verdict not in VERDICTS:
        raise ReviewError(f"verdict {brief(verdict)}: use one of {', '.join(VERDICTS)}")
    if not isinstance(trace_id, str) or not trace_id.strip() or len(trace_id) > 64:
        raise ReviewError(f"trace id {brief(trace_id)}: give the id of a trace in the review queue "
                          "(`ragops review queue`)")
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise ReviewError("a review needs the reviewer's name (who judged it goes into the audit log)")
    trace_id, reviewer = trace_id.strip(), reviewer.strip()[:256]
    if reference_answer is not None and not isinstance(reference_answer, str):
        raise ReviewError(f"the correct answer is text, got {type(reference_answer).__name__}")
    reference = (reference_answer or "").strip()
    docs = _relevant(relevant)
    if verdict == "answer":
        if not reference:
            raise ReviewError("verdict answer needs the correct answer: give it (or choose unanswerable when the "
                              "documents do not answer the question)")
        if len(reference) > MAX_ANSWER_CHARS:
            raise ReviewError(f"the correct answer has {len(reference)} characters; at most {MAX_ANSWER_CHARS}")
        if not docs:
            raise ReviewError("verdict answer needs the ids of the documents that hold the answer (at least one; "
                              "the retrieved chunks show the ids of what was found)")
    elif docs:
        raise ReviewError(f"verdict {verdict} names no documents (an unanswerable question has none to find); "
                          "leave the relevant documents empty, or choose answer")
    elif verdict == "not_a_problem" and reference:
        raise ReviewError("verdict not_a_problem records no answer: leave the correct answer empty, or choose "
                          "answer")
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        trace = s.get(state.Trace, trace_id)
        if trace is None:
            raise ReviewError(f"unknown trace {brief(trace_id)}: it is not loaded into the state store; see "
                              "`ragops review queue` for the traces waiting for review")
        index = trace.index_name
        prompt = f"{trace.prompt_name}@{trace.prompt_version}" if trace.prompt_name else None
        known_index = index is not None and index in state.known_indexes(s)
        if verdict != "not_a_problem":
            if not known_index:
                raise ReviewError(f"trace {trace_id} was answered from index {brief(index)}, which is not an index of "
                                  "this state store: its question cannot join a golden set (choose not_a_problem)")
            if docs:
                found = set(s.execute(select(state.Document.doc_id).where(
                    state.Document.index_name == index, state.Document.doc_id.in_(docs))).scalars())
                unknown = [d for d in docs if d not in found]
                if unknown:
                    examples = sorted({str(c.get("doc_id")) for c in trace.chunks or []
                                       if isinstance(c, dict) and c.get("doc_id")})[:5]
                    raise ReviewError(
                        f"document {brief(unknown[0])} is not in index {index}"
                        + (f" ({len(unknown)} unknown ids in all)" if len(unknown) > 1 else "")
                        + f": give ids of indexed documents (this trace retrieved {', '.join(examples) or 'none'}; "
                        f"`ragops search` finds others)")
    line = _golden_line(trace, verdict, reference, docs) if verdict != "not_a_problem" else None
    path = golden_path(settings, index) if line is not None else None  # type: ignore[arg-type]
    from filelock import FileLock, Timeout

    settings.reviewed_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(settings.reviewed_dir / ".review.lock"))
    try:
        lock.acquire(timeout=LOCK_TIMEOUT)
    except Timeout as exc:
        raise ReviewError(f"another review has held {lock.lock_file} for {LOCK_TIMEOUT:.0f}s; try again") from exc
    try:
        with state.session_scope(settings.state_db_url) as s:
            done = s.get(state.TraceReview, trace_id)
            if done is not None:
                if _same(done, verdict, reference or None, docs):
                    return _result(done, index, added=False, already=True)
                raise ReviewError(f"trace {trace_id} was already reviewed by {done.reviewer} at "
                                  f"{_when(done.reviewed_at)} as {done.verdict}"
                                  + (f" (question {question_id(trace_id)} in {done.golden_path})"
                                     if done.golden_path else "")
                                  + "; a review is recorded once: to change the golden question, edit that file")
        # the golden line first, then the review: a failure in between leaves the trace in the queue
        # and its line in the file, and the repeated submit finds the line and records the review
        added = _write(path, line) if line is not None and path is not None else False
        with state.session_scope(settings.state_db_url) as s:
            review = state.TraceReview(trace_id=trace_id, verdict=verdict, reference_answer=reference or None,
                                       relevant=docs, reviewer=reviewer, reviewed_at=state.utcnow(),
                                       golden_path=str(path) if path else None)
            s.add(review)
            state.audit(s, reviewer, "trace_reviewed", index, trace_id=trace_id, verdict=verdict, prompt=prompt,
                        question_id=line["id"] if line else None, golden_path=str(path) if path else None,
                        relevant=docs, reference_answer=reference[:500] or None, question=trace.question[:300])
    finally:
        lock.release()
    log.info("trace %s reviewed by %s: %s%s", trace_id, reviewer, verdict,
             f" ({'added' if added else 'already in'} {path} as {line['id']})" if line else "")
    return _result(review, index, added=added, already=False)
