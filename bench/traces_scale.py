#!/usr/bin/env python
"""Production traces at scale: load time and memory of the trace loader and the hourly/daily figures.

Synthetic traffic, written with ``ragops.production.tracing.span_record`` in the layout the
application writes (``<traces>/<YYYY-MM-DD>/<writer>.jsonl``) under a temporary data directory:
several prompt versions (rag_answer 1-3, rag_local 1-2, registered in the state store as the loader
requires), models with a price (gpt-4o-mini, added to ``eval.prices``; extractive; the free local
model) and one without (llama-3.1-70b: unknown cost), lognormal latencies, refusals, errors, cache
hits, users and sessions, feedback lines (most after their trace in the same segment, some one
segment later, some before their trace), a few duplicate lines and a few malformed ones of every
kind the loader skips.

The traces arrive in segments ending at the checkpoints (default 100k, 300k and ``--traces``).
After each segment: ``ragops.production.load.load`` (incremental: it reads only the new files),
then ``ragops.production.aggregate.figures`` by day x prompt x model and by hour over every trace so
far. Each step's time and its own peak RSS (VmHWM reset through ``/proc/self/clear_refs`` before
it; that also resets ``ru_maxrss``, so the run's peak is the largest step peak) show whether memory
stays flat in the number of traces. The loader's counts are checked against what was written (new traces, feedback,
duplicates, skipped by reason).

``--db URL`` runs against PostgreSQL instead of the SQLite file: the script creates a schema of its
own in that database (``ragops_bench_<hex>``, through ``search_path``), and drops it at the end;
nothing else in the database is touched. Peak RSS is then the client's only (not the server's).

Usage::

    .venv/bin/python bench/traces_scale.py                      # 1,000,000 traces, SQLite
    .venv/bin/python bench/traces_scale.py --traces 100000 \\
        --db postgresql+psycopg2://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import re
import sys
import time
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
log = logging.getLogger("bench.traces_scale")

PROMPTS = [("rag_answer", 1, 0.10), ("rag_answer", 2, 0.45), ("rag_answer", 3, 0.15), ("rag_local", 1, 0.10),
           ("rag_local", 2, 0.20)]
# (requested, served, share, generation latency median ms): priced, free, local, unknown price
MODELS = [("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 0.45, 900.0), ("extractive", "extractive", 0.30, 40.0),
          ("smollm2-135m-instruct-q4_1", "smollm2-135m-instruct-q4_1", 0.15, 2500.0),
          ("llama-3.1-70b", "llama-3.1-70b-instruct", 0.10, 1400.0)]
PRICE = {"input_per_1m": 0.15, "output_per_1m": 0.60}
DAYS = 7
WRITERS = 2
SHARE = {"refused": 0.06, "error": 0.01, "cache_hit": 0.08, "feedback": 0.03, "duplicate": 0.0002,
         "malformed": 0.0005}
BAD_KINDS = ["not JSON", "not a JSON object", "trace_id missing", "negative token count", "timestamp in the future",
             "unknown prompt version", "question missing", "timestamp not a time"]
TOPICS = ["the semantic cache", "chunk_tokens", "a Chroma server", "the state store", "prompt promotion",
          "drift checks", "the nightly evaluation", "quarantined documents", "a blue/green rebuild",
          "hybrid retrieval", "the LLMOps page", "alert e-mails", "record files", "the writer lock"]
ASKS = ["How do I configure {}?", "What is {} for?", "Why does {} fail on index {}?", "Where can I see {} for {}?",
        "Can I turn off {} in version {}?", "What happens to {} after a rebuild?"]


# ----------------------------------------------------------------------------------------------
# memory


def reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next step's peak is its own (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@contextmanager
def measured(trace_python: bool) -> Iterator[dict[str, Any]]:
    """Wall seconds, the step's own peak RSS (MB) and, with ``trace_python``, tracemalloc's peak."""
    out: dict[str, Any] = {}
    own = reset_peak()
    if trace_python:
        tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = round(time.perf_counter() - t0, 3)
        hwm = H.vm_hwm_kib()
        out["peak_rss_mb" if own else "process_peak_rss_mb"] = round(hwm * 1024 / H.MB, 1) if hwm else None
        out["rss_mb"] = round((H.proc_status_kib("VmRSS") or 0) * 1024 / H.MB, 1)
        if trace_python:
            out["python_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / H.MB, 1)
            tracemalloc.stop()


# ----------------------------------------------------------------------------------------------
# synthetic traffic


class Traffic:
    """Writes segments of trace lines and remembers what the loader must find in them."""

    def __init__(self, root: Path, seed: int, now: dt.datetime, context_chars: int) -> None:
        import numpy as np

        self.np = np
        self.rng = np.random.default_rng(seed)
        self.root = root
        self.now = now
        self.context_chars = context_chars
        self.questions = [ask.format(topic, n, n) for ask in ASKS for topic in TOPICS for n in range(1, 6)]
        self.pending_late: list[dict[str, Any]] = []  # feedback written with the next segment
        self.early: list[str] = []  # trace ids whose feedback is written one segment before the trace
        self.expected: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.segment = 0
        self.bytes = 0

    def _ts(self, n: int) -> list[dt.datetime]:
        secs = self.rng.uniform(60, DAYS * 86400, n)
        return [self.now - dt.timedelta(seconds=float(s)) for s in secs]

    def _choice(self, options: list[tuple[Any, ...]], n: int) -> Any:
        p = self.np.array([o[2] for o in options])
        return self.rng.choice(len(options), size=n, p=p / p.sum())

    def _chunks(self) -> list[dict[str, Any]]:
        out = []
        for j in range(5):
            doc = int(self.rng.integers(0, 400))
            c = {"id": f"doc{doc}.md#{j}-{uuid.uuid4().hex[:8]}", "doc_id": f"doc{doc}.md",
                 "score": round(float(self.rng.uniform(0.3, 0.9)), 4), "n": j + 1, "title": f"Page {doc}"}
            if self.context_chars:
                c["text"] = ("Passage text about the ragops user guide. " * (self.context_chars // 42 + 1))[
                    :self.context_chars]
            out.append(c)
        return out

    def _trace(self, ts: dt.datetime, prompt: tuple[str, int, float], model: tuple[str, str, float, float],
               u: float) -> dict[str, Any]:
        from ragops.production.tracing import span_record

        rng = self.rng
        req, served, _share, gen_median = model
        error = u < SHARE["error"]
        hit = not error and u < SHARE["error"] + SHARE["cache_hit"]
        refused = not error and not hit and rng.random() < SHARE["refused"] / (1 - SHARE["error"] - SHARE["cache_hit"])
        tin = int(rng.lognormal(math.log(900), 0.35))
        tout = int(rng.lognormal(math.log(110), 0.5))
        retrieval = float(rng.lognormal(math.log(25), 0.5))
        generation = float(rng.lognormal(math.log(gen_median), 0.6))
        cost = None
        if req == "gpt-4o-mini" and rng.random() < 0.5:  # the app priced it; else the loader does
            cost = round((tin * PRICE["input_per_1m"] + tout * PRICE["output_per_1m"]) / 1e6, 9)
        q = self.questions[int(rng.integers(0, len(self.questions)))]
        common = {"question": q, "timestamp": ts, "index": "docs", "index_version": 3 + int(rng.random() < 0.3),
                  "prompt": prompt[0], "prompt_version": prompt[1], "model": req, "retrieval_mode": "hybrid",
                  "user_id": f"user{int(rng.integers(0, 5000))}", "session_id": f"s{int(rng.integers(0, 20000))}"}
        if error:
            return span_record(**common, answer=None, served_model=None, chunks=self._chunks(),
                               tokens_in=0, tokens_out=0, retrieval_ms=retrieval, generation_ms=generation,
                               latency_ms=retrieval + generation, error="LlmError: the endpoint timed out after 30 s")
        if hit:
            total = float(rng.lognormal(math.log(15), 0.4))
            return span_record(**common, answer="Set production.cache.enabled to true [1].", served_model=served,
                               chunks=self._chunks(), tokens_in=0, tokens_out=0, retrieval_ms=0.0,
                               generation_ms=0.0, latency_ms=total, cost_usd=0.0, cache_hit=True,
                               saved_tokens=tin + tout, saved_usd=cost)
        answer = ("I don't know: the ragops documentation I can search does not answer this." if refused else
                  "Point ragops at the server with RAGOPS_CHROMA_URL [1]. The DAGs use the chroma_default "
                  "Connection when no URL is set [2].")
        return span_record(**common, answer=answer, served_model=served, chunks=self._chunks(), tokens_in=tin,
                           tokens_out=tout, retrieval_ms=retrieval, generation_ms=generation,
                           latency_ms=retrieval + generation + float(rng.uniform(1, 5)), refused=refused,
                           cost_usd=cost)

    def _feedback(self, trace_id: str, ts: dt.datetime) -> dict[str, Any]:
        at = min(ts + dt.timedelta(seconds=float(self.rng.uniform(5, 600))), self.now)
        return {"kind": "feedback", "feedback_id": uuid.uuid4().hex, "trace_id": trace_id,
                "timestamp": at.isoformat(), "score": 1.0 if self.rng.random() < 0.7 else -1.0,
                "comment": None if self.rng.random() < 0.8 else "the answer cites the wrong page"}

    def _bad(self, kind: str, ts: dt.datetime) -> str:
        good = {"trace_id": uuid.uuid4().hex, "span_id": uuid.uuid4().hex[:16], "name": "ragops.answer",
                "timestamp": ts.isoformat(), "query": "How do I configure the state store?", "index": "docs",
                "answer": "Use RAGOPS_STATE_DB_URL [1].",
                "attributes": {"gen_ai.request.model": "extractive", "ragops.prompt.name": "rag_answer",
                               "ragops.prompt.version": 2, "gen_ai.usage.input_tokens": 10}}
        if kind == "not JSON":
            return json.dumps(good)[:57]  # a line cut by a crashed writer, then a new line after it
        if kind == "not a JSON object":
            return json.dumps([good["trace_id"], good["query"]])
        if kind == "trace_id missing":
            good["trace_id"] = "x"
        elif kind == "negative token count":
            good["attributes"]["gen_ai.usage.input_tokens"] = -5
        elif kind == "timestamp in the future":
            good["timestamp"] = (self.now + dt.timedelta(days=2)).isoformat()
        elif kind == "unknown prompt version":
            good["attributes"]["ragops.prompt.version"] = 9
        elif kind == "question missing":
            good["query"] = ""
        elif kind == "timestamp not a time":
            good["timestamp"] = "yesterday"
        return json.dumps(good)

    def write_segment(self, n: int) -> dict[str, Any]:
        """``n`` traces (plus feedback, duplicates and bad lines) as new files of this segment."""
        self.segment += 1
        files: dict[tuple[str, int], Any] = {}

        def out(day: str, line: str) -> None:
            w = int(self.rng.integers(0, WRITERS))
            fh = files.get((day, w))
            if fh is None:
                path = self.root / day / f"bench-s{self.segment:02d}-w{w}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                fh = files[(day, w)] = path.open("w", encoding="utf-8")
            fh.write(line + "\n")
            self.bytes += len(line) + 1

        def day_of(ts: dt.datetime) -> str:
            return f"{ts:%Y-%m-%d}"

        for f in self.pending_late:  # last segment's late feedback, for traces already loaded
            out(day_of(dt.datetime.fromisoformat(f["timestamp"])), json.dumps(f))
            self.expected["feedback"] += 1
        self.pending_late = []
        early_now = self.early
        self.early = []
        step = 10_000
        for start in range(0, n, step):
            k = min(step, n - start)
            ts = self._ts(k)
            prompts, models, u = self._choice(PROMPTS, k), self._choice(MODELS, k), self.rng.random(k)
            fb = self.rng.random(k)
            for j in range(k):
                row = self._trace(ts[j], PROMPTS[int(prompts[j])], MODELS[int(models[j])], float(u[j]))
                if early_now and fb[j] < SHARE["feedback"]:  # its feedback came with the previous segment
                    row["trace_id"] = early_now.pop()
                line = json.dumps(row, ensure_ascii=False, default=str)
                out(day_of(ts[j]), line)
                self.expected["traces"] += 1
                if self.rng.random() < SHARE["duplicate"]:  # a writer that retried its write
                    out(day_of(ts[j]), line)
                    self.expected["duplicates"] += 1
                if fb[j] < SHARE["feedback"]:
                    f = self._feedback(row["trace_id"], ts[j])
                    r = self.rng.random()
                    if r < 0.25:
                        self.pending_late.append(f)
                        continue
                    if r < 0.30:  # written now for a trace that only comes with the next segment
                        f["trace_id"] = uuid.uuid4().hex
                        self.early.append(f["trace_id"])
                    out(day_of(ts[j]), json.dumps(f))
                    self.expected["feedback"] += 1
        bad = max(1, round(n * SHARE["malformed"]))
        for b in range(bad):
            kind = BAD_KINDS[b % len(BAD_KINDS)]
            ts = self._ts(1)[0]
            out(day_of(ts), self._bad(kind, ts))
            self.skipped[kind] += 1
        for fh in files.values():
            fh.close()
        return {"traces": n, "files": len(files), "malformed": bad}


# ----------------------------------------------------------------------------------------------
# databases


@contextmanager
def database(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[Any, str]]:
    """Settings on the SQLite file of the temporary data dir, or on a schema of our own in
    ``--db`` (dropped at the end); the backend's name."""
    if args.db is None:
        yield H.open_settings(tmp / "data"), "sqlite"
        return
    from sqlalchemy import create_engine, make_url, text

    from ragops import state

    schema = f"ragops_bench_{uuid.uuid4().hex[:10]}"
    base = make_url(args.db)
    if base.get_backend_name() != "postgresql":
        raise SystemExit(f"--db must be a PostgreSQL URL, got {base.get_backend_name()}")
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    log.info("PostgreSQL: schema %s in %s", schema, base.render_as_string(hide_password=True))
    try:
        settings = H.open_settings(tmp / "data").replace(state_db_url=url)
        state.upgrade(url)
        yield settings, "postgresql"
    finally:
        state.get_engine(url).dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
        log.info("PostgreSQL: schema %s dropped", schema)


def register_prompts(settings: Any) -> None:
    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        for name, version, _ in PROMPTS:
            s.add(state.PromptVersion(name=name, version=version, content_hash=f"{name}{version}".ljust(64, "0"),
                                      path=f"bench/{name}/v{version}.yaml", registered_by="bench"))


def db_facts(settings: Any, backend: str) -> dict[str, Any]:
    from sqlalchemy import func, select, text

    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        out: dict[str, Any] = {"traces": s.execute(select(func.count()).select_from(state.Trace)).scalar_one(),
                               "feedback_rows": s.execute(select(func.count())
                                                          .select_from(state.TraceFeedback)).scalar_one(),
                               "traces_with_feedback": s.execute(select(func.count()).select_from(state.Trace)
                                                                 .where(state.Trace.feedback.is_not(None)))
                               .scalar_one()}
        if backend == "postgresql":
            out["db_mb"] = round(s.execute(text("SELECT pg_total_relation_size('traces') + "
                                                "pg_total_relation_size('trace_feedback')")).scalar_one() / H.MB, 1)
    if backend == "sqlite":
        path = Path(settings.state_db_url.removeprefix("sqlite:///"))
        out["db_mb"] = round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / H.MB, 1)
    return out


def query_plan(settings: Any, backend: str, now: dt.datetime) -> dict[str, Any]:
    """How the database finds the traces of the last hour with the filter ``figures`` uses
    (``traces.ts >= since``; the table's indexes are on ``hour`` and on prompt, version, ts), and
    with ``hour >= since`` cut to the hour added (what ``ix_traces_hour`` can serve): plan and time."""
    from sqlalchemy import text

    from ragops import state

    since = now - dt.timedelta(hours=1)
    params = {"since": since, "since_hour": since.replace(minute=0, second=0, microsecond=0)}
    if backend == "sqlite":  # stored as naive UTC text
        params = {k: v.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds") for k, v in params.items()}
    out: dict[str, Any] = {}
    for name, where in (("ts only (as figures filters)", "ts >= :since"),
                        ("hour and ts", "hour >= :since_hour AND ts >= :since")):
        sql = f"SELECT hour, count(*) FROM traces WHERE {where} GROUP BY hour"
        with state.session_scope(settings.state_db_url) as s:
            plan = s.execute(text(("EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN ") + sql), params).all()
            t0 = time.perf_counter()
            n = sum(int(r[1]) for r in s.execute(text(sql), params))
            out[name] = {"sql": sql, "seconds": round(time.perf_counter() - t0, 3), "traces": n,
                         "plan": [" ".join(str(c) for c in r) if backend == "sqlite" else str(r[0]) for r in plan]}
    return out


# ----------------------------------------------------------------------------------------------
# the run


def checkpoints(total: int, spec: str) -> list[int]:
    marks = sorted({int(x) for x in spec.split(",") if x.strip()} | {total})
    return [m for m in marks if 0 < m <= total]


def step(name: str, fn: Callable[[], Any], trace_python: bool) -> tuple[Any, dict[str, Any]]:
    with measured(trace_python) as m:
        value = fn()
    log.info("%s: %.1fs, peak RSS %s MB", name, m["seconds"], m.get("peak_rss_mb", m.get("process_peak_rss_mb")))
    return value, m


def run(args: argparse.Namespace, settings: Any, backend: str, tmp: Path) -> dict[str, Any]:
    from ragops.production.aggregate import figures
    from ragops.production.load import load

    settings = settings.replace(
        eval=dataclasses.replace(settings.eval, prices={**settings.eval.prices, "gpt-4o-mini": PRICE}),
        production=dataclasses.replace(settings.production, traces=str(tmp / "traces")))
    register_prompts(settings)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    since = now - dt.timedelta(days=DAYS + 1)
    traffic = Traffic(tmp / "traces", args.seed, now, args.context_chars)
    rows, done, peak = [], 0, 0.0
    totals: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for mark in checkpoints(args.traces, args.checkpoints):
        n = mark - done
        seg, gen = step(f"write {n:,} traces", lambda n=n: traffic.write_segment(n), False)
        res, ld = step(f"load ({done:,} -> {mark:,})", lambda: load(settings, now=now), args.tracemalloc)
        totals.update({"traces": res.traces, "feedback": res.feedback, "duplicates": res.duplicates})
        skipped.update(res.skipped)
        by_day, fd = step("figures by day x prompt x model", lambda: figures(
            settings, since, by=("hour", "prompt", "prompt_version", "model"), day=True), args.tracemalloc)
        by_hour, fh = step("figures by hour", lambda: figures(settings, since, by=("hour",)), args.tracemalloc)
        last, fl = step("figures of the last hour", lambda: figures(
            settings, now - dt.timedelta(hours=1), by=("hour", "prompt", "prompt_version", "model")), False)
        facts = db_facts(settings, backend)
        peak = max([peak] + [m.get("peak_rss_mb") or 0.0 for m in (gen, ld, fd, fh, fl)])
        row = {"traces_total": mark, "segment_traces": n, "segment_files": seg["files"],
               "write_s": gen["seconds"], "load": {**ld, "per_100k_s": round(ld["seconds"] * 100_000 / n, 2),
                                                  "result": res.as_dict()},
               "figures_day_prompt_model": {**fd, "groups": len(by_day),
                                            "per_100k_traces_s": round(fd["seconds"] * 100_000 / mark, 3)},
               "figures_hour": {**fh, "groups": len(by_hour),
                                "per_100k_traces_s": round(fh["seconds"] * 100_000 / mark, 3)},
               "figures_last_hour": {**fl, "groups": len(last), "requests": sum(r["requests"] for r in last)},
               "requests_in_figures": sum(r["requests"] for r in by_hour),
               "peak_rss_so_far_mb": peak, "db": facts,
               "trace_bytes_so_far_mb": round(traffic.bytes / H.MB, 1)}
        rows.append(row)
        log.info("checkpoint %s: %s", f"{mark:,}", json.dumps({k: row[k] for k in ("requests_in_figures", "db")}))
        done = mark
    # feedback still pending (late feedback of the last segment) and traces of early feedback never came
    res, again = step("load again, nothing new", lambda: load(settings, now=now), False)
    unique = totals["traces"]
    checks = {
        "new traces = traces written": (unique, traffic.expected["traces"]),
        "duplicates = duplicate lines": (totals["duplicates"], traffic.expected["duplicates"]),
        "feedback rows = feedback lines": (totals["feedback"], traffic.expected["feedback"]),
        "skipped by reason = malformed lines": (dict(sorted(skipped.items())), dict(sorted(traffic.skipped.items()))),
        "traces in figures = traces in the store": (rows[-1]["requests_in_figures"], rows[-1]["db"]["traces"]),
        "second load: nothing new": (res.traces + res.feedback, 0),
    }
    return {"checkpoints": rows, "window_query_plan": query_plan(settings, backend, now), "reload_nothing_new": {**again, "files": res.files, "lines": res.lines},
            "checks": {k: {"got": g, "expected": e, "ok": g == e} for k, (g, e) in checks.items()},
            "feedback_before_a_trace_that_never_came": len(traffic.early)}


def render(r: dict[str, Any], markdown: bool) -> str:
    table = H.md_table if markdown else H.text_table
    head = "# " if markdown else ""
    rows = []
    for c in r["figures"]["checkpoints"]:
        ld, fd, fh = c["load"], c["figures_day_prompt_model"], c["figures_hour"]
        rows.append([f"{c['traces_total']:,}", f"{c['segment_traces']:,}", f"{c['write_s']:.1f}",
                     f"{ld['seconds']:.1f}", f"{ld['per_100k_s']:.1f}", str(ld.get("peak_rss_mb")),
                     str(ld.get("python_peak_mb", "-")), f"{fd['seconds']:.2f}", str(fd["groups"]),
                     str(fd.get("peak_rss_mb")), f"{fh['seconds']:.2f}", str(fh["groups"]), str(fh.get("peak_rss_mb")),
                     f"{c['figures_last_hour']['seconds']:.2f} ({c['figures_last_hour']['requests']:,})",
                     str(c["peak_rss_so_far_mb"]), str(c["db"]["db_mb"])])
    checks = [[k, H.md_cell(json.dumps(v["got"])), H.md_cell(json.dumps(v["expected"])), "ok" if v["ok"] else "FAIL"]
              for k, v in r["figures"]["checks"].items()]
    re_ = r["figures"]["reload_nothing_new"]
    out = [f"{head}Production traces at scale: load and figures ({r['backend']})", "",
           f"command: `{r['command']}`" if markdown else f"command: {r['command']}", "",
           f"{r['date']}; {r['traces']:,} traces over {DAYS} days, {len(PROMPTS)} prompt versions, {len(MODELS)} "
           f"models; chunk text {r['context_chars']} characters per chunk; {r['machine']['cpus']} CPUs, load average "
           f"at start {r['machine']['loadavg_at_start']}, at end {r['machine']['loadavg_at_end']}; "
           f"{r['duration_s']} s in all", "",
           "Per segment: writing its trace lines, `load` (only the new files), then `figures` over all traces so far "
           "(by day x prompt x model, and by hour). Peak RSS per step is the step's own (VmHWM reset before it), MB "
           "= 10^6 bytes" + ("; the PostgreSQL server's memory is not in it" if r["backend"] == "postgresql" else "")
           + ".", "",
           table(["traces so far", "segment", "write s", "load s", "load s / 100k", "load peak RSS MB",
                  "load Python peak MB", "by day s", "groups", "by day peak MB", "by hour s", "hours",
                  "by hour peak MB", "last hour s (traces)", "peak RSS so far MB", "database MB"], rows), "",
           "The last hour's traces at the end, found as `figures` filters (`ts >= since`) and with the hour added:",
           "", *[f"- {name}: {q['seconds']} s for {q['traces']:,} traces; plan: {' / '.join(q['plan'])}"
                 for name, q in r["figures"]["window_query_plan"].items()], "",
           f"A second load with nothing new: {re_['seconds']} s ({re_['files']} files looked at).", "",
           table(["check", "got", "expected", ""], checks), ""]
    out += r.get("notes", [])
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=1_000_000, metavar="N", help="traces in all (default 1,000,000)")
    ap.add_argument("--checkpoints", default="100000,300000", metavar="N,N",
                    help="where segments end before --traces (default 100000,300000)")
    ap.add_argument("--db", default=None, metavar="URL",
                    help="PostgreSQL URL (e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test); a schema of "
                         "its own is created there and dropped at the end. Default: SQLite in the temp dir")
    ap.add_argument("--context-chars", type=int, default=0, metavar="N",
                    help="text per retrieved chunk in each trace (production.store_contexts); default 0 = ids only")
    ap.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (slower)")
    ap.add_argument("--seed", type=int, default=7)
    H.add_common_args(ap, dataset=False, limit=False)
    args = H.check_common_args(ap, ap.parse_args())
    if args.traces < 1:
        ap.error("--traces must be at least 1")
    H.setup_logging(args.verbose, log, logging.getLogger("ragops.production.load"))
    started, load_start = H.utc_now(), H.load_at_start(log)
    with H.workspace("ragops-traces-scale-", args.keep_tmp, log) as tmp, database(args, tmp) as (settings, backend):
        figures = run(args, settings, backend, tmp)
    safe_cmd = re.sub(r"://([^:@/]+):[^@/]+@", r"://\1:***@", H.command_line(SCRIPT))
    result = {"benchmark": "traces_scale", "backend": backend, "traces": args.traces, "context_chars": args.context_chars,
              "command": safe_cmd, "date": H.iso(started),
              "duration_s": round((H.utc_now() - started).total_seconds(), 1), "machine": H.basic_machine(load_start),
              "figures": figures}
    stem = f"traces_scale.{backend}.{args.traces}" + (".tracemalloc" if args.tracemalloc else "")
    H.write_results(args.results_dir, stem, result, render(result, True))
    print(render(result, False))
    print(f"results: {args.results_dir / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
