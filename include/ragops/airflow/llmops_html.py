"""HTML of the LLMOps page: server-rendered, no external assets (the trend charts are uPlot,
vendored in static/ and served by the plugin; their data is an inert JSON block), every value
escaped. Links are relative (the page lives under the API server's plugin mount and is
shown inside Airflow's UI); links to Airflow's own pages open in the top window."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from ragops.evaluation.reports import CSS, esc, fmt

MAX_BODY = 4096  # ragops.airflow.llmops.MAX_BODY (not imported: this module renders without FastAPI)

PAGE_CSS = CSS + """
body{max-width:1250px}nav a{margin-right:14px}.pill{display:inline-block;padding:1px 7px;border-radius:9px;
font-size:12px;background:#eaecf0}.live{background:#d1fadf;color:#05603a}.breach,.rejected,.failed{background:#fee4e2;
color:#b42318}.ok,.success,.promoted{background:#d1fadf;color:#05603a}button{font-size:12px;margin:1px;cursor:pointer}
#msg{position:sticky;top:0;background:#fffaeb;padding:6px;display:none;border:1px solid #fec84b}
#confirm{position:sticky;top:0;background:#eff8ff;padding:8px;display:none;border:1px solid #84caff;z-index:2}
#confirm p{margin:0 0 6px}.paused{background:#fffaeb;border:1px solid #fec84b;padding:6px}
td.ctx{max-width:560px}.diff table{font-family:monospace;font-size:12px}.diff_add{background:#d1fadf}
.diff_chg{background:#fef0c7}.diff_sub{background:#fee4e2}.bad{color:#b42318}
.review{border:1px solid #eaecf0;padding:8px;margin:10px 0}.review.done{opacity:.6}
mark.bad{background:#fee4e2;color:#b42318}.review textarea{width:100%;max-width:760px}
.review input[name=relevant]{width:420px}.worse{background:#fee4e2;color:#b42318}.better{background:#d1fadf;
color:#05603a}
.sbs{display:grid;grid-template-columns:1fr 1fr;gap:12px}.sbs>div{min-width:0;overflow-wrap:anywhere}
.strip{background:#f9fafb;border:1px solid #eaecf0;padding:6px 8px;margin:8px 0}
details.q{border-top:1px solid #eaecf0;padding:4px 0}details.q-worse>summary{color:#b42318}
details.q-better>summary{color:#05603a}.rel{font-weight:bold;color:#05603a}.ctx.small{font-size:12px}
"""
SCRIPT = """
// Airflow shows this page in a sandboxed frame without allow-modals, allow-popups or
// allow-top-navigation: confirm() returns false at once and target=_top links do nothing. So the
// confirmation is part of the page, and links to Airflow's own pages are followed by an anchor
// clicked in the top document (same origin), which navigates as the top window itself.
function openTop(url) {
  const doc = (window.top !== window && window.top.document) ? window.top.document : document;
  const a = doc.createElement("a"); a.href = new URL(url, document.baseURI).href; a.style.display = "none";
  doc.body.appendChild(a); a.click(); a.remove();
}
function ask(label, go, then) {
  const box = document.getElementById("confirm"), ok = box.querySelector("button.go");
  box.querySelector("p").textContent = label;
  ok.textContent = go;
  box.style.display = "block";
  ok.onclick = () => { box.style.display = "none"; then(); };
  box.querySelector("button.cancel").onclick = () => { box.style.display = "none"; };
  ok.focus();
}
function act(dag, conf, label) {
  ask(label + " This starts a run of " + dag + " (its gate, audit entry and e-mail apply).", "Start the run",
      () => trigger(dag, conf));
}
function say(text) {
  const box = document.getElementById("msg");
  box.style.display = "block"; box.textContent = text;
}
// a review is recorded by the API server itself (no DAG run): the reviewed question joins the
// index's reviewed golden set, which nightly_eval evaluates next to the golden set
const MAX_BODY = @MAX_BODY@;
function review(btn) {
  const form = btn.closest("form"), verdict = btn.dataset.verdict;
  const body = {trace_id: form.dataset.trace, verdict: verdict};
  if (verdict === "answer") {
    body.reference_answer = form.elements.reference_answer.value.trim();
    body.relevant = form.elements.relevant.value.split(/[,\\n]/).map((d) => d.trim()).filter(Boolean);
    if (!body.reference_answer || !body.relevant.length) {
      say("give the correct answer and the id of at least one document that holds it"); return;
    }
  }
  if (new TextEncoder().encode(JSON.stringify(body)).length > MAX_BODY) {
    say("this review is longer than the page sends (" + MAX_BODY + " bytes): shorten the answer, or use " +
        "`ragops review submit` on the command line"); return;
  }
  const where = "the reviewed golden set of " + form.dataset.index;
  ask({answer: "Add this question with your answer to " + where + "?",
       unanswerable: "Add this question to " + where + " as unanswerable (the right answer is a refusal)?",
       not_a_problem: "Mark this trace as not a problem? It leaves the queue; no question is added."}[verdict] +
      " The review is recorded under your name.", "Save the review", () => sendReview(body, form));
}
async function sendReview(body, form) {
  say("saving the review of " + body.trace_id + " ...");
  const r = await fetch("api/review", {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Ragops-Request": "1"}, body: JSON.stringify(body)});
  const b = await r.json().catch(() => ({}));
  if (!r.ok) { say("refused: " + (b.detail || r.status)); return; }
  say("reviewed " + b.trace_id + " as " + b.verdict + (b.question_id ? ": question " + b.question_id + " is in " +
      b.golden_path : "") + (b.already_reviewed ? " (it already was)" : ""));
  const item = form.closest(".review");
  item.classList.add("done");
  form.replaceWith(Object.assign(document.createElement("p"), {className: "muted",
    textContent: "reviewed: " + b.verdict + " by " + b.reviewer}));
}
async function trigger(dag, conf) {
  const box = document.getElementById("msg");
  box.style.display = "block"; box.textContent = "starting " + dag + " ...";
  const r = await fetch("api/trigger/" + dag, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-Ragops-Request": "1"}, body: JSON.stringify(conf)});
  const body = await r.json().catch(() => ({}));
  box.textContent = "";
  if (!r.ok) { box.textContent = "refused: " + (body.detail || r.status); return; }
  box.append("started " + dag + " run " + body.dag_run_id + (body.warning ? " (" + body.warning + ")" : "") + ": ");
  const a = document.createElement("a"); a.href = "../" + body.url; a.textContent = "open the run";
  a.onclick = (e) => { e.preventDefault(); openTop(a.href); };
  box.append(a);
}
// compare page: show only the questions that got worse, and/or those whose text matches the search
function filterQuestions() {
  const worse = document.getElementById("only-worse"), text = document.getElementById("q-search");
  const want = (text ? text.value : "").trim().toLowerCase();
  let shown = 0;
  document.querySelectorAll("details.q").forEach((d) => {
    const ok = (!worse || !worse.checked || d.classList.contains("q-worse")) &&
      (!want || d.dataset.text.includes(want));
    d.style.display = ok ? "" : "none"; shown += ok ? 1 : 0;
  });
  const n = document.getElementById("q-shown"); if (n) n.textContent = shown;
}
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-top]");
  if (a) { e.preventDefault(); openTop(a.getAttribute("href")); }
});
""".replace("@MAX_BODY@", str(MAX_BODY))

def _pill(text: Any, cls: str = "") -> str:
    return f"<span class='pill {esc(cls or text)}'>{esc(text)}</span>"


def _who(actor: str) -> str:
    """The person (or schedule) who started an action, and a link to the Airflow DAG run it came from."""
    from urllib.parse import quote

    from ragops.overview import split_actor

    who, dag_id, run_id = split_actor(actor)
    if not dag_id:
        return esc(who)
    href = f"../dags/{quote(dag_id)}/runs/{quote(run_id or '', safe='')}"
    return (f"{esc(who)}<br><a class='muted' data-top='1' href='{esc(href)}' title='the Airflow DAG run'>"
            f"{esc(dag_id)} · {esc(run_id)}</a>")


def _strip(st: dict[str, Any] | None, dags: dict[str, dict[str, Any]]) -> str:
    """Status at a glance, each item linking to the section (or run) behind it."""
    if not st:
        return ""
    items = []
    li = st.get("last_ingest")
    items.append(f"<a href='#indexes'>last ingest: <b>{esc(li['index'])}</b> {_pill(li['status'])} "
                 f"{esc((li.get('finished_at') or '')[:16].replace('T', ' '))} UTC</a>" if li else
                 "<span>no ingest yet: run <code>ragops ingest SOURCE</code> or the ingest_documents DAG</span>")
    ln = st.get("last_nightly")
    items.append(f"<a href='eval/{esc(quote(ln['run_id'], safe=''))}'>last nightly: {_pill(ln['status'])} "
                 f"{esc(ln['started_at'][:16].replace('T', ' '))} UTC, hit_rate@5 {fmt(ln['metrics'].get('hit_rate@5'))}"
                 "</a>" if ln else "<span>no nightly run yet: unpause nightly_eval</span>")
    b = st.get("breaches") or []
    items.append(f"<a href='#drift' class='{'bad' if b else ''}'>open drift breaches: <b>{len(b)}</b>"
                 f"{' (' + esc(', '.join(x['index'] for x in b)) + ')' if b else ''}</a>")
    paused = sorted(d for d, v in dags.items() if v.get("is_paused"))
    items.append(f"<span class='{'bad' if paused else ''}' title='{esc(', '.join(paused))}'>paused DAGs: "
                 f"<b>{len(paused)}</b></span>")
    fa = int(st.get("failed_alerts") or 0)
    items.append(f"<span class='{'bad' if fa else ''}'>failed alerts in the outbox: <b>{fa}</b>"
                 f"{' (ragops alerts list; ragops alerts flush re-sends)' if fa else ''}</span>")
    return f"<div class='strip' role='status' aria-label='status at a glance'>{' · '.join(items)}</div>"


def _paused(dags: dict[str, dict[str, Any]]) -> str:
    """Which of the DAGs the page starts (or that feed it) are paused, and what unpausing starts."""
    rows = []
    for dag_id, d in sorted(dags.items()):
        if not d.get("is_paused"):
            continue
        sched = d.get("schedule")
        if not sched:
            what = "unpausing it starts only the runs you start"
        elif "asset" in sched.lower():
            what = f"unpausing it also lets asset events start it again ({sched})"
        else:
            what = (f"unpausing it also starts its scheduled run for the latest interval ({sched}) at once, "
                    "besides any run you start")
        rows.append(f"<li><b>{esc(dag_id)}</b> is paused: runs started from this page wait until it is "
                    f"unpaused; {esc(what)}.</li>")
    return f"<div class='paused'><b>Paused in Airflow</b><ul>{''.join(rows)}</ul></div>" if rows else ""


def _button(label: str, dag: str, conf: dict[str, Any], confirm: str) -> str:
    args = esc(json.dumps([dag, conf, confirm]))
    return f"<button data-act='{args}' onclick='act(...JSON.parse(this.dataset.act))'>{esc(label)}</button>"


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    if not rows:
        return "<p class='muted'>none yet</p>"
    return (f"<table class='{cls}'><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows) + "</table>")


def _retrieval(tuned: dict[str, Any] | None) -> str:
    """A version's tuned retrieval (the reason on hover), or that the settings' retrieval.mode serves it."""
    if not tuned:
        return "<span class='muted' title='not tuned: retrieval.mode of the settings serves'>settings</span>"
    weights = f" {tuned.get('dense_weight')}:{tuned.get('lexical_weight')}" if tuned.get("mode") == "hybrid" else ""
    return (f"<span title='{esc(tuned.get('reason') or '')}'>{esc(tuned.get('mode'))}{esc(weights)}</span>"
            f"<br><span class='muted'>tuned, {esc(tuned.get('questions'))} questions</span>")


def _indexes(data: list[dict[str, Any]]) -> str:
    from ragops.pipelines import describe

    out = ["<h2 id='indexes'>Indexes</h2>"]
    for ix in data:
        out.append(f"<h3>{esc(ix['name'])} <span class='muted'>serving {esc(ix['live'])}, {ix['chunks']} chunks</span> "
                   + _button("Rebuild (blue/green)", "rebuild_index", {"index": ix["name"], "action": "rebuild"},
                             f"Rebuild index {ix['name']}?") + "</h3>")
        rows = []
        for v in reversed(ix["versions"]):
            act = ""
            if v["status"] == "retired":
                act = _button(f"Roll back to v{v['version']}", "rebuild_index",
                              {"index": ix["name"], "action": "rollback", "rollback_to": v["version"]},
                              f"Serve {v['collection']} again?")
            stats = v.get("stats") or {}
            # a version the first sync created has no build figures: it holds the index's chunks
            chunks = stats.get("chunks", ix["chunks"] if v["live"] else "–")
            rows.append([esc(v["version"]), esc(v["collection"]), _pill("live" if v["live"] else v["status"]),
                         esc(describe(v.get("pipeline"))), _retrieval(v.get("retrieval")),
                         _who(v.get("built_by") or "ingest (first sync)"), esc(chunks), esc(v["created_at"][:19]), act])
        out.append(_table(["version", "collection", "status", "pipeline", "retrieval", "built by", "chunks", "created",
                           ""], rows))
        if ix.get("last_sync"):
            ls = ix["last_sync"]
            counts = ", ".join(f"{k} {v}" for k, v in (ls.get("counts") or {}).items())
            out.append(f"<p class='muted'>last sync {esc(ls['run_id'])}: {esc(ls['status'])} ({esc(counts)})</p>")
    return "".join(out)


def _prompts(data: list[dict[str, Any]]) -> str:
    out = ["<h2 id='prompts'>Prompts</h2>"]
    for p in data:
        name = p["name"]
        aliases = ", ".join(f"{a} → v{v}" for a, v in sorted(p["aliases"].items())) or "no aliases yet"
        out.append(f"<h3>{esc(name)} <span class='muted'>{esc(aliases)}</span></h3>")
        rows = []
        prod = p["aliases"].get("production")
        for v in reversed(p["versions"]):
            act = ""
            if v["status"].startswith("registered") and v["version"] != prod:
                act = _button(f"Evaluate v{v['version']} and promote if the gate passes", "promote_prompt",
                              {"prompt": name, "candidate_version": v["version"]},
                              f"Run the promotion gate for {name} v{v['version']} against production?")
            first, _, rest = v["status"].partition(",")
            rows.append([esc(v["version"]), esc(", ".join(v["aliases"])), _pill(first, "") + (f" {esc(rest.strip())}"
                                                                                            if rest else ""),
                         esc(v["author"]), esc(v["message"]), esc((v["registered_at"] or "")[:19]), act])
        out.append(_table(["version", "aliases", "status", "author", "message", "registered", ""], rows))
        versions = [v["version"] for v in p["versions"]]
        if len(versions) > 1:
            opts = "".join(f"<option>{v}</option>" for v in versions)
            out.append(f"<form method='get' action='prompts/{esc(name)}/diff'>Compare version <select name='a'>{opts}"
                       f"</select> with <select name='b'>{opts.replace(f'<option>{versions[-1]}', f'<option selected>{versions[-1]}')}"
                       "</select> <button type='submit'>side by side</button></form>")
        hist = [[esc(e["at"][:19]), esc(e["alias"]), _pill(e["action"]), esc(f"v{e['from']}" if e["from"] else "–"),
                 esc(f"v{e['to']}" if e["to"] else "–"), _who(e["actor"]), esc(e["reason"]), _gate_links(e)]
                for e in p["history"]]
        out.append("<h4>History</h4>" + _table(["when", "alias", "action", "from", "to", "who", "why", "evidence"],
                                               hist))
    return "".join(out)


def json_block(element_id: str, value: Any) -> str:
    """Data for the page's scripts, inert: a JSON script block in which no '<', '>' or '&' can end
    the element or start markup."""
    text = (json.dumps(value, default=str).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))
    return f"<script type='application/json' id='{esc(element_id)}'>{text}</script>"


def _charts(data: dict[str, Any]) -> str:
    """Trend charts (uPlot, static/charts.js): per index and golden set, retrieval and answer
    metrics on a time axis, nightly runs by default, filters by purpose and prompt version."""
    charts = data.get("charts") or {}
    if not charts:
        return ("<p class='muted'>No finished eval runs yet. Unpause nightly_eval, or run "
                "<code>ragops eval run</code>, and the trends appear here.</p>")
    purposes = sorted({p["purpose"] for c in charts.values() for p in c["points"]})
    prompts = sorted({p["prompt"] for c in charts.values() for p in c["points"]})
    default = "nightly" if "nightly" in purposes else "all"
    popts = "".join(f"<option value='{esc(p)}'{' selected' if p == default else ''}>{esc(p)}</option>"
                    for p in purposes) + f"<option value='all'{' selected' if default == 'all' else ''}>all</option>"
    out = ["<p><label>runs <select id='chart-purpose' aria-label='purpose of the runs charted'>", popts,
           "</select></label> <label>prompt <select id='chart-prompt' aria-label='prompt version charted'>"
           "<option value='all'>all</option>", *(f"<option>{esc(p)}</option>" for p in prompts),
           "</select></label> <span class='muted'>dashed vertical: promotions, rollbacks and index swaps; dashed "
           "horizontal: the default gate's thresholds; dotted: control limits (mean ± 3 sd of the nightly runs "
           "shown, from 5 runs). Hover for values, click a point to open its run.</span></p>"]
    for key in charts:
        out.append(f"<h3>{esc(key)}</h3>")
        for group in data.get("chart_groups") or {}:
            out.append(f"<div class='chart' data-key='{esc(key)}' data-group='{esc(group)}' role='img' "
                       f"aria-label='{esc(group)} metrics of {esc(key)} over time'></div><p class='muted hover'></p>")
    out.append(json_block("chart-data", {"charts": charts, "events": data.get("events") or [],
                                         "thresholds": data.get("thresholds") or {},
                                         "groups": data.get("chart_groups") or {}}))
    return "".join(out)


def _gate_links(event: dict[str, Any]) -> str:
    """A gate decision's two eval runs: each one, and the pair compared (candidate against production)."""
    ev = event.get("evidence") or {}
    cand, prod = ev.get("candidate_run"), ev.get("production_run")
    links = [f"<a href='eval/{esc(r)}' title='{esc(r)}'>{label}</a>" for r, label in ((cand, "candidate run"),
                                                                                     (prod, "production run")) if r]
    if cand and prod:
        links.insert(0, f"<a href='compare?a={esc(prod)}&amp;b={esc(cand)}' class='compare-gate'>compare</a>")
    return " · ".join(links)


def _evals(data: dict[str, Any]) -> str:
    out = ["<h2 id='evals'>Evaluations</h2>", _charts(data)]
    rows = [[f"<a href='eval/{esc(r['run_id'])}'>{esc(r['run_id'])}</a>", _pill(r["status"]), esc(r["purpose"]),
             esc(r["started_at"][:19]), esc(r["index"]), esc(r["prompt"]),
             esc(", ".join(r.get("served_models") or []) or (r.get("generator") or "").split(":")[-1]),
             esc(r["questions"]), *[fmt(r["metrics"].get(m)) for m in data["metrics"]]] for r in data["runs"]]
    out.append(_table(["run", "status", "purpose", "started", "index", "prompt", "served model", "questions",
                       *data["metrics"]], rows))
    done = [r for r in data["runs"] if r["status"] in ("success", "partial")]
    if len(done) > 1:
        def opts(selected: str) -> str:
            return "".join(f"<option value='{esc(r['run_id'])}'{' selected' if r['run_id'] == selected else ''}>"
                           f"{esc(r['run_id'])} · {esc(r['prompt'])} · {esc(r['started_at'][:16])}</option>"
                           for r in done)
        out.append(f"<form method='get' action='compare' id='compare-form'>Compare run <select name='b' "
                   f"aria-label='run B'>{opts(done[0]['run_id'])}</select> against <select name='a' "
                   f"aria-label='run A'>{opts(done[1]['run_id'])}</select> <button type='submit'>compare</button> "
                   "<span class='muted'>every metric with its interval, then the questions that got worse</span></form>")
    return "".join(out)


def _drift(data: list[dict[str, Any]], indexes: list[str]) -> str:
    out = ["<h2 id='drift'>Drift</h2><p>"]
    out += [_button(f"Check drift of {i} now", "check_drift", {"index": i}, f"Run check_drift on {i}?") for i in indexes]
    out.append("</p>")
    rows = [[esc(r["check_id"]), _pill(r["status"]), esc((r["started_at"] or "")[:19]), esc(r["index"]),
             " ".join(_pill(f"{k}: {v}", v) for k, v in (r.get("checks") or {}).items()),
             f"<a href='drift/{esc(r['check_id'])}/report'>report with plots</a>" if r.get("report") else
             esc(r.get("error") or "")] for r in data]
    out.append(_table(["check", "status", "started", "index", "checks", ""], rows))
    return "".join(out)


def _quarantine(data: list[dict[str, Any]]) -> str:
    rows = [[esc(q["created_at"][:19]), esc(q["index"]), esc(q["doc_id"]), esc(q["stage"]), _pill(q["reason"], "failed"),
             esc(q["detail"][:300])] for q in data]
    return "<h2 id='quarantine'>Data quality: quarantine (each index's latest sync)</h2>" + _table(
        ["when", "index", "document", "stage", "reason", "detail"], rows)


def _audit(data: list[dict[str, Any]]) -> str:
    rows = [[esc(a["at"][:19]), _who(a["actor"]), _pill(a["action"], ""), esc(a["index"] or ""),
             f"<details><summary>evidence</summary><pre>{esc(json.dumps(a['detail'], indent=1, default=str)[:4000])}"
             "</pre></details>"] for a in data]
    return "<h2 id='audit'>Audit log</h2>" + _table(["when", "who", "action", "index", ""], rows)


def _highlight(answer: str, claims: list[dict[str, Any]]) -> str:
    """The answer, escaped, with each unsupported claim found in it marked (and its reason as title)."""
    spans = []
    for c in claims:
        text = str(c.get("claim") or "").strip()
        at = answer.find(text) if text else -1
        if at >= 0:
            spans.append((at, at + len(text), str(c.get("reason") or "unsupported")))
    out, pos = [], 0
    for start, end, reason in sorted(spans):
        if start < pos:  # overlaps a claim already marked
            continue
        out.append(esc(answer[pos:start]))
        out.append(f"<mark class='bad' title='{esc(reason)}'>{esc(answer[start:end])}</mark>")
        pos = end
    out.append(esc(answer[pos:]))
    return "".join(out)


def _review_item(r: dict[str, Any]) -> str:
    claims = r.get("unsupported_claims") or []
    answer = r.get("answer")
    shown = (_highlight(answer, claims) if answer else f"<span class='muted'>{esc(r.get('error') or 'no answer')}</span>")
    listed = "".join(f"<li><span class='bad'>{esc(c.get('claim'))}</span> <b>{esc(c.get('reason') or '')}</b></li>"
                     for c in claims)
    ctx = "".join(f"<div class='ctx'><b>[{esc(c.get('n'))}] {esc(c.get('doc_id'))}</b> {esc(c.get('title') or '')} "
                  f"(score {fmt(c.get('score'))})\n{esc(c.get('text') or '')}</div>" for c in r.get("contexts") or [])
    docs = list(dict.fromkeys(str(c.get("doc_id")) for c in r.get("contexts") or [] if c.get("doc_id")))
    fb = ""
    if r.get("feedback") is not None:
        fb = (f"<p><b>user feedback</b> {esc(r['feedback'])}"
              + (f": <q>{esc(r['feedback_comment'])}</q>" if r.get("feedback_comment") else "") + "</p>")
    index, tid = r.get("index") or "", r["trace_id"]
    form = ("" if not index else
            f"<form class='review-form' data-trace='{esc(tid)}' data-index='{esc(index)}' onsubmit='return false'>"
            f"<label>Correct answer<br><textarea name='reference_answer' rows='2' maxlength='1500'></textarea></label>"
            f"<br><label>Relevant document ids (comma separated) <input name='relevant' maxlength='2000' "
            f"placeholder='{esc(', '.join(docs[:2]) or 'doc id')}'></label> "
            f"<span class='muted'>retrieved: {esc(', '.join(docs) or 'none')}</span><br>"
            "<button type='button' data-verdict='answer' onclick='review(this)'>Save the correct answer</button>"
            "<button type='button' data-verdict='unanswerable' onclick='review(this)'>Unanswerable: the corpus does "
            "not answer it</button>"
            "<button type='button' data-verdict='not_a_problem' onclick='review(this)'>Not a problem</button></form>")
    return (f"<div class='review' id='review-{esc(tid)}'><p><b>{esc(r.get('question'))}</b><br>"
            f"<span class='muted'>{esc((r.get('ts') or '')[:19])} · {esc(r.get('prompt') or 'prompt ?')} · index "
            f"{esc(r.get('index_ref') or '?')} · trace {esc(tid)}</span> "
            + " ".join(_pill(x, "failed") for x in r.get("reasons") or []) + "</p>"
            f"<p><b>answer</b>{' (refused)' if r.get('refused') else ''}: {shown}</p>"
            + (f"<p><b>unsupported claims</b></p><ul>{listed}</ul>" if listed else "") + fb
            + f"<details><summary>retrieved contexts ({len(r.get('contexts') or [])})</summary>{ctx}</details>"
            + form + "</div>")


def _review(data: dict[str, Any] | None) -> str:
    out = ["<h2 id='review'>Review queue</h2><p class='muted'>Production answers a user disliked or whose "
           "online evaluation found a claim the retrieved chunks do not support, newest first. A correct answer "
           "or 'unanswerable' adds the question to the index's reviewed golden set, which nightly_eval evaluates "
           "next to the golden set.</p>"]
    items = (data or {}).get("items") or []
    if not items:
        return out[0] + "<p class='muted'>nothing waiting for review</p>"
    pending = (data or {}).get("pending", len(items))
    if pending > len(items):
        out.append(f"<p class='muted'>showing the newest {len(items)} of {esc(pending)}; "
                   "<code>ragops review queue</code> lists them all</p>")
    out += [_review_item(r) for r in items]
    return "".join(out)


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * float(v):.1f}%"


def _ci(ci: Any, signed: bool = False) -> str:
    if not ci:
        return ""
    lo, hi = (f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}" for x in ci)
    return f" <span class='muted'>[{lo}, {hi}]</span>"


def _production(data: dict[str, Any] | None) -> str:
    if not data:
        return "<h2 id='production'>Production by prompt version</h2><p class='muted'>none yet</p>"
    days = data.get("days", 7)
    rows = []
    for v in data.get("versions") or []:
        h, g = v["hallucination"], v.get("golden") or {}
        gm = g.get("metrics") or {}
        cost = fmt(v.get("cost_usd")) + (f" <span class='muted'>+{esc(v['unpriced_requests'])} unpriced</span>"
                                         if v.get("unpriced_requests") else "")
        rows.append([f"{esc(v['prompt'])}@{esc(v['version'])} " + " ".join(_pill(a, "live" if a == "production" else "")
                                                                           for a in v.get("aliases") or []),
                     esc(v["requests"]), _pct(v.get("refusal_rate")),
                     f"{_pct(v.get('negative_feedback_rate'))} <span class='muted'>of {esc(v.get('feedback', 0))}</span>",
                     f"{_pct(h['rate'])}{_ci(h['ci'])} <span class='muted'>of {esc(h['n'])}</span>",
                     fmt(v.get("latency_p95_ms")), cost,
                     # named by its date: the run id is the link of the Evaluations table already
                     (f"<a href='eval/{esc(g['run_id'])}' title='{esc(g['run_id'])}'>"
                      f"{esc(g['started_at'][:16].replace('T', ' '))}</a> <span class='muted'>{esc(g['index'])}, "
                      f"{esc(g['questions'])} questions</span>" if g else "–"),
                     *[fmt(gm.get(m)) for m in ("hallucination_rate", "faithfulness", "answer_f1", "hit_rate@5")]])
    out = [f"<h2 id='production'>Production by prompt version</h2><p class='muted'>Traffic of the last {esc(days)} "
           "days; hallucination rate of the online-evaluated answers with its 95% Wilson interval; golden: the "
           "version's latest eval run.</p>",
           _table(["prompt version", "requests", "refusals", "negative feedback", "hallucination [95% CI]",
                   "latency p95 ms", "cost USD", "latest eval run", "golden hallucination_rate", "faithfulness",
                   "answer_f1", "hit_rate@5"], rows)]
    moves = []
    for e in data.get("promotions") or []:
        hall, neg = e["hallucination"], e["negative_feedback"]

        def side(m: dict[str, Any]) -> str:
            return (f"{_pct(m['before']['rate'])} → {_pct(m['after']['rate'])} "
                    f"<span class='muted'>({esc(m['before']['n'])} / {esc(m['after']['n'])})</span>")

        def diff(m: dict[str, Any]) -> str:
            if m.get("difference") is None:
                return esc(m["status"])
            return f"{100 * m['difference']:+.1f} pt{_ci(m['ci'], True)} {_pill(m['status'], m['status'].split()[0])}"

        moves.append([esc(e["at"][:19]), f"{esc(e['prompt'])} v{esc(e['from_version'])} → v{esc(e['to_version'])}",
                      _pill(e["action"]), _who(e.get("actor") or ""), side(hall), diff(hall), side(neg), diff(neg)])
    out.append(f"<h3>Promotions in production</h3><p class='muted'>Each move of a production alias older than a day: "
               f"the version before (its {esc(days)} days before the move) against the version after (up to "
               f"{esc(days)} days, until the next move). 95% interval of the difference in percentage points "
               f"(Newcombe); fewer than {esc(data.get('min_traces', 20))} evaluated answers (or answers with feedback) "
               "on a side is not enough traffic.</p>")
    out.append(_table(["when", "move", "action", "who", "hallucination before → after (evaluated)", "difference",
                       "negative feedback before → after (with feedback)", "difference"], moves))
    return "".join(out)


CHART_HEAD = ("<link rel='stylesheet' href='static/uPlot.min.css'><script src='static/uPlot.iife.min.js'></script>"
              "<script src='static/charts.js'></script>")  # vendored uPlot 1.6.32 (MIT) and our charts


def _frame(title: str, body: str, head: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{PAGE_CSS}</style>"
            f"<script>{SCRIPT}</script>{head}</head><body><div id='confirm' role='dialog' aria-label='confirm'><p></p>"
            "<button class='go'>Start the run</button> <button class='cancel'>Cancel</button></div>"
            f"<div id='msg' role='status'></div>{body}</body></html>")


def render_page(data: dict[str, Any], user: str, dags: dict[str, dict[str, Any]] | None = None,
                review: dict[str, Any] | None = None, production: dict[str, Any] | None = None) -> str:
    """``review``: {pending, items} of ragops.production.review; ``production``:
    ragops.production.versions.production_view."""
    nav = ("<nav><a href='#indexes'>Indexes</a><a href='#prompts'>Prompts</a><a href='#evals'>Evaluations</a>"
           "<a href='#production'>Production</a><a href='#review'>Review queue</a>"
           "<a href='#drift'>Drift</a><a href='#quarantine'>Quarantine</a><a href='#audit'>Audit log</a>"
           f"<span class='muted'>signed in as {esc(user)}</span></nav>")
    body = (f"<h1>ragops LLMOps</h1>{nav}{_strip(data.get('status'), dags or {})}{_paused(dags or {})}{_indexes(data['indexes'])}{_prompts(data['prompts'])}{_evals(data['eval'])}"
            f"{_production(production)}{_review(review)}"
            f"{_drift(data['drift'], [i['name'] for i in data['indexes']])}{_quarantine(data['quarantine'])}"
            f"{_audit(data['audit'])}")
    return _frame("ragops LLMOps", body, CHART_HEAD)


def airflow_links(origin: dict[str, Any] | None, up: str) -> str:
    """Links from an eval run to the Airflow DAG run and task that made it (opened in the top
    window). ``up``: the relative way from this page to the API server's root."""
    if not origin or not origin.get("dag_id") or not origin.get("run_id"):
        return "<span class='muted'>run outside Airflow (command line or library)</span>"
    run = f"{up}dags/{quote(str(origin['dag_id']))}/runs/{quote(str(origin['run_id']), safe='')}"
    task = f"{run}/tasks/{quote(str(origin.get('task_id') or 'evaluate'))}"
    return (f"<a href='{esc(run)}' data-top='1' class='airflow-run'>Airflow run {esc(origin['dag_id'])} · "
            f"{esc(origin['run_id'])}</a> · <a href='{esc(task)}' data-top='1' class='airflow-task'>task "
            f"{esc(origin.get('task_id') or 'evaluate')} and its log</a>")


def render_eval(data: dict[str, Any]) -> str:
    r = data["run"]
    head = (f"<p><a href='../'>← LLMOps</a></p><h1>Evaluation {esc(r['run_id'])} {_pill(r['status'])}</h1>"
            f"<p>{esc(r['prompt'])} on index {esc(r['index'])} v{esc(r['index_version'])}, {esc(r['questions'])} "
            f"questions of {esc(r['dataset'])}, answered by "
            f"{esc(', '.join(r.get('served_models') or []) or r.get('generator') or '?')}. "
            f"Context texts from {esc(data['context_source'])}.</p><p>{airflow_links(r.get('origin'), '../../')} · "
            f"<a href='{esc(quote(str(r['run_id']), safe=''))}/report'>report.html</a></p>"
            "<p class='muted'>faithfulness and hallucination_rate: every claim of an answer checked against the "
            "passages (numbers, names, negation, meaning; docs/groundedness.md). Questions in red failed: a missed "
            "relevant document in the top 5, an unsupported claim, a wrong refusal or an error.</p>")
    from ragops.evaluation.compare import GROUPS, metric_group

    groups: dict[str, list[str]] = {}
    for k, v in sorted(r["metrics"].items()):
        groups.setdefault(metric_group(k), []).append(f"<tr><td><code>{esc(k)}</code></td><td class='num'>{fmt(v)}"
                                                      "</td></tr>")
    metrics = "".join(f"<h3>{esc(g)}</h3><table>{''.join(groups[g])}</table>" for g in GROUPS if g in groups)
    out = [head, f"<h2>Metrics</h2>{metrics}<h2>Questions</h2>"]
    for q in data["questions"]:
        ms = ", ".join(f"{k} {fmt(v)}" for k, v in sorted((q.get("metrics") or {}).items())
                       if k in ("hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1",
                                "refusal_accuracy"))
        bad = (q.get("detail") or {}).get("unsupported_claims") or []
        claims = "".join(f"<li><span class='bad'>{esc(c.get('claim'))}</span> <b>{esc(c.get('reason'))}</b> "
                         f"{esc(', '.join(map(str, c.get('detail') or []))[:200])} <span class='muted'>closest "
                         f"[{esc(c.get('passage'))}]: {esc(c.get('closest') or '')}</span></li>" for c in bad)
        claims = f"<p><b>unsupported claims</b></p><ul>{claims}</ul>" if claims else ""
        ctx = "".join(f"<div class='ctx'><b>[{esc(c.get('n'))}] {esc(c.get('doc_id'))}</b> "
                      f"(score {fmt(c.get('score'))})\n{esc(c.get('text', ''))}</div>" for c in q.get("contexts") or [])
        m = q.get("metrics") or {}
        failed = bool(q.get("error")) or m.get("hit_rate@5") == 0 or (m.get("hallucination_rate") or 0) > 0 or \
            m.get("refusal_accuracy") == 0
        relevant = set(q.get("relevant_doc_ids") or [])
        retrieved = ", ".join(f"<span class='rel'>{esc(d['doc_id'])} ★</span>" if d["doc_id"] in relevant
                              else esc(d["doc_id"]) for d in q.get("retrieved_docs") or [])
        out.append(f"<details id='q-{esc(q.get('id'))}' class='q{' q-worse' if failed else ''}'><summary><b>"
                   f"{esc(q.get('id'))}</b> {esc(q.get('question'))} <span class='muted'>{esc(ms)}</span></summary>"
                   f"<p><b>answer</b>{' (refused)' if q.get('refused') else ''}: {esc(q.get('answer') or q.get('error') or '')}</p>"
                   f"{claims}<p><b>reference</b>: {esc(q.get('reference_answer', ''))}</p>"
                   f"<p><b>relevant</b>: {esc(', '.join(q.get('relevant_doc_ids') or []))}; <b>retrieved</b> "
                   f"(★ relevant): {retrieved}</p>{ctx}</details>")
    return _frame(f"ragops eval {r['run_id']}", "".join(out))


def _ci_cell(m: dict[str, Any]) -> str:
    if m.get("ci_low") is None:
        return ""
    return f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}] <span class='muted'>n={esc(m['paired'])}</span>"


def _compare_side(side: dict[str, Any] | None, relevant: set[str]) -> str:
    if side is None:
        return "<p class='muted'>not in this run</p>"
    answer = esc(side["answer"] or side.get("error") or "")
    claims = "".join(f"<li><span class='bad'>{esc(c['claim'])}</span> <b>{esc(c['reason'])}</b> "
                     f"<span class='muted'>closest [{esc(c['passage'])}]: {esc(c.get('closest') or '')}</span></li>"
                     for c in side["unsupported_claims"])
    ctx = []
    for c in side["contexts"]:
        rel = c["doc_id"] in relevant
        page = f" p. {esc(c['page'])}" if c.get("page") else ""
        ctx.append(f"<div class='ctx small'><b class='{'rel' if rel else ''}'>[{esc(c['n'])}] {esc(c['doc_id'])}"
                   f"{' ★ relevant' if rel else ''}</b>{page} <span class='muted'>score {fmt(c['score'])}</span>\n"
                   f"{esc(c['text'])}</div>")
    ms = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(side["metrics"].items())
                   if k in ("hit_rate@5", "ndcg@10", "answer_f1", "faithfulness", "hallucination_rate"))
    return (f"<p><b>answer</b>{' (refused)' if side['refused'] else ''}: {answer}</p>"
            + (f"<p><b>unsupported claims</b></p><ul>{claims}</ul>" if claims else "")
            + f"<p class='muted'>{esc(ms)}</p>{''.join(ctx)}")


def render_compare(data: dict[str, Any]) -> str:
    """ragops.evaluation.compare.compare_runs as a page: both runs, the metrics by group with their
    difference and interval, then the questions, worst regressions first, each with both sides."""
    a, b = data["a"], data["b"]

    def run_row(label: str, r: dict[str, Any]) -> list[str]:
        return [label, f"<a href='eval/{esc(r['run_id'])}'>{esc(r['run_id'])}</a>", _pill(r["status"]),
                esc(r.get("purpose") or ""), esc(r["started_at"][:19] + " UTC"), esc(r["prompt"]),
                esc(f"{r['index']} v{r['index_version']}"), esc(r["dataset"].rsplit("/", 1)[-1]),
                esc(", ".join(r.get("served_models") or []) or (r.get("generator") or "").split(":")[-1]),
                esc(r["questions"])]

    out = ["<p><a href='./'>← LLMOps</a></p>", f"<h1>{esc(b['run_id'])} against {esc(a['run_id'])}</h1>",
           _table(["", "run", "status", "purpose", "started", "prompt", "index", "dataset", "served model",
                   "questions"], [run_row("A", a), run_row("B", b)]),
           *[f"<p class='paused'>{esc(w)}</p>" for w in data["warnings"]],
           f"<p class='muted'>Differences are B − A; intervals are {int(data['confidence'] * 100)}% paired "
           "bootstrap intervals over the questions both runs answered. <b>worse</b> / <b>better</b>: the whole "
           "interval is on one side of zero (direction by metric: lower is better for rates of failures, "
           "latency, tokens and cost).</p>", "<h2>Metrics</h2>"]
    for group in data["groups"]:
        rows = []
        for m in (m for m in data["metrics"] if m["group"] == group):
            verdict = _pill(m["verdict"], m["verdict"]) if m["verdict"] in ("worse", "better") else \
                f"<span class='muted'>{esc(m['verdict'])}</span>"
            diff = "" if m["difference"] is None else f"{m['difference']:+.4f}"
            rows.append([f"<code>{esc(m['metric'])}</code>" + (" <span class='muted'>↓</span>" if m["lower_is_better"]
                                                              else ""),
                         fmt(m["a"]), fmt(m["b"]), diff, _ci_cell(m), verdict])
        out.append(f"<h3>{esc(group)}</h3>" + _table(["metric", "A", "B", "B − A", "interval", ""], rows))
    c = data["counts"]
    out.append(f"<h2 id='questions'>Questions</h2><p>{c['paired']} paired: <b class='bad'>{c['worse']} worse</b>, "
               f"{c['better']} better, {c['unchanged']} unchanged; {c['answers_changed']} answers changed; only in A "
               f"{c['only_in_a']}, only in B {c['only_in_b']}. Ordered by the change of hit_rate@5, ndcg@10, "
               "answer_f1, answer_similarity, faithfulness, hallucination_rate, refusal_accuracy and "
               "citation_validity, worst first.</p>"
               "<p><label><input type='checkbox' id='only-worse' onchange='filterQuestions()'> only questions that got "
               "worse</label> <input type='search' id='q-search' placeholder='search questions' aria-label='search "
               "questions' oninput='filterQuestions()'> <span class='muted'><span id='q-shown'>"
               f"{len(data['questions'])}</span> shown</span></p>")
    for q in data["questions"]:
        kind = "worse" if q["change"] < 0 else "better" if q["change"] > 0 else "same"
        relevant = set(q["relevant_doc_ids"])
        deltas = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(q["deltas"].items())
                           if k in ("hit_rate@5", "ndcg@10", "answer_f1", "faithfulness", "hallucination_rate",
                                    "refusal_accuracy"))
        search = f"{q['id']} {q['question']}".lower()
        out.append(f"<details class='q q-{kind}' id='q-{esc(q['id'])}' data-text='{esc(search)}'><summary><b>"
                   f"{esc(q['id'])}</b> {q['change']:+.3f} {esc(q['question'])} <span class='muted'>{esc(deltas)}"
                   f"{' · answer changed' if q['answer_changed'] else ''}</span></summary>"
                   f"<p><b>reference</b>: {esc(q['reference_answer'])}; <b>relevant</b>: "
                   f"{esc(', '.join(q['relevant_doc_ids']) or 'none (unanswerable)')}</p>"
                   f"<div class='sbs'><div><h4>A · {esc(a['prompt'])}</h4>{_compare_side(q['a'], relevant)}</div>"
                   f"<div><h4>B · {esc(b['prompt'])}</h4>{_compare_side(q['b'], relevant)}</div></div></details>")
    return _frame(f"ragops compare {b['run_id']} vs {a['run_id']}", "".join(out))


def render_diff(name: str, a: int, b: int, table: str) -> str:
    return _frame(f"{name} v{a} vs v{b}", f"<p><a href='../../'>← LLMOps</a></p><h1>{esc(name)}: v{a} vs v{b}</h1>"
                                          f"<div class='diff'>{table}</div>")


def render_missing(status: int, detail: str, home: str) -> str:
    """A page (not raw JSON) for an id that is not there, with the way back."""
    title = "Not found" if status == 404 else f"Cannot show this ({status})"
    return _frame(title, f"<p><a href='{esc(home)}'>← LLMOps</a></p><h1>{esc(title)}</h1><p>{esc(detail)}</p>"
                         f"<p>Pick an evaluation, prompt or drift check from the <a href='{esc(home)}'>LLMOps page</a>.</p>")
