"""The eval run's HTML report: one self-contained file, charts as inline SVG (no internet needed).

Everything that came from documents, questions or a model is escaped.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ragops import state
from ragops.config import Settings

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2939;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #eaecf0;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #eaecf0;padding:4px 8px;text-align:left;
vertical-align:top}th{background:#f9fafb}.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b42318}.muted{color:#667085}.ctx{font-size:12px;color:#475467;white-space:pre-wrap;max-height:9em;
overflow:auto;background:#f9fafb;padding:4px;margin:2px 0}details{margin:6px 0}code{font-size:12px}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return esc(v)


def trend_svg(history: list[dict[str, Any]], metric_names: list[str], width: int = 720, height: int = 240) -> str:
    """Line chart of metrics (0..1) over runs, oldest left. ``history``: {"label", "metrics"}."""
    if not history:
        return "<p class='muted'>No earlier runs on this index and dataset yet.</p>"
    left, right, top, bottom = 40, 180, 10, 30
    w, h = width - left - right, height - top - bottom
    n = len(history)
    def x(i: int) -> float:
        return left + (w * i / (n - 1) if n > 1 else w / 2)
    def y(v: float) -> float:
        return top + h * (1 - max(0.0, min(1.0, v)))
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='metric trend over {n} runs'>"]
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f"<line x1='{left}' x2='{left + w}' y1='{y(t):.1f}' y2='{y(t):.1f}' stroke='#eaecf0'/>"
                     f"<text x='{left - 6}' y='{y(t) + 4:.1f}' font-size='10' text-anchor='end'>{t:.2f}</text>")
    for j, name in enumerate(metric_names):
        colour = COLOURS[j % len(COLOURS)]
        pts = [(x(i), y(run["metrics"][name])) for i, run in enumerate(history)
               if isinstance(run["metrics"].get(name), (int, float))]
        if not pts:
            continue
        if len(pts) > 1:
            parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='"
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + "'/>")
        parts.extend(f"<circle cx='{a:.1f}' cy='{b:.1f}' r='3' fill='{colour}'/>" for a, b in pts)
        parts.append(f"<rect x='{left + w + 12}' y='{top + 16 * j}' width='10' height='10' fill='{colour}'/>"
                     f"<text x='{left + w + 26}' y='{top + 16 * j + 9}' font-size='11'>{esc(name)}</text>")
    for i, run in enumerate(history):
        if n <= 12 or i in (0, n - 1):
            parts.append(f"<text x='{x(i):.1f}' y='{height - 10}' font-size='9' text-anchor='middle'>"
                         f"{esc(run['label'])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def bar(v: float | None, width: int = 120) -> str:
    if not isinstance(v, (int, float)):
        return ""
    px = int(max(0.0, min(1.0, v)) * width)
    return (f"<svg width='{width}' height='10'><rect width='{width}' height='10' fill='#eaecf0'/>"
            f"<rect width='{px}' height='10' fill='#1f77b4'/></svg>")


def history_of(settings: Settings, run_id: str, limit: int = 30) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        if run is None:
            return []
        rows = s.execute(
            select(state.EvalRun).where(state.EvalRun.index_name == run.index_name,
                                        state.EvalRun.dataset_hash == run.dataset_hash,
                                        state.EvalRun.status.in_(("success", "partial")),
                                        state.EvalRun.started_at <= run.started_at)
            .order_by(state.EvalRun.started_at.desc()).limit(limit)).scalars().all()
        return [{"label": r.started_at.strftime("%m-%d %H:%M"), "run_id": r.run_id,
                 "prompt": f"{r.prompt_name}@{r.prompt_version}", "metrics": (r.metrics or {}).get("metrics", {})}
                for r in reversed(rows)]


def worst_questions(rows: list[dict[str, Any]], watch: tuple[str, ...], n: int = 10) -> list[dict[str, Any]]:
    def score(r: dict[str, Any]) -> float:
        vals = [v for k, v in (r.get("metrics") or {}).items() if k in watch and isinstance(v, (int, float))]
        return sum(vals) / len(vals) if vals else 1.0
    return sorted((r for r in rows if not r.get("error")), key=score)[:n]


def render_report(summary: dict[str, Any], rows: list[dict[str, Any]], history: list[dict[str, Any]],
                  watch: tuple[str, ...]) -> str:
    m = summary.get("metrics", {})
    ops = summary.get("operations", {})
    counts = summary.get("counts", {})
    prompt = summary.get("prompt", {})
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>ragops eval {esc(summary.get('run_id'))}</title><style>{CSS}</style></head><body>",
           f"<h1>Evaluation {esc(summary.get('run_id'))} "
           f"<span class='{'bad' if summary.get('status') != 'success' else 'muted'}'>{esc(summary.get('status'))}"
           "</span></h1>"]
    if summary.get("error"):
        out.append(f"<p class='bad'>{esc(summary['error'])}</p>")
    facts = [("prompt", f"{prompt.get('name')}@{prompt.get('version')} (top_k {prompt.get('top_k')}, refusal "
                        f"threshold {prompt.get('refusal_threshold')})"),
             ("generator", summary.get("generator")),
             ("index", f"{summary.get('index')} v{summary.get('index_version')} ({summary.get('collection')})"),
             ("dataset", f"{summary.get('dataset', {}).get('path')} ({counts.get('questions')} questions, "
                         f"sha256 {str(summary.get('dataset', {}).get('sha256'))[:12]})"),
             ("answered / refused / errors", f"{counts.get('ok', 0) - counts.get('refused', 0)} / "
                                             f"{counts.get('refused')} / {counts.get('errors')}"),
             ("wall time", f"{summary.get('wall_seconds')} s")]
    out.append("<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in facts) + "</table>")
    out.append("<h2>Metrics</h2><table><tr><th>metric</th><th>mean</th><th></th><th>questions</th></tr>")
    for k, v in m.items():
        if k in ("tokens_in", "tokens_out"):
            continue
        out.append(f"<tr><td><code>{esc(k)}</code></td><td class='num'>{fmt(v)}</td><td>"
                   f"{bar(v) if k not in ('pii_rate', 'blocklist_rate', 'false_refusal', 'toxicity', 'toxicity_rate', 'context_toxicity_rate') else ''}</td>"
                   f"<td class='num'>{summary.get('metric_counts', {}).get(k, '')}</td></tr>")
    out.append("</table><h2>Operations</h2><table>")
    out.extend(f"<tr><th>{esc(k)}</th><td class='num'>{fmt(v)}</td></tr>" for k, v in ops.items())
    out.append("</table>")
    shown = [w for w in watch if any(isinstance(r["metrics"].get(w), (int, float)) for r in history)][:8]
    out.append(f"<h2>Trend over the last {len(history)} runs (same index and dataset)</h2>"
               + trend_svg(history, shown))
    if history:
        out.append("<details><summary>runs in the chart</summary><table><tr><th>run</th><th>prompt</th>"
                   + "".join(f"<th>{esc(w)}</th>" for w in shown) + "</tr>"
                   + "".join(f"<tr><td>{esc(h['run_id'])}</td><td>{esc(h['prompt'])}</td>"
                             + "".join(f"<td class='num'>{fmt(h['metrics'].get(w))}</td>" for w in shown) + "</tr>"
                             for h in history) + "</table></details>")
    by_tag = summary.get("by_tag", {})
    if by_tag:
        cols = [w for w in watch if any(w in t for t in by_tag.values())]
        out.append("<h2>By tag</h2><table><tr><th>tag</th><th>n</th>"
                   + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
        for tag, vals in by_tag.items():
            out.append(f"<tr><td>{esc(tag)}</td><td class='num'>{vals.get('n')}</td>"
                       + "".join(f"<td class='num'>{fmt(vals.get(c))} {bar(vals.get(c), 60)}</td>" for c in cols)
                       + "</tr>")
        out.append("</table>")
    out.append("<h2>Worst questions</h2>")
    for r in worst_questions(rows, watch):
        metrics = ", ".join(f"{k} {fmt(v)}" for k, v in r["metrics"].items() if k in watch)
        out.append(f"<details><summary><b>{esc(r['id'])}</b> {esc(r['question'])} "
                   f"<span class='muted'>({esc(metrics)})</span></summary>")
        out.append(f"<p><b>answer</b>{' (refused)' if r.get('refused') else ''}: {esc(r.get('answer', ''))}</p>")
        if r.get("reference_answer"):
            out.append(f"<p><b>reference</b>: {esc(r['reference_answer'])}</p>")
        out.append(f"<p><b>relevant docs</b>: {esc(', '.join(r.get('relevant_doc_ids') or []) or '(none: unanswerable)')}"
                   "</p>")
        for c in r.get("contexts", []):
            rel = c["doc_id"] in (r.get("relevant_doc_ids") or [])
            out.append(f"<div><code>[{c['n']}] {esc(c['doc_id'])}</code> score {fmt(c['score'])}"
                       f"{' <b>relevant</b>' if rel else ''}<div class='ctx'>{esc(c['text'][:1500])}</div></div>")
        out.append("</details>")
    out.extend(toxicity_section(rows))
    errors = [r for r in rows if r.get("error")]
    if errors:
        out.append("<h2>Errors</h2><table><tr><th>question</th><th>error</th></tr>"
                   + "".join(f"<tr><td>{esc(r['id'])}</td><td>{esc(r['error'])}</td></tr>" for r in errors)
                   + "</table>")
    out.append("</body></html>")
    return "\n".join(out)


def toxicity_section(rows: list[dict[str, Any]]) -> list[str]:
    """Answers the toxicity checker flagged, and questions whose retrieved passages it flagged."""
    flagged = [r for r in rows if (r.get("detail") or {}).get("toxicity")]
    passages = [r for r in rows if (r.get("detail") or {}).get("toxic_contexts")]
    if not any((r.get("metrics") or {}).get("toxicity") is not None for r in rows):
        return []
    judged = [r for r in rows if (r.get("metrics") or {}).get("judge_toxicity_rate") is not None]
    by_judge = [r for r in judged if r["metrics"]["judge_toxicity_rate"] >= 1]
    # rows are dicts (unhashable, and == compares whole rows): membership by identity
    flagged_ids, judged_ids, by_judge_ids = ({id(r) for r in rs} for rs in (flagged, judged, by_judge))
    out = [f"<h2>Toxicity</h2><p>{len(flagged)} answer(s) flagged, {len(passages)} question(s) with a flagged "
           "retrieved passage (ragops.safety.toxicity; docs/evaluation.md#toxicity).</p>"]
    if judged:  # eval.judge_toxicity: the judge's second opinion, beside the checker's
        both = sum(1 for r in by_judge if (r.get("detail") or {}).get("toxicity"))
        out.append(f"<p class='judge-toxicity'>Second opinion (LLM judge): {len(by_judge)} of {len(judged)} answer(s) "
                   f"toxic; {both} flagged by both, {len(by_judge) - both} by the judge only, "
                   f"{sum(1 for r in flagged if id(r) in judged_ids) - both} by the checker only.</p>")
    shown = flagged + [r for r in by_judge if id(r) not in flagged_ids]
    if shown:
        out.append("<table><tr><th>question</th><th>checker score</th><th>judge (0-1)</th><th>answer</th></tr>" + "".join(
            f"<tr><td>{esc(r['id'])}</td><td class='num{' bad' if id(r) in flagged_ids else ''}'>"
            f"{fmt((r['metrics'] or {}).get('toxicity'))}</td>"
            f"<td class='num{' bad' if id(r) in by_judge_ids else ''}'>{fmt((r['metrics'] or {}).get('judge_toxicity'))}</td>"
            f"<td>{esc(str(r.get('answer', ''))[:500])}</td></tr>" for r in shown[:20]) + "</table>")
    if passages:
        out.append("<table><tr><th>question</th><th>passage</th><th>document</th><th>score</th></tr>" + "".join(
            f"<tr><td>{esc(r['id'])}</td><td>[{esc(c['n'])}]</td><td>{esc(c['doc_id'])}</td>"
            f"<td class='num bad'>{fmt(c['score'])}</td></tr>"
            for r in passages[:20] for c in r["detail"]["toxic_contexts"]) + "</table>")
    return out


def write_report(settings: Settings, run_id: str, path: Path, rows: list[dict[str, Any]]) -> Path:
    with state.session_scope(settings.state_db_url) as s:
        run = s.get(state.EvalRun, run_id)
        summary = dict(run.metrics or {}) if run else {}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(summary, rows, history_of(settings, run_id), settings.eval.watch_metrics),
                   encoding="utf-8")
    tmp.replace(path)
    return path
