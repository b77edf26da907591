"""The counterfactual bias test (ragops.evaluation.bias) as tables: one per attribute, a row per
group, a column per metric with the group's mean, its gap to the mean of all groups, the gap's
interval and p-value, and a GAP badge on each flagged cell; an attribute no question could take
says "not applicable" and why, never anything that reads as a pass.

``bias_tables_html`` renders a result as an HTML fragment (every value escaped, no Airflow): the
LLMOps page's ``/bias/<test id>`` and gate evidence pages embed it, ``write_bias_report`` writes it
as one standalone file (``ragops eval bias --html FILE``). The metrics are whatever the result's
rows carry, in their order. ``recent_tests`` and ``load_test`` read what ``bias.record`` kept
(the ``bias_tested`` audit entries and ``<data_dir>/bias/<test id>.json``) for the page.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ragops.evaluation.reports import CSS, esc

TEST_ID = re.compile(r"bias-\d{8}T\d{6}-[0-9a-f]{6}")  # what bias.record names a test
EXAMPLES = 4  # example variants shown per attribute
MAX_SCAN = 2000  # bias_tested audit entries read for the page's list (a test is a long run: few of them)

BIAS_CSS = """
.bias-badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:12px;white-space:nowrap;
background:var(--pill,#eaecf0)}.bias-gap{background:var(--bad-bg,#fee4e2);color:var(--bad,#b42318);font-weight:bold}
.bias-ok{background:var(--good-bg,#d1fadf);color:var(--good,#05603a)}
.bias-na{background:var(--warn-bg,#fffaeb);border:1px solid var(--warn-line,#fec84b)}
td.flagged{background:var(--bad-bg,#fee4e2)}.bias-cell{white-space:nowrap}.bias-attr{margin:14px 0}
.bias-reason{background:var(--warn-bg,#fffaeb);border:1px solid var(--warn-line,#fec84b);padding:6px}
"""

STATUS_TEXT = {"flagged": ("gap beyond noise", "bias-gap"), "no_gap": ("no gap beyond noise", "bias-ok"),
               "not_applicable": ("not applicable", "bias-na")}


def valid_test_id(value: Any) -> bool:
    return isinstance(value, str) and TEST_ID.fullmatch(value) is not None


def _badge(text: Any, cls: str = "") -> str:
    return f"<span class='bias-badge {esc(cls)}'>{esc(text)}</span>"


def _status(status: Any) -> str:
    text, cls = STATUS_TEXT.get(str(status), (str(status or "?"), ""))
    return _badge(text, cls)


def _num(v: Any, signed: bool = False) -> str:
    if not isinstance(v, (int, float)):
        return "–"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def _name(path: Any) -> str:
    """A file named by its name only: no server path on a page or in a shared report."""
    return Path(str(path)).name if path else "?"


def _gate(gate: dict[str, Any]) -> str:
    passed = gate.get("passed")
    verdict = _badge("PASSED", "bias-ok") if passed is True else _badge("FAILED", "bias-gap")
    against = f" against {esc(gate['against'])}" if gate.get("against") else ""
    status = gate.get("against_status")
    against_status = (f" <span class='muted'>({esc(gate.get('against') or 'the other version')} alone: "
                      f"{esc(STATUS_TEXT.get(str(status), (status,))[0])})</span>" if status else "")
    introduced = "".join(f"<li>{esc(i.get('attribute'))} / {esc(i.get('metric'))} / {esc(i.get('group'))}</li>"
                         for i in gate.get("introduced") or [] if isinstance(i, dict))
    return (f"<p class='bias-gate'><b>Gate{against}</b>: {verdict} {esc(gate.get('reason') or '')}{against_status}</p>"
            + (f"<p>gaps production does not have:</p><ul class='bias-introduced'>{introduced}</ul>" if introduced
               else ""))


def _examples(examples: list[dict[str, Any]], limit: int) -> str:
    if not examples:
        return ""
    rows = "".join(f"<tr><td>{esc(x.get('question', ''))}</td><td>{esc(x.get('group', ''))}</td>"
                   f"<td>{esc(x.get('variant', ''))}</td><td>{esc(x.get('answer', ''))}"
                   f"{' ' + _badge('refused') if x.get('refused') else ''}</td></tr>" for x in examples[:limit])
    return (f"<details class='bias-examples'><summary>example variants and answers ({min(limit, len(examples))} of "
            f"{len(examples)} kept)</summary><div class='scroll'><table><tr><th>question</th><th>group</th>"
            f"<th>asked as</th><th>answer</th></tr>{rows}</table></div></details>")


def _attribute(a: dict[str, Any], examples: int, level: int) -> str:
    name = a.get("attribute", "?")
    n_q = a.get("questions", 0)
    head = (f"<h{level} id='bias-attr-{esc(name)}'>{esc(name)} {_badge(a.get('verdict') or a.get('status'), 'bias-na' if a.get('status') != 'tested' else 'bias-gap' if a.get('flagged') else 'bias-ok')}"
            f" <span class='muted'>{esc(n_q)} question(s)</span></h{level}>")
    if a.get("status") != "tested":
        return (f"<section class='bias-attr not-applicable' data-attribute='{esc(name)}'>{head}"
                f"<p class='bias-reason'><b>not applicable</b>: {esc(a.get('reason') or 'nothing could be tested')}. "
                "Nothing was compared for this attribute.</p></section>")
    rows = [r for r in a.get("rows") or [] if isinstance(r, dict)]
    metrics = list(dict.fromkeys(str(r.get("metric")) for r in rows))
    groups = list(dict.fromkeys([*(a.get("groups") or []), *(str(r.get("group")) for r in rows)]))
    cell = {(str(r.get("metric")), str(r.get("group"))): r for r in rows}
    margins = {m: next((r.get("margin") for r in rows if str(r.get("metric")) == m), None) for m in metrics}
    ns = {m: next((r.get("n") for r in rows if str(r.get("metric")) == m), None) for m in metrics}
    top = max((n for n in ns.values() if isinstance(n, int)), default=None)
    heads = "".join(f"<th data-metric='{esc(m)}'>{esc(m)}<br><span class='muted'>margin {_num(margins[m])}"
                    + (f", n {esc(ns[m])}" if ns[m] != top else "") + "</span></th>" for m in metrics)
    body = []
    for g in groups:
        cells, flagged = [], []
        for m in metrics:
            r = cell.get((m, g))
            if r is None:
                cells.append(f"<td data-metric='{esc(m)}' class='muted'>–</td>")
                continue
            ci = r.get("ci") or [None, None]
            gap_badge = ""
            if r.get("flagged"):
                flagged.append(m)
                gap_badge = " " + _badge("GAP", "bias-gap")
            cells.append(f"<td data-metric='{esc(m)}' class='bias-cell{' flagged' if r.get('flagged') else ''}'>"
                         f"mean {_num(r.get('mean'))}<br>gap <b>{_num(r.get('gap'), True)}</b> "
                         f"[{_num(ci[0], True)}, {_num(ci[1], True)}]<br><span class='muted'>p {_num(r.get('p'))}"
                         f"</span>{gap_badge}</td>")
        verdict = (_badge("gap beyond noise: " + ", ".join(flagged), "bias-gap") if flagged
                   else "<span class='muted'>no gap beyond noise</span>")
        body.append(f"<tr data-group='{esc(g)}'><td><b>{esc(g)}</b></td><td class='num'>{esc(top if top is not None else '–')}"
                    f"</td>{''.join(cells)}<td>{verdict}</td></tr>")
    table = (f"<div class='scroll'><table class='bias-table'><tr><th>group</th><th>n</th>{heads}<th>verdict</th></tr>"
             + "".join(body) + "</table></div>") if rows else \
        "<p class='bias-reason'>no metric had two questions answered for every group: nothing could be compared</p>"
    from ragops.evaluation.bias import METRICS

    missing = [m for m in METRICS if m not in metrics]
    gone = (f"<p class='muted'>not measured (fewer than two questions answered by every group): "
            f"{esc(', '.join(missing))}</p>" if missing and rows else "")
    return (f"<section class='bias-attr' data-attribute='{esc(name)}'>{head}{table}{gone}"
            f"{_examples(a.get('examples') or [], examples)}</section>")


def bias_tables_html(result: dict[str, Any], *, examples: int = EXAMPLES, level: int = 3) -> str:
    """One bias-test result (``bias.run_bias``, possibly with ``gate`` and ``test_id``) as an HTML
    fragment: the overall status, the gate verdict when there is one, then per attribute its
    verdict, number of questions, table and a few example variants. ``level``: the heading level
    of an attribute."""
    attrs = [a for a in result.get("attributes") or [] if isinstance(a, dict)]
    out = [f"<div class='bias'><p class='bias-summary'>{esc(result.get('prompt') or '?')} on "
           f"{esc(result.get('questions', '?'))} question(s) of {esc(_name(result.get('dataset')))}"
           + (f", index {esc(result['index'])}" if result.get("index") else "")
           + (f", {esc(result['answers'])} answers" if result.get("answers") is not None else "")
           + f": {_status(result.get('status'))}</p>"]
    if isinstance(result.get("gate"), dict):
        out.append(_gate(result["gate"]))
    out.append("<p class='muted'>Per metric and group: the group's mean; its gap to the mean of all groups, paired "
               "by question, with its 95% bootstrap interval; the permutation p-value. <b>GAP</b>: flagged, p &lt; "
               "0.05 and the gap at least the metric's margin. Terms: "
               f"{esc(_name(result.get('terms')))}.</p>")
    out += [_attribute(a, examples, level) for a in attrs]
    if not attrs:
        out.append("<p class='bias-reason'>no attribute in this result: nothing was tested</p>")
    out.append("</div>")
    return "".join(out)


def write_bias_report(result: dict[str, Any], path: str | Path) -> Path:
    """The result as one standalone HTML file (the eval report's look, no external assets)."""
    path = Path(path)
    title = f"ragops bias test {result.get('test_id') or ''} of {result.get('prompt') or '?'}".replace("  ", " ")
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}{BIAS_CSS}"
            "</style></head><body>"
            f"<h1>Bias test of {esc(result.get('prompt') or '?')}</h1>"
            + (f"<p class='muted'>test {esc(result['test_id'])}</p>" if result.get("test_id") else "")
            + bias_tables_html(result, level=2) + "</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def public_result(result: dict[str, Any]) -> dict[str, Any]:
    """A result without server paths: the dataset and term file by their names."""
    out = dict(result)
    for key in ("dataset", "terms"):
        if isinstance(out.get(key), str) and "/" in out[key]:
            out[key] = _name(out[key])
    return out


def recent_tests(settings: Any, f: Any = None) -> dict[str, Any]:
    """The bias tests kept (``bias_tested`` audit entries), newest first, narrowed by the page's
    time range, index and prompt (name or name@version), one page from ``f``'s "bias" offset."""
    from ragops.overview import Filters, audit_log

    f = f or Filters()
    rows = audit_log(settings, MAX_SCAN, Filters(since=f.since, until=f.until, index=f.index, action="bias_tested"))
    want_name, want_version = f.prompt_parts()  # the page's prompt filter: name or name@version
    tests = []
    for a in rows:
        d = a.get("detail") if isinstance(a.get("detail"), dict) else {}
        name, _, version = str(d.get("prompt") or "").partition("@")
        if want_name and (name != want_name or (want_version is not None and version != str(want_version))):
            continue
        gate = d.get("gate") if isinstance(d.get("gate"), dict) else None
        tests.append({"test_id": d.get("test_id") if valid_test_id(d.get("test_id")) else None,
                      "at": a["at"], "actor": a["actor"], "audit_id": a["id"], "index": a["index"],
                      "prompt": d.get("prompt"), "status": d.get("status"), "questions": d.get("questions"),
                      "answers": d.get("answers"), "flagged": len(d.get("flagged") or []),
                      "verdicts": d.get("verdicts") or {}, "gate": gate})
    offset = f.offset("bias")
    page = tests[offset:offset + f.per_page + 1]
    return {"rows": page[:f.per_page], "offset": offset, "per_page": f.per_page,
            "next_offset": offset + f.per_page if len(page) > f.per_page else None}


def load_test(settings: Any, test_id: str) -> dict[str, Any]:
    """A kept bias test: its result (no server paths), its id and audit entry. Raises a
    ``RagopsError`` starting "unknown"/"no" (the page's 404) for an id that is not a test id (not
    quoted back) or whose file is not on this server."""
    from ragops import state
    from ragops.errors import EvalError

    if not valid_test_id(test_id):
        raise EvalError("unknown bias test: a test id looks like bias-20261122T120000-0a1b2c; pick one from the "
                        "Bias tests of the LLMOps page")
    path = Path(settings.data_dir) / "bias" / f"{test_id}.json"
    if not path.is_file():
        raise EvalError(f"no result file of bias test {test_id} on this server (removed, or kept on another "
                        "machine's data directory)")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise EvalError(f"no readable result of bias test {test_id}: its file is not JSON ({type(exc).__name__})") \
            from None
    if not isinstance(result, dict):
        raise EvalError(f"no readable result of bias test {test_id}: its file holds no JSON object")
    from sqlalchemy import select

    audit = None
    with state.session_scope(settings.state_db_url) as s:
        for a in s.execute(select(state.AuditEntry).where(state.AuditEntry.action == "bias_tested")
                           .order_by(state.AuditEntry.id.desc()).limit(MAX_SCAN)).scalars():
            if isinstance(a.detail, dict) and a.detail.get("test_id") == test_id:
                at = (a.at if a.at.tzinfo else a.at.replace(tzinfo=dt.UTC)).isoformat() if a.at else None
                audit = {"id": a.id, "at": at, "actor": a.actor}
                break
    return {**public_result(result), "test_id": test_id, "audit": audit}
