"""The drift check's HTML report: one self-contained file, plots as inline SVG.

Per check: its verdict and rule, the figures, and a plot: a 2-D projection of both samples and
each test's permutation null with the observed value (corpus, queries), overlaid histograms
(documents), control charts (quality), the largest clusters of uncovered queries (gaps).
Everything that came from documents or queries is escaped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ragops.evaluation.reports import CSS, esc, fmt

REF, CUR, BAD = "#1f77b4", "#d62728", "#b42318"


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
            f"aria-label='{esc(label)}'>" + "".join(body) + "</svg>")


def scatter_svg(proj: dict[str, Any], width: int = 360, height: int = 300) -> str:
    pts = [(p, REF) for p in proj.get("reference", [])] + [(p, CUR) for p in proj.get("current", [])]
    if not pts:
        return ""
    xs = [p[0] for p, _ in pts]
    ys = [p[1] for p, _ in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    sx = (width - 20) / ((x1 - x0) or 1)
    sy = (height - 40) / ((y1 - y0) or 1)
    body = [f"<circle cx='{10 + (x - x0) * sx:.1f}' cy='{10 + (y1 - y) * sy:.1f}' r='2' fill='{c}' fill-opacity='0.45'/>"
            for (x, y), c in pts]
    body.append(f"<text x='10' y='{height - 12}' font-size='11' fill='{REF}'>● reference</text>"
                f"<text x='100' y='{height - 12}' font-size='11' fill='{CUR}'>● current</text>"
                f"<text x='180' y='{height - 12}' font-size='11' fill='#667085'>first two principal components</text>")
    return _svg(width, height, "projection of reference and current vectors", body)


def null_svg(null: list[float], observed: float, threshold: float | None, title: str, width: int = 360,
             height: int = 200, caption: str | None = None) -> str:
    """Histogram of the permutation null with the observed statistic (red) and threshold (dashed)."""
    if not null:
        return ""
    lo, hi = min(min(null), observed), max(max(null), observed)
    if threshold is not None:
        lo, hi = min(lo, threshold), max(hi, threshold)
    span = (hi - lo) or 1.0
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    counts, edges = np.histogram(null, bins=30, range=(lo, hi))
    top = max(int(counts.max()), 1)
    left, bottom = 10, 36
    w, h = width - 2 * left, height - bottom - 10
    def x(v: float) -> float:
        return left + w * (v - lo) / (hi - lo)
    body = [f"<rect x='{x(edges[i]):.1f}' y='{10 + h * (1 - c / top):.1f}' width='{max(x(edges[i + 1]) - x(edges[i]) - 1, 1):.1f}' "
            f"height='{h * c / top:.1f}' fill='#98a2b3'/>" for i, c in enumerate(counts)]
    body.append(f"<line x1='{x(observed):.1f}' x2='{x(observed):.1f}' y1='10' y2='{10 + h}' stroke='{CUR}' stroke-width='2'/>")
    if threshold is not None:
        body.append(f"<line x1='{x(threshold):.1f}' x2='{x(threshold):.1f}' y1='10' y2='{10 + h}' stroke='#344054' "
                    "stroke-dasharray='4 3'/>")
    body.append(f"<text x='{left}' y='{height - 20}' font-size='11'>"
                + (esc(caption) if caption else f"{esc(title)}: observed {observed:.4g} (red) vs {len(null)} permutations")
                + f"</text><text x='{left}' y='{height - 6}' font-size='10' fill='#667085'>"
                f"{lo:.3g} … {hi:.3g}{'; dashed = threshold' if threshold is not None else ''}</text>")
    return _svg(width, height, f"permutation null of {title}", body)


def hist_svg(reference: list[float], current: list[float], title: str, width: int = 360, height: int = 200) -> str:
    if not reference or not current:
        return ""
    lo, hi = min(min(reference), min(current)), max(max(reference), max(current))
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 26)
    r = np.histogram(reference, bins)[0] / len(reference)
    c = np.histogram(current, bins)[0] / len(current)
    top = max(float(r.max()), float(c.max()), 1e-9)
    left, bottom = 10, 36
    w, h = width - 2 * left, height - bottom - 10
    bw = w / (len(bins) - 1)
    body = []
    for series, colour, off in ((r, REF, 0.0), (c, CUR, 0.5)):
        body += [f"<rect x='{left + i * bw + off * bw / 2:.1f}' y='{10 + h * (1 - v / top):.1f}' width='{bw / 2:.1f}' "
                 f"height='{h * v / top:.1f}' fill='{colour}' fill-opacity='0.7'/>" for i, v in enumerate(series)]
    body.append(f"<text x='{left}' y='{height - 20}' font-size='11'>{esc(title)}: <tspan fill='{REF}'>reference</tspan>"
                f" vs <tspan fill='{CUR}'>current</tspan></text><text x='{left}' y='{height - 6}' font-size='10' "
                f"fill='#667085'>{lo:.4g} … {hi:.4g}</text>")
    return _svg(width, height, f"distribution of {title}", body)


def chart_svg(metric: str, c: dict[str, Any], width: int = 360, height: int = 200) -> str:
    """Control chart: baseline and window values, centre, 3-sigma limit, EWMA and its limit."""
    vals = c["baseline"] + c["window"]
    ew = [None] * len(c["baseline"]) + c["ewma"]
    lines = [c["centre"], c["limit"], c["ewma_limit"]]
    lo, hi = min(vals + lines), max(vals + lines)
    span = (hi - lo) or 0.01
    lo, hi = lo - 0.1 * span, hi + 0.1 * span
    left, bottom = 10, 36
    w, h = width - 2 * left, height - bottom - 10
    n = len(vals)
    def x(i: int) -> float:
        return left + w * i / max(n - 1, 1)
    def y(v: float) -> float:
        return 10 + h * (1 - (v - lo) / (hi - lo))
    body = [f"<line x1='{left}' x2='{left + w}' y1='{y(c['centre']):.1f}' y2='{y(c['centre']):.1f}' stroke='#98a2b3'/>",
            f"<line x1='{left}' x2='{left + w}' y1='{y(c['limit']):.1f}' y2='{y(c['limit']):.1f}' stroke='{BAD}' "
            "stroke-dasharray='5 3'/>",
            f"<line x1='{x(len(c['baseline'])):.1f}' x2='{left + w}' y1='{y(c['ewma_limit']):.1f}' "
            f"y2='{y(c['ewma_limit']):.1f}' stroke='#f79009' stroke-dasharray='2 2'/>",
            f"<line x1='{x(len(c['baseline'])) - 4:.1f}' x2='{x(len(c['baseline'])) - 4:.1f}' y1='10' y2='{10 + h}' "
            "stroke='#eaecf0'/>"]
    body.append("<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='"
                + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(vals)) + "'/>")
    body.append("<polyline fill='none' stroke='#f79009' stroke-width='2' points='"
                + " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(ew) if v is not None) + "'/>")
    body += [f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.5' fill='{'#1f77b4' if i < len(c['baseline']) else CUR}'/>"
             for i, v in enumerate(vals)]
    body.append(f"<text x='{left}' y='{height - 20}' font-size='11'>{esc(metric)}: centre {c['centre']:.4f}, limit "
                f"{c['limit']:.4f} (red dashed), EWMA (orange)</text><text x='{left}' y='{height - 6}' font-size='10' "
                f"fill='#667085'>{len(c['baseline'])} baseline runs | {len(c['window'])} checked runs</text>")
    return _svg(width, height, f"control chart of {metric}", body)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    return ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td class='num'>{fmt(c)}</td>" if isinstance(c, (int, float)) and
                                       not isinstance(c, bool) else f"<td>{esc(c)}</td>" for c in r) + "</tr>"
                      for r in rows) + "</table>")


def _tests(chk: dict[str, Any]) -> str:
    rows, plots = [], []
    for name, t in chk.get("tests", {}).items():
        rows.append([name, t["statistic"], t.get("threshold", "–"), t["p_value"], "yes" if t["significant"] else "no",
                     t["n_reference"], t["n_current"], t["permutations"]])
        plots.append(null_svg(t.get("null") or [], t["statistic"], t.get("threshold"),
                              {"mmd": "MMD²", "classifier": "classifier ROC AUC", "centroid": "centroid distance"}
                              .get(name, name)))
    html = _table(rows, ["test", "statistic", "threshold", "p-value", "significant", "reference n", "current n",
                         "permutations"])
    if chk.get("projection"):
        plots.insert(0, scatter_svg(chk["projection"]))
    return html + "<div>" + "".join(plots) + "</div>"


def _section(name: str, chk: dict[str, Any]) -> str:
    status = chk.get("status", "?")
    cls = "bad" if status == "breach" else "muted" if status in ("skipped", "baseline") else ""
    parts = [f"<h2>{esc(name)}: <span class='{cls}'>{esc(status.upper())}</span></h2>"]
    if chk.get("reason"):
        parts.append(f"<p class='muted'>{esc(chk['reason'])}</p>")
    if chk.get("compared"):
        parts.append(f"<p>Compared: {esc(chk['compared'])}.</p>")
    if chk.get("rule"):
        parts.append(f"<p class='muted'>Rule: {esc(chk['rule'])}.</p>")
    if name in ("corpus", "queries") and chk.get("tests"):
        parts.append(_tests(chk))
        if chk.get("novel_examples"):
            parts.append("<p>Current queries least like the reference window:</p><ul>"
                         + "".join(f"<li>{esc(q)}</li>" for q in chk["novel_examples"]) + "</ul>")
        if chk.get("feedback"):
            fb = chk["feedback"]
            parts.append(f"<p>Negative feedback: {fmt(fb['reference'])} of {fb['reference_rated']} rated queries in the "
                         f"reference window, {fmt(fb['current'])} of {fb['current_rated']} now (one-sided Fisher p = "
                         f"{fmt(fb['p_value'])}).</p>")
    if name == "documents" and chk.get("parts"):
        rows, plots = [], []
        for key, part in chk["parts"].items():
            if "psi" in part:
                rows.append([part["label"], f"PSI {part['psi']:.4f}, KS {part['ks']['statistic']:.3f} "
                             f"(p {part['ks']['p_value']:.3g})", part["reference_mean"], part["current_mean"],
                             "BREACH" if part["breach"] else "ok"])
                plots.append(hist_svg(part.get("reference_values") or [], part.get("current_values") or [],
                                      part["label"]))
            elif "change" in part:
                rows.append([key.replace("_", " "), "relative change " + ("–" if part["change"] is None else
                                                                        f"{part['change']:+.1%}"),
                             part["reference"], part["current"], "BREACH" if part["breach"] else "ok"])
            else:
                rows.append(["quarantine rate", f"one-sided Fisher p {fmt(part.get('p_value'))} "
                             f"({part.get('reference_documents', 0)} vs {part.get('current_documents', 0)} documents read)",
                             part.get("reference"), part.get("current"), "BREACH" if part.get("breach") else "ok"])
        parts.append(_table(rows, ["measure", "test", "reference", "current", "verdict"]) + "<div>" + "".join(plots)
                     + "</div>")
    if name == "gaps" and "share" in chk:
        ref = "–" if chk.get("reference_share") is None else f"{chk['reference_share']:.1%}"
        parts.append(f"<p>{chk['uncovered']} of {chk['queries']} current queries ({chk['share']:.1%}; reference window "
                     f"{ref}) have no chunk with cosine similarity of at least {chk['threshold']}.</p>")
        if chk.get("scores"):
            parts.append(null_svg(chk["scores"], chk["threshold"], None, "",
                                  caption=f"best chunk similarity of {len(chk['scores'])} current queries; red = gap "
                                          f"threshold {chk['threshold']}"))
        rows = [[i + 1, c["size"], f"{c['share']:.1%}", ", ".join(c["terms"]), " | ".join(c["examples"])]
                for i, c in enumerate(chk.get("clusters", []))]
        if rows:
            parts.append("<p>Largest groups of uncovered queries: the documents these ask about are missing.</p>"
                         + _table(rows, ["#", "queries", "share", "words", "examples"]))
    if name == "quality" and chk.get("charts"):
        rows = [[m, c.get("latest"), c.get("centre"), c.get("limit"), ", ".join(c.get("rules") or []) or "ok"]
                for m, c in chk["charts"].items() if c.get("status") != "insufficient history"]
        parts.append(_table(rows, ["metric", "newest", "centre", "3-sigma limit", "rules fired"]))
        parts.append("<div>" + "".join(chart_svg(m, c) for m, c in chk["charts"].items()
                                       if c.get("status") != "insufficient history") + "</div>")
    return "".join(parts)


def write_report(path: Path, check_id: str, p: dict[str, Any], results: dict[str, Any], breaches: list[str]) -> Path:
    ref = results.get("reference") or {}
    head = (f"<h1>Drift check {esc(check_id)}: {'<span class=bad>BREACH</span> (' + esc(', '.join(breaches)) + ')' if breaches else 'no drift'}"
            f"</h1><p>Index <b>{esc(p['index'])}</b>, live collection {esc(results.get('collection'))} "
            f"(model {esc(results.get('model'))}). Sample size {p['sample_size']}, seed {p['seed']}, "
            f"{p['permutations']} permutations, alpha {p['alpha']}, methods {esc(', '.join(p['methods']))}.</p>")
    if ref:
        head += (f"<p>Reference snapshot <b>{esc(ref.get('name'))}</b> ({esc(ref.get('reason'))}, "
                 f"{esc(ref.get('created_at'))}, {ref.get('vectors')} vectors of {esc(ref.get('collection'))}).</p>")
    if results.get("reference_note"):
        head += f"<p class='muted'>{esc(results['reference_note'])}</p>"
    if "query_log" in results:
        ql = results["query_log"]
        head += (f"<p>Query log {esc(ql['uri'])}: {ql['files']} file(s), {ql['rows']} rows ({ql['invalid']} invalid); "
                 f"{ql['reference']} queries in the reference window {esc(p['reference_start'])} – "
                 f"{esc(p['current_start'])}, {ql['current']} in the current window up to {esc(p['end'])}.</p>")
        if ql.get("problems"):
            head += "<ul>" + "".join(f"<li class='bad'>{esc(x)}</li>" for x in ql["problems"]) + "</ul>"
    t = results.get("targeted")
    if t:
        head += (f"<p>Targeted evaluation: {esc(t['reason'])}"
                 + (f": {esc(', '.join(t['question_ids']))}" if t.get("question_ids") else "") + ".</p>")
    used = {tt.get("permutations") for c in results["checks"].values() for tt in (c.get("tests") or {}).values()}
    used.discard(None)
    if used and max(used) != p["permutations"]:
        head += (f"<p class='muted'>Permutations raised from {p['permutations']} to {max(used)} so that a p-value can "
                 "fall below alpha divided by the number of methods.</p>")
    body = "".join(_section(name, chk) for name, chk in results["checks"].items())
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>ragops drift {esc(check_id)}</title>"
           f"<style>{CSS} svg{{margin:6px 12px 6px 0;border:1px solid #eaecf0}}</style></head><body>{head}{body}"
           f"</body></html>")
    path.write_text(doc, encoding="utf-8")
    return path

