"""Read models for the LLMOps page (and anything else that wants one view of the state store):
indexes and their versions, prompts with aliases and history, eval runs and per-question results,
drift checks, quarantine, the audit log. Read-only; no Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import func, select

from ragops import state
from ragops.config import Settings
from ragops.errors import EvalError

CHART_METRICS = ["hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1", "refusal_accuracy"]
CHART_GROUPS = {"retrieval": ["hit_rate@5", "ndcg@10"],
                "answer": ["faithfulness", "hallucination_rate", "answer_f1", "refusal_accuracy"]}


def indexes(settings: Settings) -> list[dict[str, Any]]:
    from ragops.lifecycle import versions

    with state.session_scope(settings.state_db_url) as s:
        names = state.known_indexes(s)
        last_runs = {}
        for name in names:
            run = s.execute(select(state.SyncRun).where(state.SyncRun.index_name == name)
                            .order_by(state.SyncRun.started_at.desc()).limit(1)).scalar_one_or_none()
            if run is not None:
                st = run.stats or {}
                last_runs[name] = {"run_id": run.run_id, "status": run.status, "trigger": run.trigger,
                                   "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                                   "counts": st.get("counts") or {},
                                   "skipped": list(st.get("skipped") or [])[:20],  # files of types not read
                                   "repairs": {k: v for k, v in (st.get("repairs") or {}).items() if k != "entries"},
                                   "phases_s": st.get("phases_s") or {}}
        chunks = {n: s.query(state.Chunk).filter(state.Chunk.index_name == n).count() for n in names}
    out = []
    for name in names:
        vs = versions(settings, name)
        live = next((v for v in vs if v["live"]), None)
        for v in vs:  # build figures and pipelines may name files of the server: their names only
            v["stats"], v["pipeline"] = public_detail(v.get("stats")), public_detail(v.get("pipeline"))
        out.append({"name": name, "live": live["collection"] if live else None, "chunks": chunks[name],
                    "versions": vs, "last_sync": public_detail(last_runs.get(name))})
    return out


def prompts(settings: Settings, f: Filters | None = None) -> list[dict[str, Any]]:
    """Every prompt with its versions and one page of its history (newest first); with a prompt
    filter, that prompt only."""
    from ragops.registry import list_prompts

    f = f or Filters()
    name, _ = f.prompt_parts()
    out = []
    for p in list_prompts(settings):
        if name and p["name"] != name:
            continue
        page = prompt_history(settings, p["name"], f)
        p["history"], p["history_page"] = page.pop("rows"), page
        out.append(p)
    return out


PER_PAGE = 25  # rows of a table on one page (each table pages on with its own offset)
MAX_PER_PAGE = 200


@dataclass(frozen=True)
class Filters:
    """What the page's tables are narrowed to (the page's query parameters): a time range (UTC),
    an index, a prompt (``name`` or ``name@version``), an action (audit and prompt history), and
    per table the offset of the page shown. Every table asks for one row more than it shows, so
    it knows whether there is a next page."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    index: str | None = None
    prompt: str | None = None
    action: str | None = None
    per_page: int = PER_PAGE
    offsets: dict[str, int] = field(default_factory=dict)

    def offset(self, table: str) -> int:
        return max(0, int(self.offsets.get(table) or 0))

    def prompt_parts(self) -> tuple[str | None, int | None]:
        if not self.prompt:
            return None, None
        name, at, version = self.prompt.partition("@")
        if at and not (version.isdigit() and len(version) <= 9):
            return self.prompt, None  # not name@version: no prompt has that name
        return name, int(version) if version else None

    def params(self) -> dict[str, str]:
        """The filters as query parameters (what a "next page" link carries on)."""
        out = {k: v for k, v in (("since", _iso(self.since)), ("until", _iso(self.until)), ("index", self.index),
                                 ("prompt", self.prompt), ("action", self.action)) if v}
        if self.per_page != PER_PAGE:
            out["per_page"] = str(self.per_page)
        return out


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_time(value: str | None, name: str, end: bool = False) -> dt.datetime | None:
    """A date (``2026-11-22``: the whole day, in UTC) or an ISO time (no zone: UTC); a clear error
    naming the parameter otherwise."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1) if end else day
        t = dt.datetime.fromisoformat(text)
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31, or a zone past year 1
        raise EvalError(f"{name} {value[:40]!r} is not a date or time: use 2026-11-22 or 2026-11-22T14:00 (UTC)") \
            from None


def _naive_utc(t: dt.datetime) -> dt.datetime:
    """A bound for a DateTime column: SQLite stores naive UTC, PostgreSQL compares aware times."""
    return t.astimezone(dt.UTC).replace(tzinfo=None)


def _time_where(column: Any, f: Filters, url: str) -> list[Any]:
    aware = not url.startswith("sqlite")
    out = []
    if f.since is not None:
        out.append(column >= (f.since if aware else _naive_utc(f.since)))
    if f.until is not None:
        out.append(column < (f.until if aware else _naive_utc(f.until)))
    return out


def _page(rows: list[Any], f: Filters, table: str) -> dict[str, Any]:
    """Rows of one page and where the next one starts (None: this is the last)."""
    more = len(rows) > f.per_page
    return {"offset": f.offset(table), "per_page": f.per_page,
            "next_offset": f.offset(table) + f.per_page if more else None}


def _scope_where(f: Filters, index_col: Any, name_col: Any, version_col: Any) -> list[Any]:
    """The index and prompt (``name`` or ``name@version``) filters as SQL conditions on these columns."""
    where = [index_col == f.index] if f.index else []
    name, version = f.prompt_parts()
    if name:
        where.append(name_col == name)
    if version is not None:
        where.append(version_col == version)
    return where


def eval_table(settings: Settings, f: Filters) -> dict[str, Any]:
    """One page of eval runs, newest first, narrowed by time, index and prompt."""
    from ragops.evaluation.runner import run_row

    R = state.EvalRun
    where = _time_where(R.started_at, f, settings.state_db_url) + _scope_where(
        f, R.index_name, R.prompt_name, R.prompt_version)
    with state.session_scope(settings.state_db_url) as s:
        rows = [public_run(run_row(r)) for r in s.execute(
            select(R).where(*where).order_by(R.started_at.desc(), R.run_id.desc())
            .offset(f.offset("evals")).limit(f.per_page + 1)).scalars()]
    return {"rows": rows[:f.per_page], **_page(rows, f, "evals")}


def public_run(row: dict[str, Any]) -> dict[str, Any]:
    """An eval run as the page and its JSON API show it: no server paths. The run folder becomes
    the relative link of its report (None when the folder is gone), the dataset its file name."""
    out = {k: v for k, v in row.items() if k != "output_dir"}
    folder = row.get("output_dir")
    out["report_url"] = (f"eval/{quote(str(row['run_id']), safe='')}/report"
                         if folder and (Path(folder) / "report.html").exists() else None)
    if out.get("dataset"):
        out["dataset"] = Path(str(out["dataset"])).name
    return out


def eval_runs(settings: Settings, limit: int = 60, f: Filters | None = None) -> dict[str, Any]:
    """Recent runs (newest first) and, per index and dataset, the nightly series (oldest first)."""
    from ragops.evaluation.runner import run_row

    f = f or Filters()
    R = state.EvalRun
    where = _time_where(R.started_at, f, settings.state_db_url) + ([R.index_name == f.index] if f.index else [])
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        runs = [run_row(r) for r in s.execute(select(R).where(*where).order_by(R.started_at.desc())
                                               .limit(limit)).scalars()]
    series: dict[str, list[dict[str, Any]]] = {}
    for r in reversed(runs):
        if r["status"] in ("success", "partial"):
            series.setdefault(f"{r['index']} · {Path(r['dataset']).name}", []).append(
                {"label": r["started_at"][5:16].replace("T", " "), "metrics": r["metrics"], "run_id": r["run_id"]})
    charts: dict[str, dict[str, Any]] = {}
    for r in reversed(runs):  # oldest first: what a time axis draws
        if r["status"] not in ("success", "partial"):
            continue
        at = dt.datetime.fromisoformat(r["started_at"])
        at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
        chart = charts.setdefault(f"{r['index']} · {Path(r['dataset']).name}", {"index": r["index"], "points": []})
        chart["points"].append({"t": round(at.timestamp(), 3), "at": at.isoformat(), "run_id": r["run_id"],
                                "purpose": r["purpose"] or "adhoc", "prompt": r["prompt"],
                                "metrics": {m: r["metrics"].get(m) for m in CHART_METRICS}})
    return {"runs": [public_run(r) for r in runs], "series": series, "metrics": CHART_METRICS, "charts": charts,
            "chart_groups": CHART_GROUPS}


def chart_events(settings: Settings) -> list[dict[str, Any]]:
    """What the trend charts mark on their time axis: prompt promotions and rollbacks of the
    production alias (every index's charts), index swaps and rollbacks (that index's). Read whole:
    the tables' filters and pages do not thin the charts' markers."""
    out = []
    E, A = state.PromptEvent, state.AuditEntry
    with state.session_scope(settings.state_db_url) as s:
        for e in s.execute(select(E).where(E.action.in_(("promoted", "rolled_back")), E.alias == "production")
                           .order_by(E.id)).scalars():
            out.append({"at": _utc_iso(e.created_at), "kind": "promotion" if e.action == "promoted" else "rollback",
                        "index": None, "label": f"{e.name} → v{e.to_version}"})
        for a in s.execute(select(A).where(A.action.in_(("index_swapped", "index_rolled_back")))
                           .order_by(A.id)).scalars():
            d = a.detail or {}
            out.append({"at": _utc_iso(a.at), "kind": "index swap" if a.action == "index_swapped" else "index rollback",
                        "index": a.index_name,
                        "label": f"{a.index_name} → {d.get('live') or d.get('to') or ''}".strip()})
    for e in out:
        e["t"] = round(dt.datetime.fromisoformat(e["at"]).timestamp(), 3)
    return sorted(out, key=lambda e: e["t"])


def gate_thresholds(settings: Settings) -> dict[str, float]:
    """The default gate's absolute thresholds on the charted metrics (drawn as lines)."""
    gate = settings.gates.get("default") or {}
    out = {}
    for metric, rule in (gate.get("thresholds") or {}).items():
        value = rule[1] if isinstance(rule, (list, tuple)) else rule
        if metric in CHART_METRICS and isinstance(value, (int, float)):
            out[metric] = float(value)
    return out


def eval_run(settings: Settings, run_id: str) -> dict[str, Any]:
    """One run with every question: answer, metrics, retrieved documents and context texts (from
    the run's results.jsonl when it is still there, else the chunk as the state store has it now)."""
    from ragops.evaluation.runner import run_row

    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
        row = run_row(run)
        row["dataset_sha256"] = run.dataset_hash  # which golden set, now that its path is not shown
        summary = run.metrics or {}  # what the run wrote to metrics.json too
        results = {r.question_id: dict(r.payload or {}, ok=bool(r.ok)) for r in s.execute(
            select(state.EvalResult).where(state.EvalResult.run_id == run_id)).scalars()}
        index = run.index_name
    texts: dict[tuple[str, str], str] = {}
    source = "state store (current chunk text)"
    path = Path(row["output_dir"] or "") / "results.jsonl"
    if row["output_dir"] and path.exists():
        source = "the run's results.jsonl (the texts the run saw)"  # not the server path
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                q = json.loads(line)
            except json.JSONDecodeError:
                continue
            for c in q.get("contexts") or []:
                texts[(q.get("id", ""), c.get("chunk_id", ""))] = c.get("text", "")
    else:
        ids = {c.get("chunk_id") for r in results.values() for c in r.get("contexts") or []}
        with state.session_scope(settings.state_db_url) as s:
            found = dict(s.execute(select(state.Chunk.chunk_id, state.Chunk.text).where(
                state.Chunk.index_name == index, state.Chunk.chunk_id.in_(ids))).all()) if ids else {}
        texts = {(qid, c.get("chunk_id", "")): found.get(c.get("chunk_id"), "(chunk no longer in the index)")
                 for qid, r in results.items() for c in r.get("contexts") or []}
    questions = []
    for qid in sorted(results):
        r = results[qid]
        for c in r.get("contexts") or []:
            c["text"] = texts.get((qid, c.get("chunk_id", "")), "")
        questions.append(r)
    ops = dict(summary.get("operations") or {})
    counts = summary.get("counts") or {}
    if counts.get("ok"):
        ops["refused"] = counts.get("refused")
        ops["refusal_share"] = round(counts.get("refused", 0) / counts["ok"], 4)
    ops["errors"] = counts.get("errors")
    return {"run": public_run(row), "questions": questions, "context_source": source,
            "operations": {k: v for k, v in ops.items() if v is not None}, "counts": counts,
            "by_tag": summary.get("by_tag") or {}}


def eval_report_html(settings: Settings, run_id: str) -> str:
    """The report.html of an eval run, from its run folder."""
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            raise EvalError(f"unknown eval run {run_id!r}; see `ragops eval runs`")
        folder = run.output_dir
    path = Path(folder or "") / "report.html"
    if not folder or not path.exists():
        raise EvalError(f"no report.html for eval run {run_id!r} on this server: its run folder was removed or is "
                        "on another machine (the drill-down has the same figures)")
    return path.read_text(encoding="utf-8")


_ACTOR = re.compile(r"^(?P<who>.*) \(airflow (?P<dag>\S+) (?P<run>\S+)\)$")


def split_actor(actor: str | None) -> tuple[str, str | None, str | None]:
    """(who, dag_id, run_id) of an audit actor written by ragops.airflow.common.actor, e.g.
    ``alice (airflow check_drift manual__...)``; (actor, None, None) for any other actor."""
    m = _ACTOR.match(actor or "")
    return (m["who"], m["dag"], m["run"]) if m else (actor or "", None, None)


def audit_log(settings: Settings, limit: int = 100, f: Filters | None = None) -> list[dict[str, Any]]:
    """Audit entries, newest first (``f``: narrowed by time, index and action, from its offset)."""
    f = f or Filters()
    A = state.AuditEntry
    where = _time_where(A.at, f, settings.state_db_url)
    if f.index:
        where.append(A.index_name == f.index)
    if f.action:
        where.append(A.action == f.action)
    with state.session_scope(settings.state_db_url) as s:
        return [audit_row(a) for a in s.execute(select(A).where(*where).order_by(A.id.desc())
                                                .offset(f.offset("audit")).limit(limit)).scalars()]


def audit_row(a: state.AuditEntry) -> dict[str, Any]:
    return {"id": a.id, "at": _utc_iso(a.at), "actor": a.actor, "action": a.action, "index": a.index_name,
            "detail": public_detail(a.detail), "links": detail_links(a.action, a.index_name, a.detail or {})}


def audit_entry(settings: Settings, entry_id: int) -> dict[str, Any]:
    """One audit entry with its whole evidence and the links to what it concerns."""
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        a = s.get(state.AuditEntry, entry_id)
        if a is None:
            raise EvalError(f"unknown audit entry {entry_id}; see the audit log of the LLMOps page")
        return audit_row(a)


def audit_actions(settings: Settings) -> list[str]:
    """The actions the audit log holds (the page's action filter offers them)."""
    with state.session_scope(settings.state_db_url) as s:
        return sorted({a for (a,) in s.execute(select(state.AuditEntry.action).distinct())} |
                      {a for (a,) in s.execute(select(state.PromptEvent.action).distinct())})


def audit_page(settings: Settings, f: Filters) -> dict[str, Any]:
    rows = audit_log(settings, f.per_page + 1, f)
    return {"rows": rows[:f.per_page], **_page(rows, f, "audit")}


def _utc_iso(t: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 with its zone (SQLite gives naive UTC back)."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat()


PATH_KEYS = {"output_dir", "report", "report_path", "golden_path", "path", "dataset", "source", "file", "files",
             "baseline_path"}


def public_detail(value: Any, key: str = "") -> Any:
    """Evidence as the page shows it: a server path (under a key that holds one, or any absolute
    path string) becomes its file name."""
    if isinstance(value, dict):
        return {k: public_detail(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [public_detail(v, key) for v in value]
    if isinstance(value, str) and (key in PATH_KEYS or value.startswith("/")) and "/" in value:
        return Path(value).name
    return value


def _run_ids(detail: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for key in ("candidate_run", "production_run", "run_id"):
        if isinstance(detail.get(key), str):
            out.append((key, detail[key]))
    runs = detail.get("runs")
    if isinstance(runs, dict):
        out += [(f"{k} run", v) for k, v in runs.items() if isinstance(v, str)]
    for v in detail.get("baseline_runs") or []:
        if isinstance(v, str):
            out.append(("baseline run", v))
    return out


def detail_links(action: str, index: str | None, detail: dict[str, Any]) -> list[dict[str, str]]:
    """What an audit entry (or a prompt-history event) concerns, as relative links of the page:
    eval runs (and the gate pair compared), a drift check's report, a production trace, a prompt's
    versions side by side, the index. Only ids that exist as pages become links."""
    links: list[dict[str, str]] = []
    seen: set[str] = set()

    def add(kind: str, label: str, href: str) -> None:
        if href not in seen:
            seen.add(href)
            links.append({"kind": kind, "label": label, "href": href})

    runs = _run_ids(detail)
    eval_ids = {rid for _, rid in runs}
    for key, rid in runs:
        if action == "production_breach" and key == "run_id":
            continue  # a production monitor run, not an eval run
        if key == "run_id" and action in ("index_created",):
            continue  # a sync run
        add("eval", f"{key.replace('_', ' ')} {rid}", f"eval/{quote(rid, safe='')}")
    pair = detail.get("runs") if isinstance(detail.get("runs"), dict) else detail
    cand, prod = pair.get("candidate") if pair is not detail else None, pair.get("production") if pair is not detail \
        else None
    cand = detail.get("candidate_run") or (cand if isinstance(cand, str) and cand in eval_ids else None)
    prod = detail.get("production_run") or (prod if isinstance(prod, str) and prod in eval_ids else None)
    if isinstance(cand, str) and isinstance(prod, str):
        add("compare", "compare candidate with production", f"compare?a={quote(prod, safe='')}&b={quote(cand, safe='')}")
    if isinstance(detail.get("check_id"), str):
        add("drift", f"drift check {detail['check_id']}", f"drift/{quote(detail['check_id'], safe='')}/report")
    if isinstance(detail.get("trace_id"), str):
        add("trace", f"trace {detail['trace_id']}", f"trace/{quote(detail['trace_id'], safe='')}")
    prompt = detail.get("prompt")
    if isinstance(prompt, str):
        pname = prompt.partition("@")[0]
        a = detail.get("from_version", detail.get("production"))
        b = detail.get("to_version", detail.get("candidate"))
        if isinstance(a, int) and isinstance(b, int) and a != b:
            add("diff", f"{pname} v{a} vs v{b}", f"prompts/{quote(pname, safe='')}/diff?a={a}&b={b}")
        add("prompt", f"history of {pname}", f"?prompt={quote(pname, safe='')}#prompt-{quote(pname, safe='')}")
    if index:
        add("index", f"index {index}", f"?index={quote(index, safe='')}#index-{quote(index, safe='')}")
    return links


def prompt_event(settings: Settings, name: str, event_id: int) -> dict[str, Any]:
    """One prompt-history event (a promotion, rejection, rollback) with its gate evidence and links
    to both eval runs, the pair compared and the versions side by side."""
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        e = s.get(state.PromptEvent, event_id)
        if e is None or e.name != name:
            raise EvalError(f"unknown history event {event_id} of prompt {name!r}; see its history on the LLMOps page")
        ev = e.evidence or {}
        detail = {**ev, "prompt": name, "from_version": e.from_version, "to_version": e.to_version}
        gate = s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "prompt_gate_evaluated")
                         .order_by(state.AuditEntry.id.desc())).scalars()
        gate_id = next((a.id for a in gate if isinstance(a.detail, dict) and isinstance(a.detail.get("runs"), dict)
                        and ev.get("candidate_run") in a.detail["runs"].values()), None) \
            if ev.get("candidate_run") else None
        return {"id": e.id, "prompt": name, "at": _utc_iso(e.created_at), "alias": e.alias, "action": e.action,
                "from": e.from_version, "to": e.to_version, "actor": e.actor, "reason": e.reason,
                "evidence": public_detail(ev), "gate_audit_id": gate_id,
                "links": detail_links(f"prompt_{e.action}", ev.get("index"), detail)}


def prompt_history(settings: Settings, name: str, f: Filters) -> dict[str, Any]:
    """One page of a prompt's history, newest first, narrowed by time and action."""
    E = state.PromptEvent
    where = [E.name == name, *_time_where(E.created_at, f, settings.state_db_url)]
    if f.action:
        where.append(E.action == f.action.removeprefix("prompt_"))
    with state.session_scope(settings.state_db_url) as s:
        rows = [{"id": e.id, "at": _utc_iso(e.created_at), "alias": e.alias, "action": e.action,
                 "from": e.from_version, "to": e.to_version, "actor": e.actor, "reason": e.reason,
                 "evidence": public_detail(e.evidence)}
                for e in s.execute(select(E).where(*where).order_by(E.id.desc())
                                   .offset(f.offset("history")).limit(f.per_page + 1)).scalars()]
    return {"rows": rows[:f.per_page], **_page(rows, f, "history")}


def drift_checks(settings: Settings, limit: int = 30, f: Filters | None = None) -> list[dict[str, Any]]:
    """Drift checks, newest first, each with its checks' status and the relative link of its report."""
    f = f or Filters()
    D = state.DriftCheck
    where = _time_where(D.started_at, f, settings.state_db_url) + ([D.index_name == f.index] if f.index else [])
    out = []
    with state.session_scope(settings.state_db_url) as s:
        for r in s.execute(select(D).where(*where).order_by(D.started_at.desc(), D.check_id.desc())
                           .offset(f.offset("drift")).limit(limit)).scalars():
            report = r.report_path and Path(r.report_path).exists()
            out.append({"check_id": r.check_id, "index": r.index_name, "status": r.status, "trigger": r.trigger,
                        "started_at": _utc_iso(r.started_at), "breaches": r.breaches,
                        "report_url": f"drift/{quote(r.check_id, safe='')}/report" if report else None,
                        "error": r.error, "checks": {k: v.get("status") for k, v in
                                                     ((r.results or {}).get("summary") or {}).get("checks", {}).items()}})
    return out


def drift_page(settings: Settings, f: Filters) -> dict[str, Any]:
    rows = drift_checks(settings, f.per_page + 1, f)
    return {"rows": rows[:f.per_page], **_page(rows, f, "drift")}


def status(settings: Settings, ixs: list[dict[str, Any]], evals: dict[str, Any],
           drift: list[dict[str, Any]]) -> dict[str, Any]:
    """The page's strip at a glance: last ingest, last nightly run, open breaches (each index's
    latest drift check), failed alerts in the outbox."""
    syncs = [dict(i["last_sync"], index=i["name"]) for i in ixs if i.get("last_sync")]
    last_ingest = max(syncs, key=lambda r: r.get("finished_at") or "", default=None)
    nightly = next((r for r in evals.get("recent") or evals["runs"] if r["purpose"] == "nightly"), None)
    latest: dict[str, dict[str, Any]] = {}
    for d in drift:  # newest first
        latest.setdefault(d["index"], d)
    breaches = [{"index": i, "check_id": d["check_id"], "at": d["started_at"]} for i, d in latest.items()
                if d["status"] == "breach"]
    with state.session_scope(settings.state_db_url) as s:
        failed = s.scalar(select(func.count()).select_from(state.AlertRecord)
                          .where(state.AlertRecord.status.in_(("failed", "undeliverable"))))
    return {"last_ingest": last_ingest, "last_nightly": None if nightly is None else {
                k: nightly[k] for k in ("run_id", "status", "started_at", "index", "prompt")} | {
                "metrics": {m: nightly["metrics"].get(m) for m in ("hit_rate@5", "faithfulness")}},
            "breaches": breaches, "failed_alerts": int(failed or 0)}


def overview(settings: Settings, f: Filters | None = None) -> dict[str, Any]:
    """Everything the LLMOps page shows, in one read: the tables narrowed by ``f`` and paged, the
    charts (time range and index only: they have their own purpose and prompt filters), the strip
    and the compare form from the recent runs whatever the filters."""
    from ragops.retrieval import quarantine_entries

    f = f or Filters()
    state.require_schema(settings.state_db_url)
    ixs = indexes(settings)
    quarantine = [q for ix in ixs if not f.index or ix["name"] == f.index
                  for q in quarantine_entries(settings, ix["name"], limit=200,  # latest sync each
                                              severities=("failure", "repaired", "warning"))]
    for q in quarantine:
        q["detail"] = public_detail(q.get("detail"))
    plist = prompts(settings, f)
    recent = eval_runs(settings)
    evals = eval_runs(settings, 200, f) if (f.since or f.until or f.index) else dict(recent)
    table = eval_table(settings, f)
    evals["recent"], evals["runs"], evals["page"] = recent["runs"], table.pop("rows"), table
    evals["events"] = chart_events(settings)
    evals["thresholds"] = gate_thresholds(settings)
    audit, drift = audit_page(settings, f), drift_page(settings, f)
    return {"indexes": ixs, "prompts": plist, "eval": evals, "drift": drift.pop("rows"), "quarantine": quarantine,
            "audit": audit.pop("rows"), "pages": {"evals": table, "audit": audit, "drift": drift},
            "filters": f.params(), "actions": audit_actions(settings),
            "status": status(settings, ixs, recent, drift_checks(settings, 50))}


def production_daily(settings: Settings, days: int = 7, f: Filters | None = None,
                     now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per prompt version and UTC day: volume, refusal rate, latency p50/p95, tokens, cost, feedback
    (ragops.production.aggregate) and the hallucination rate of the online-evaluated answers."""
    from collections import defaultdict

    from sqlalchemy import case

    from ragops.production.aggregate import figures, window

    f = f or Filters()
    now = now or state.utcnow()
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    since = now - dt.timedelta(days=days)
    name, version = f.prompt_parts()
    rows = [r for r in figures(settings, since, now, by=("hour", "prompt", "prompt_version"), day=True)
            if r["prompt"] is not None and (not name or r["prompt"] == name)
            and (version is None or r["prompt_version"] == version)]
    T, E = state.Trace, state.TraceEval
    checked: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    with state.session_scope(settings.state_db_url) as s:
        for hour, pname, pversion, n, k in s.execute(
                select(T.hour, T.prompt_name, T.prompt_version, func.count(E.trace_id),
                       func.sum(case((E.hallucinated == 1, 1), else_=0)))
                .join(E, E.trace_id == T.trace_id)
                .where(*window(since, now), E.hallucinated.is_not(None), T.prompt_name.is_not(None))
                .group_by(T.hour, T.prompt_name, T.prompt_version)):
            day = (hour if hour.tzinfo else hour.replace(tzinfo=dt.UTC)).date().isoformat()
            checked[(day, pname, pversion)][0] += int(n or 0)
            checked[(day, pname, pversion)][1] += int(k or 0)
    out = []
    for r in rows:
        n, k = checked.get((r["hour"], r["prompt"], r["prompt_version"]), (0, 0))
        out.append({"day": r["hour"], "prompt": r["prompt"], "version": r["prompt_version"],
                    "requests": r["requests"], "refusal_rate": r["refusal_rate"], "errors": r["errors"],
                    "evaluated": n, "hallucination_rate": round(k / n, 4) if n else None,
                    "latency_p50_ms": r["latency_p50_ms"], "latency_p95_ms": r["latency_p95_ms"],
                    "tokens_in": r["tokens_in"], "tokens_out": r["tokens_out"], "cost_usd": r["cost_usd"],
                    "unpriced_requests": r["unpriced_requests"], "feedback": r["feedback"],
                    "negative_feedback_rate": r["negative_feedback_rate"]})
    return sorted(out, key=lambda r: (r["prompt"], -r["version"], r["day"]), reverse=False)


def trace_list(settings: Settings, f: Filters) -> dict[str, Any]:
    """One page of production traces, newest first, narrowed by time, index and prompt (version)."""
    T, E = state.Trace, state.TraceEval
    where = _time_where(T.ts, f, settings.state_db_url) + _scope_where(f, T.index_name, T.prompt_name, T.prompt_version)
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        rows = [{"trace_id": t.trace_id, "ts": _utc_iso(t.ts), "index": t.index_name,
                 "prompt": f"{t.prompt_name}@{t.prompt_version}" if t.prompt_name else None,
                 "question": t.question, "refused": bool(t.refused), "error": t.error, "latency_ms": t.latency_ms,
                 "feedback": t.feedback, "hallucinated": hallucinated}
                for t, hallucinated in s.execute(select(T, E.hallucinated).outerjoin(E, E.trace_id == T.trace_id)
                                                 .where(*where).order_by(T.ts.desc(), T.trace_id)
                                                 .offset(f.offset("traces")).limit(f.per_page + 1))]
    return {"rows": rows[:f.per_page], **_page(rows, f, "traces"), "filters": f.params()}


def trace(settings: Settings, trace_id: str) -> dict[str, Any]:
    """One production trace as a reviewer reads it: question, retrieved contexts, answer, its online
    evaluation (unsupported claims), the user's feedback, the review if there is one."""
    from ragops.production.review import _claims, question_id

    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        t = s.get(state.Trace, trace_id)
        if t is None:
            raise EvalError(f"unknown trace {trace_id[:80]!r}; see the review queue or the production table")
        e = s.get(state.TraceEval, trace_id)
        r = s.get(state.TraceReview, trace_id)
        return {
            "trace_id": t.trace_id, "ts": _utc_iso(t.ts), "index": t.index_name, "index_version": t.index_version,
            "prompt": f"{t.prompt_name}@{t.prompt_version}" if t.prompt_name else None,
            "model": t.model, "served_model": t.served_model, "retrieval_mode": t.retrieval_mode,
            "question": t.question, "answer": t.answer, "refused": bool(t.refused), "error": t.error,
            "tokens_in": t.tokens_in, "tokens_out": t.tokens_out, "latency_ms": t.latency_ms,
            "retrieval_ms": t.retrieval_ms, "generation_ms": t.generation_ms, "cost_usd": t.cost_usd,
            "cache_hit": bool(t.cache_hit), "contexts": [c for c in (t.chunks or []) if isinstance(c, dict)],
            "feedback": t.feedback, "feedback_comment": t.feedback_comment,
            "evaluation": None if e is None else {
                "evaluated_at": _utc_iso(e.evaluated_at), "run_id": e.run_id, "faithfulness": e.faithfulness,
                "hallucinated": e.hallucinated, "citation_validity": e.citation_validity, "pii": bool(e.pii),
                "blocklist": bool(e.blocklist), "injection": bool(e.injection), "judge": e.judge,
                "unsupported_claims": _claims(e.detail)},
            "review": None if r is None else {"verdict": r.verdict, "reviewer": r.reviewer,
                                              "reviewed_at": _utc_iso(r.reviewed_at),
                                              "reference_answer": r.reference_answer, "relevant": r.relevant,
                                              "question_id": question_id(t.trace_id)},
            "pending_review": r is None and ((t.feedback is not None and t.feedback < 0)
                                             or (e is not None and e.hallucinated == 1)),
        }
