"""Loading trace files into the state store: incremental, idempotent, and every bad line named.

Each test writes real trace files (ragops.tracing, or raw lines where the input must be broken)
and loads them into a real SQLite state store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ragops import state
from ragops.drift import querylog
from ragops.production import tracing
from ragops.production.aggregate import bucket_of, bucket_value, figures, percentile
from ragops.production.load import load
from ragops.registry import sync


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)  # per call: the suite runs long enough for a module-level time to go stale


def rec(settings, question: str = "how do I roll back?", **kw) -> str:
    kw.setdefault("answer", "Run ragops index rollback [1].")
    answer = kw.pop("answer")
    kw.setdefault("index", "docs")
    kw.setdefault("model", "extractive")
    kw.setdefault("latency_ms", 120.0)
    return tracing.record(question, answer, settings=settings, **kw)


def trace_files(settings) -> list[Path]:
    return sorted(Path(settings.traces_uri).rglob("*.jsonl"))


def count(settings, table) -> int:
    with state.session_scope(settings.state_db_url) as s:
        return s.execute(select(func.count()).select_from(table)).scalar_one()


def test_a_file_read_twice_counts_each_trace_once_and_new_lines_are_picked_up(settings) -> None:
    ids = [rec(settings, f"question {i}") for i in range(5)]
    r1 = load(settings)
    assert r1.traces == 5 and r1.duplicates == 0 and not r1.skipped
    r2 = load(settings)  # nothing new: the watermark is at the end
    assert r2.lines == 0 and r2.traces == 0
    ids.append(rec(settings, "question 5"))
    r3 = load(settings)
    assert r3.lines == 1 and r3.traces == 1
    # the watermark is lost (e.g. restored database): everything is read again, nothing counted twice
    with state.session_scope(settings.state_db_url) as s:
        s.query(state.TraceSource).delete()
    r4 = load(settings)
    assert r4.traces == 0 and r4.duplicates == 6
    assert count(settings, state.Trace) == 6
    with state.session_scope(settings.state_db_url) as s:
        assert set(s.execute(select(state.Trace.trace_id)).scalars()) == set(ids)


def test_a_partial_last_line_waits_for_its_end(settings) -> None:
    rec(settings, "complete one")
    path = trace_files(settings)[0]
    row = tracing.span_record(question="written in two parts", answer="yes [1]", index="docs", model="extractive")
    line = json.dumps(row) + "\n"
    with path.open("a") as fh:
        fh.write(line[:40])  # the writer was interrupted mid-line
    r1 = load(settings)
    assert r1.traces == 1 and not r1.skipped  # the fragment is neither loaded nor counted as bad
    with path.open("a") as fh:
        fh.write(line[40:])
    r2 = load(settings)
    assert r2.traces == 1 and not r2.skipped
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.Trace, row["trace_id"]).question == "written in two parts"


def test_feedback_before_its_trace_and_a_late_trace_are_joined(settings) -> None:
    tid = tracing.new_trace_id()
    tracing.feedback(tid, "down", "it invented a flag", settings=settings)
    r1 = load(settings)
    assert r1.feedback == 1 and r1.traces == 0
    # the trace arrives late (written an hour ago, loaded now) in another file
    late = tracing.span_record(question="late one", answer="use --force [1]", trace_id=tid, index="docs",
                               model="extractive", timestamp=now() - dt.timedelta(hours=1))
    extra = Path(settings.traces_uri) / "other-host" / "app.jsonl"
    extra.parent.mkdir(parents=True)
    extra.write_text(json.dumps(late) + "\n")
    r2 = load(settings)
    assert r2.traces == 1
    with state.session_scope(settings.state_db_url) as s:
        t = s.get(state.Trace, tid)
        assert t.feedback == -1.0 and t.feedback_comment == "it invented a flag"
    # a later verdict wins; the earlier feedback row is kept
    tracing.feedback(tid, "up", settings=settings, timestamp=now() + dt.timedelta(seconds=5))
    load(settings)
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.Trace, tid).feedback == 1.0
    assert count(settings, state.TraceFeedback) == 2


def test_bad_lines_are_skipped_with_named_reasons_and_nothing_loaded_is_lost(settings) -> None:
    sync(settings)  # registers rag_answer v1 (and the other bundled prompts)
    good = rec(settings, "good one", prompt="rag_answer", prompt_version=1)
    assert load(settings).traces == 1
    f = Path(settings.traces_uri) / "bad" / "bad.jsonl"
    f.parent.mkdir(parents=True)

    def line(**over):
        row = tracing.span_record(question="q", answer="a", index="docs", model="extractive")
        attrs = over.pop("attributes", {})
        row["attributes"].update(attrs)
        row.update(over)
        return json.dumps(row)

    lines = [
        "not json at all",
        "[1, 2, 3]",
        line(attributes={"gen_ai.usage.input_tokens": -5}),
        line(answer="x" * (settings.production.max_answer_chars + 1)),
        line(timestamp=(now() + dt.timedelta(days=30)).isoformat()),
        line(attributes={"ragops.prompt.name": "rag_answer", "ragops.prompt.version": 99}),
        line(query=""),
        line(timestamp="yesterday"),
        json.dumps({"kind": "feedback", "trace_id": good, "feedback_id": "f1", "timestamp": now().isoformat(),
                    "score": "very bad"}),
        line(question_extra=1, trace_id=None),
        line(),  # the one good line in the file
    ]
    f.write_text("\n".join(lines) + "\n")
    r = load(settings)
    assert r.traces == 1
    assert r.skipped == {"not JSON": 1, "not a JSON object": 1, "negative token count": 1, "answer too long": 1,
                         "timestamp in the future": 1, "unknown prompt version": 1, "question missing": 1,
                         "timestamp not a time": 1, "feedback not a score": 1, "trace_id missing": 1}
    assert all(str(f) in ex[0] for ex in r.examples.values())
    assert count(settings, state.Trace) == 2  # the good trace of before is still there
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.Trace, good).question == "good one"
        src = s.execute(select(state.TraceSource).where(state.TraceSource.path.like("%bad.jsonl"))).scalar_one()
        assert src.skipped == 10 and src.lines == 11
    assert load(settings).lines == 0  # skipped lines are not re-read (and re-counted) by the next load


def test_old_query_log_files_load_and_keep_working_for_drift(settings) -> None:
    querylog.append(settings, [{"query": "old style question", "feedback": "down", "answer": "old answer"},
                               {"query": "another", "index": "docs"}])
    rec(settings, "new style question")
    tracing.feedback(rec(settings, "liked"), "up", settings=settings)
    r = load(settings)
    assert r.traces == 4 and r.feedback == 1
    assert load(settings).traces == 0
    with state.session_scope(settings.state_db_url) as s:
        old = s.execute(select(state.Trace).where(state.Trace.question == "old style question")).scalar_one()
        assert old.trace_id.startswith("log-") and old.feedback == -1.0 and old.answer == "old answer"
    # drift reads the query log AND the traces, with trace feedback joined
    got = querylog.read(settings, now() - dt.timedelta(hours=1), now() + dt.timedelta(minutes=1))
    texts = {q.text: q.feedback for q in got.queries}
    assert texts == {"old style question": -1.0, "another": None, "new style question": None, "liked": 1.0}
    assert got.invalid == 0


def test_figures_group_by_version_with_percentiles_cost_and_feedback(settings) -> None:
    from ragops.config import EvalSettings

    s = settings.replace(eval=EvalSettings(prices={"gpt-x": {"input_per_1m": 1.0, "output_per_1m": 2.0}}))
    for i in range(20):
        rec(s, f"a{i}", model="gpt-x", served_model="gpt-x-2026", tokens_in=1000, tokens_out=500,
            latency_ms=100.0 + i * 10, prompt="p", prompt_version=1)
    for i in range(10):
        tid = rec(s, f"b{i}", model="mystery-model", tokens_in=100, tokens_out=10, latency_ms=2000.0,
                  prompt="p", prompt_version=2, refused=i < 3)
        if i < 4:
            tracing.feedback(tid, -1, settings=s)
    # prompt p is not registered: the loader must skip those as unknown prompt versions ...
    r = load(s)
    assert r.skipped["unknown prompt version"] == 30
    # ... so register p@1 and p@2 the way the registry would, and load again from the start
    with state.session_scope(s.state_db_url) as db:
        for v in (1, 2):
            db.add(state.PromptVersion(name="p", version=v, content_hash=f"h{v}", path=f"p/v{v}.yaml",
                                       registered_by="test"))
        db.query(state.TraceSource).delete()
    r = load(s)
    assert r.traces == 30 and r.duplicates == 4  # the feedback rows were stored by the first load
    rows = {(x["prompt"], x["prompt_version"]): x for x in figures(s, now() - dt.timedelta(hours=1),
                                                                    by=("prompt", "prompt_version"))}
    a, b = rows[("p", 1)], rows[("p", 2)]
    assert a["requests"] == 20 and a["cost_known"] and a["cost_usd"] == pytest.approx(20 * (0.001 + 0.001))
    assert 130 <= a["latency_p50_ms"] <= 215 and 250 <= a["latency_p95_ms"] <= 330  # exact: 195 and 290
    assert b["cost_known"] is False and b["unpriced_requests"] == 10 and b["cost_usd"] == 0.0
    assert b["refusal_rate"] == 0.3 and b["negative_feedback_rate"] == 1.0 and b["feedback"] == 4


def test_latency_buckets_estimate_percentiles_within_ten_percent() -> None:
    for ms in (0.5, 3.0, 47.0, 812.0, 15000.0, 3.6e6):
        b = bucket_of(ms)
        assert abs(bucket_value(b) - ms) / ms <= 0.1 or ms <= 1.0
    hist: dict[int, int] = {}
    values = [10.0 * 1.05 ** i for i in range(200)]
    for v in values:
        hist[bucket_of(v)] = hist.get(bucket_of(v), 0) + 1
    exact = sorted(values)[int(0.95 * len(values)) - 1]
    assert abs(percentile(hist, 0.95) - exact) / exact <= 0.12


def test_traces_load_and_aggregate_in_postgresql(settings, postgres_url: str) -> None:
    """The production topology keeps the state store, traces included, in PostgreSQL."""
    pg = settings.replace(state_db_url=postgres_url)
    state.upgrade(postgres_url)
    ids = [rec(pg, f"pg question {i}", latency_ms=100.0 * (i + 1)) for i in range(12)]
    tracing.feedback(ids[0], "down", settings=pg)
    f = Path(pg.traces_uri) / "bad.jsonl"
    f.write_text("not json\n")
    r = load(pg)
    assert r.traces == 12 and r.feedback == 1 and r.skipped == {"not JSON": 1}
    with state.session_scope(pg.state_db_url) as s:
        s.query(state.TraceSource).delete()  # read everything again: still nothing counted twice
    assert load(pg).traces == 0
    [row] = figures(pg, now() - dt.timedelta(hours=1), by=("index",))
    assert row["requests"] == 12 and row["negative_feedback"] == 1 and row["latency_p95_ms"] >= 1000
    days = figures(pg, now() - dt.timedelta(days=2), by=("hour",), day=True)
    assert sum(d["requests"] for d in days) == 12 and all(len(d["hour"]) == 10 for d in days)  # YYYY-MM-DD


def test_parquet_query_logs_with_timestamp_columns_load(settings) -> None:
    """A Parquet query log's timestamp column arrives as datetimes: read as the query log reads it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = Path(settings.query_log_uri)
    folder.mkdir(parents=True)
    at = now() - dt.timedelta(minutes=5)
    pq.write_table(pa.table({"timestamp": [at, at], "query": ["from parquet", "again"], "feedback": [-1, None]}),
                   folder / "log.parquet")
    r = load(settings)
    assert r.traces == 2 and not r.skipped
    assert load(settings).traces == 0  # a whole file is loaded once
    with state.session_scope(settings.state_db_url) as s:
        t = s.execute(select(state.Trace).where(state.Trace.question == "from parquet")).scalar_one()
        assert t.feedback == -1.0


def test_feedback_scores_read_like_the_query_log(settings) -> None:
    tid = tracing.new_trace_id()
    for score in ("up", "down", True, -0.5, "+1"):
        tracing.feedback(tid, score, settings=settings)
    for bad in ("meh", "", float("nan"), None):
        with pytest.raises(tracing.TracingError, match="up or down"):
            tracing.feedback(tid, bad, settings=settings)
    assert load(settings).feedback == 5
