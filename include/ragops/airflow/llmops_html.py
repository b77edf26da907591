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
:root{--fg:#1d2939;--muted:#667085;--bg:#fff;--panel:#f9fafb;--line:#eaecf0;--accent:#017cee;--bad:#b42318;
--bad-bg:#fee4e2;--good:#05603a;--good-bg:#d1fadf;--warn-bg:#fffaeb;--warn-line:#fec84b;--info-bg:#eff8ff;
--info-line:#84caff;--pill:#eaecf0;--chg:#fef0c7;color-scheme:light}
:root[data-theme=dark]{--fg:#e4e7ec;--muted:#98a2b3;--bg:#101828;--panel:#1d2939;--line:#344054;--accent:#53b1fd;
--bad:#fda29b;--bad-bg:#55160c;--good:#75e0a7;--good-bg:#053321;--warn-bg:#4e1d09;--warn-line:#93370d;
--info-bg:#102a56;--info-line:#1849a9;--pill:#344054;--chg:#4e1d09;color-scheme:dark}
@media (prefers-color-scheme:dark){:root:not([data-theme=light]){--fg:#e4e7ec;--muted:#98a2b3;--bg:#101828;
--panel:#1d2939;--line:#344054;--accent:#53b1fd;--bad:#fda29b;--bad-bg:#55160c;--good:#75e0a7;--good-bg:#053321;
--warn-bg:#4e1d09;--warn-line:#93370d;--info-bg:#102a56;--info-line:#1849a9;--pill:#344054;--chg:#4e1d09;
color-scheme:dark}}
html{background:var(--bg)}body{max-width:1250px;color:var(--fg);background:var(--bg);font-family:var(--font,
Inter,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif);margin:16px 20px;overflow-wrap:break-word}
a{color:var(--accent)}h2{border-color:var(--line)}td,th{border-color:var(--line)}th{background:var(--panel)}
.muted{color:var(--muted)}.bad{color:var(--bad)}.ctx{background:var(--panel);color:var(--fg)}
:focus-visible{outline:2px solid var(--accent);outline-offset:2px}
.scroll{overflow-x:auto;max-width:100%}td{overflow-wrap:break-word}th{white-space:nowrap}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%;background:var(--panel);padding:6px;margin:4px 0}
nav a{margin-right:14px}.pill{display:inline-block;padding:1px 7px;border-radius:9px;white-space:nowrap;
font-size:12px;background:var(--pill)}.live{background:var(--good-bg);color:var(--good)}.breach,.rejected,.failed{
background:var(--bad-bg);color:var(--bad)}.ok,.success,.promoted{background:var(--good-bg);color:var(--good)}
.pill.warn{background:var(--warn-bg);border:1px solid var(--warn-line)}
button,select,input,textarea{font:inherit;font-size:12px;color:var(--fg);background:var(--bg);
border:1px solid var(--line);border-radius:4px;padding:2px 6px}button{margin:1px;cursor:pointer;background:var(--panel)}
#msg{position:sticky;top:0;background:var(--warn-bg);padding:6px;display:none;border:1px solid var(--warn-line)}
#confirm{position:sticky;top:0;background:var(--info-bg);padding:8px;display:none;border:1px solid var(--info-line);
z-index:2}#confirm p{margin:0 0 6px}.paused{background:var(--warn-bg);border:1px solid var(--warn-line);padding:6px}
td.ctx{max-width:560px}.diff table{font-family:monospace;font-size:12px}.diff_add{background:var(--good-bg)}
.diff_chg{background:var(--chg)}.diff_sub{background:var(--bad-bg)}
.review{border:1px solid var(--line);padding:8px;margin:10px 0}.review.done{opacity:.6}
mark.bad{background:var(--bad-bg);color:var(--bad)}.review textarea{width:100%;max-width:760px}
.review input[name=relevant]{width:420px;max-width:100%}.worse{background:var(--bad-bg);color:var(--bad)}
.better{background:var(--good-bg);color:var(--good)}
.sbs{display:grid;grid-template-columns:1fr 1fr;gap:12px}.sbs>div{min-width:0;overflow-wrap:anywhere}
.strip{background:var(--panel);border:1px solid var(--line);padding:6px 8px;margin:8px 0}
details.q{border-top:1px solid var(--line);padding:4px 0}details.q-worse>summary{color:var(--bad)}
details.q-better>summary{color:var(--good)}.rel{font-weight:bold;color:var(--good)}.ctx.small{font-size:12px}
.id{display:inline-block;max-width:14ch;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;
vertical-align:bottom;font-family:ui-monospace,monospace;font-size:12px}
.filters{background:var(--panel);border:1px solid var(--line);padding:6px 8px;margin:8px 0}
.filters label{margin-right:10px;white-space:nowrap}.pager{margin:4px 0 12px}.pager a{margin-right:12px}
.empty{color:var(--muted);border:1px dashed var(--line);padding:8px}.cite{font-weight:bold;text-decoration:none}
.ctx:target{outline:2px solid var(--accent)}.q-tools{margin:6px 0}.chart{max-width:100%;overflow:hidden}
.chart .uplot{font-family:inherit;color:var(--fg)}
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
// the drill-down's questions: sort by a metric (worst first) or by id; failures-only and search reuse filterQuestions
function sortQuestions(select) {
  const key = select.value, box = document.getElementById("questions");
  const items = Array.from(box.querySelectorAll("details.q"));
  const num = (d) => { const v = parseFloat(d.dataset[key]); return Number.isNaN(v) ? Infinity : v; };
  items.sort((a, b) => key === "id" ? a.dataset.qid.localeCompare(b.dataset.qid) : num(a) - num(b) ||
    a.dataset.qid.localeCompare(b.dataset.qid));
  items.forEach((d) => box.appendChild(d));
}
// Airflow's colour mode and font when the page is inside Airflow's frame (same origin); else the
// browser's prefers-color-scheme and the font stack of the style sheet
(function () {
  try {
    if (window.top === window) return;
    const root = window.top.document.documentElement;
    const scheme = getComputedStyle(root).colorScheme || "";
    const dark = root.classList.contains("dark") || root.dataset.theme === "dark" || scheme === "dark";
    const light = root.classList.contains("light") || root.dataset.theme === "light" || scheme === "light";
    if (dark || light) document.documentElement.dataset.theme = dark ? "dark" : "light";
    const font = window.top.document.body && getComputedStyle(window.top.document.body).fontFamily;
    if (font) document.documentElement.style.setProperty("--font", font);
  } catch (e) { /* not Airflow's frame: keep the defaults */ }
})();
// the question tools, wired here rather than by inline handlers (the page's only inline handler is the actions')
document.addEventListener("change", (e) => {
  if (e.target.id === "q-sort") sortQuestions(e.target);
  if (e.target.id === "only-worse") filterQuestions();
});
document.addEventListener("input", (e) => { if (e.target.id === "q-search") filterQuestions(); });
document.addEventListener("click", (e) => {
  const a = e.target.closest && e.target.closest("a[data-top]");
  if (a) { e.preventDefault(); openTop(a.getAttribute("href")); }
});
""".replace("@MAX_BODY@", str(MAX_BODY))

def _ts(value: Any, short: bool = False) -> str:
    """A time with its zone: shown in UTC (``2026-11-22 12:00:05 UTC``), the stored ISO time on
    hover. A stored time without a zone is UTC (SQLite keeps none)."""
    import datetime as dt

    if not value:
        return "<span class='muted'>–</span>"
    try:
        t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return esc(value)
    t = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    shown = t.strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S") + " UTC"
    return f"<time datetime='{esc(t.isoformat())}' title='{esc(t.isoformat())}'>{esc(shown)}</time>"


def _sid(full: Any, href: str | None = None, cls: str = "") -> str:
    """An id shortened on screen (an ellipsis) with the whole id on hover; the text is the whole
    id, so selecting or copying it copies all of it."""
    text = esc(full)
    if href is None:
        return f"<span class='id {esc(cls)}' title='{text}'>{text}</span>"
    return f"<a class='id {esc(cls)}' href='{esc(href)}' title='{text}'>{text}</a>"


def _q(params: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def _pager(page: dict[str, Any] | None, table: str, filters: dict[str, Any], anchor: str, base: str = "./") -> str:
    """"Next page" (and back to the first) of one table: the filters carried on, the table's offset."""
    if not page:
        return ""
    links = []
    if page.get("offset"):
        links.append(f"<a href='{esc(base + '?' + _q(filters) + '#' + anchor)}' rel='first'>← first page</a>")
    if page.get("next_offset") is not None:
        links.append(f"<a href='{esc(base + '?' + _q({**filters, table: page['next_offset']}) + '#' + anchor)}' "
                     f"rel='next' class='next-{esc(table)}'>next page →</a>")
    shown = f"rows {page['offset'] + 1}–" if page.get("offset") else ""
    return f"<p class='pager muted'>{esc(shown)}{' '.join(links)}</p>" if links else ""


def _filters_form(data: dict[str, Any]) -> str:
    """The tables' filters: a time range (UTC), index, prompt, action; a plain GET form."""
    f = data.get("filters") or {}

    def options(values: list[str], selected: Any, everything: str) -> str:
        return f"<option value=''>{esc(everything)}</option>" + "".join(
            f"<option value='{esc(v)}'{' selected' if v == selected else ''}>{esc(v)}</option>" for v in values)

    indexes = [i["name"] for i in data.get("indexes") or []]
    prompts = sorted({p["name"] for p in data.get("prompts") or []} |
                     {f"{p['name']}@{v['version']}" for p in data.get("prompts") or [] for v in p["versions"]})
    if f.get("prompt") and f["prompt"] not in prompts:
        prompts.append(f["prompt"])
    clear = "<a href='./'>clear filters</a>" if f else ""
    return ("<form method='get' action='./' class='filters' id='filters' aria-label='filter the tables'>"
            f"<label>from <input type='text' name='since' value='{esc(f.get('since', ''))}' size='16' "
            "placeholder='2026-11-22' aria-label='from (UTC date or time)'></label>"
            f"<label>until <input type='text' name='until' value='{esc(f.get('until', ''))}' size='16' "
            "placeholder='2026-11-30T18:00' aria-label='until (UTC date or time)'></label>"
            f"<label>index <select name='index'>{options(indexes, f.get('index'), 'all')}</select></label>"
            f"<label>prompt <select name='prompt'>{options(prompts, f.get('prompt'), 'all')}</select></label>"
            f"<label>action <select name='action'>{options(data.get('actions') or [], f.get('action'), 'all')}"
            "</select></label>"
            + "<label>rows per table <select name='per_page'>" + "".join(
                f"<option{' selected' if str(n) == str(f.get('per_page') or 25) else ''}>{n}</option>"
                for n in (5, 10, 25, 50, 100)) + "</select></label>"
            + f"<button type='submit'>filter</button> {clear} <span class='muted'>times in UTC; the evaluations, "
              "prompt history, drift and audit tables follow the filters (action: audit log and prompt history)"
              "</span></form>")


def _page(c: dict[str, Any]) -> str:
    """The PDF page(s) a passage comes from ("p. 3", "pp. 3-4"), when the chunk records them."""
    pages = str(c.get("page") or "")
    return f" <span class='page'>{'pp.' if '-' in pages else 'p.'} {esc(pages)}</span>" if pages else ""


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
                 f"{_ts(li.get('finished_at'), True)}</a>" if li else
                 "<span>no ingest yet: run <code>ragops ingest SOURCE</code> or the ingest_documents DAG</span>")
    ln = st.get("last_nightly")
    items.append(f"<a href='eval/{esc(quote(ln['run_id'], safe=''))}'>last nightly: {_pill(ln['status'])} "
                 f"{_ts(ln['started_at'], True)}, hit_rate@5 {fmt(ln['metrics'].get('hit_rate@5'))}"
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


def _table(head: list[str], rows: list[list[str]], cls: str = "", empty: str = "none yet",
           ids: list[str] | None = None) -> str:
    """A table that scrolls inside its box when too wide (the page never widens); ``empty``: what
    to do when there is nothing (raw HTML, written here); ``ids``: each row's anchor."""
    if not rows:
        return f"<p class='empty'>{empty}</p>"
    body = "".join(f"<tr{f' id={chr(39)}{esc(ids[i])}{chr(39)}' if ids else ''}>" + "".join(f"<td>{c}</td>" for c in r)
                   + "</tr>" for i, r in enumerate(rows))
    return (f"<div class='scroll'><table class='{cls}'><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
            + body + "</table></div>")


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
    if not data:
        out.append("<p class='empty'>No index yet: trigger ingest_documents in Airflow (or run <code>make demo</code> "
                   "or <code>ragops ingest SOURCE --index NAME</code>), then reload this page.</p>")
    for ix in data:
        out.append(f"<h3 id='index-{esc(ix['name'])}'>{esc(ix['name'])} <span class='muted'>serving {esc(ix['live'])}, {ix['chunks']} chunks</span> "
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
                         _who(v.get("built_by") or "ingest (first sync)"), esc(chunks), _ts(v["created_at"]), act])
        out.append(_table(["version", "collection", "status", "pipeline", "retrieval", "built by", "chunks", "created",
                           ""], rows))
        if ix.get("last_sync"):
            out.append(_last_sync(ix["last_sync"]))
    return "".join(out)


def _prompts(data: list[dict[str, Any]], filters: dict[str, Any] | None = None) -> str:
    out = ["<h2 id='prompts'>Prompts</h2>"]
    for p in data:
        name = p["name"]
        aliases = ", ".join(f"{a} → v{v}" for a, v in sorted(p["aliases"].items())) or "no aliases yet"
        out.append(f"<h3 id='prompt-{esc(name)}'>{esc(name)} <span class='muted'>{esc(aliases)}</span></h3>")
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
                         esc(v["author"]), esc(v["message"]), _ts(v["registered_at"]), act])
        out.append(_table(["version", "aliases", "status", "author", "message", "registered", ""], rows))
        versions = [v["version"] for v in p["versions"]]
        if len(versions) > 1:
            opts = "".join(f"<option>{v}</option>" for v in versions)
            out.append(f"<form method='get' action='prompts/{esc(name)}/diff'>Compare version <select name='a'>{opts}"
                       f"</select> with <select name='b'>{opts.replace(f'<option>{versions[-1]}', f'<option selected>{versions[-1]}')}"
                       "</select> <button type='submit'>side by side</button></form>")
        hist = [[_ts(e["at"]), esc(e["alias"]), _pill(e["action"]), esc(f"v{e['from']}" if e["from"] else "–"),
                 esc(f"v{e['to']}" if e["to"] else "–"), _who(e["actor"]), esc(e["reason"]), _gate_links(e, name)]
                for e in p["history"]]
        out.append("<h4>History</h4>" + _table(["when", "alias", "action", "from", "to", "who", "why", "evidence"],
                                               hist, empty="no history in this time range or action: clear the "
                                                           "filters above") +
                   _pager(p.get("history_page"), "history", filters or {}, f"prompt-{name}"))
    if not data:
        out.append("<p class='empty'>No prompts yet: put a prompt file under include/prompts/NAME/v1.yaml and run "
                   "the sync_prompts DAG (or <code>ragops prompts sync</code>).</p>")
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


def _gate_links(event: dict[str, Any], prompt: str | None = None) -> str:
    """A history event's gate evidence (its own page), its two eval runs, and the pair compared
    (candidate against production)."""
    ev = event.get("evidence") or {}
    cand, prod = ev.get("candidate_run"), ev.get("production_run")
    links = [f"<a href='eval/{esc(quote(r, safe=''))}' title='{esc(r)}' class='{cls}'>{label}</a>"
             for r, label, cls in ((cand, "candidate run", "cand-run"), (prod, "production run", "prod-run")) if r]
    if isinstance(ev.get("run_id"), str):
        links.append(f"<a href='eval/{esc(quote(ev['run_id'], safe=''))}' title='{esc(ev['run_id'])}'>nightly run</a>")
    if cand and prod:
        links.insert(0, f"<a href='compare?a={esc(quote(prod, safe=''))}&amp;b={esc(quote(cand, safe=''))}' "
                        "class='compare-gate'>compare</a>")
    if prompt and event.get("id") is not None and ev:
        links.insert(0, f"<a href='prompts/{esc(quote(prompt, safe=''))}/history/{esc(event['id'])}' "
                        "class='gate-evidence'>gate evidence</a>")
    return " · ".join(links)


def _evals(data: dict[str, Any], filters: dict[str, Any] | None = None, page: dict[str, Any] | None = None) -> str:
    out = ["<h2 id='evals'>Evaluations</h2>", _charts(data)]
    rows = [[_sid(r["run_id"], f"eval/{r['run_id']}", "run"), _pill(r["status"]),  # escaped by _sid, as before
             esc(r["purpose"]), _ts(r["started_at"]), esc(r["index"]), esc(r["prompt"]),
             esc(", ".join(r.get("served_models") or []) or (r.get("generator") or "").split(":")[-1]),
             esc(r["questions"]), *[fmt(r["metrics"].get(m)) for m in data["metrics"]]] for r in data["runs"]]
    out.append(_table(["run", "status", "purpose", "started", "index", "prompt", "served model", "questions",
                       *data["metrics"]], rows,
                      empty="No eval runs match the filters: clear them, or unpause nightly_eval (or run "
                            "<code>ragops eval run</code>) to evaluate the production prompt on the golden set."))
    out.append(_pager(page, "evals", filters or {}, "evals"))
    done = [r for r in data.get("recent") or data["runs"] if r["status"] in ("success", "partial")]
    if len(done) > 1:
        def opts(selected: str) -> str:
            return "".join(f"<option value='{esc(r['run_id'])}'{' selected' if r['run_id'] == selected else ''}>"
                           f"{esc(r['run_id'])} · {esc(r['prompt'])} · {esc(r['started_at'][:16].replace('T', ' '))} UTC</option>"
                           for r in done)
        out.append(f"<form method='get' action='compare' id='compare-form'>Compare run <select name='b' "
                   f"aria-label='run B'>{opts(done[0]['run_id'])}</select> against <select name='a' "
                   f"aria-label='run A'>{opts(done[1]['run_id'])}</select> <button type='submit'>compare</button> "
                   "<span class='muted'>every metric with its interval, then the questions that got worse</span></form>")
    return "".join(out)


def _drift_report(r: dict[str, Any]) -> str:
    """The link of a drift check's report (``report_url`` of ragops.overview; a row that still
    carries the stored ``report`` path links the same route), else the check's error."""
    url = r.get("report_url") or (f"drift/{r['check_id']}/report" if r.get("report") else None)
    if not url:
        return esc(r.get("error") or "")
    return f"<a href='{esc(url)}' class='drift-report'>report with plots</a>"


def _drift(data: list[dict[str, Any]], indexes: list[str], filters: dict[str, Any] | None = None,
           page: dict[str, Any] | None = None) -> str:
    out = ["<h2 id='drift'>Drift</h2><p>"]
    out += [_button(f"Check drift of {i} now", "check_drift", {"index": i}, f"Run check_drift on {i}?") for i in indexes]
    out.append("</p>")
    rows = [[_sid(r["check_id"]), _pill(r["status"]), _ts(r.get("started_at")), esc(r["index"]),
             " ".join(_pill(f"{k}: {v}", v) for k, v in (r.get("checks") or {}).items()),
             _drift_report(r)
             + (f" · <a href='./?{esc(_q({'action': 'drift_breach', 'index': r['index']}))}#audit'>breach entries"
                "</a>" if r.get("status") == "breach" else "")] for r in data]
    out.append(_table(["check", "status", "started", "index", "checks", ""], rows,
                      empty="No drift checks match the filters: run one with the buttons above (check_drift), or "
                            "clear the filters.", ids=[f"drift-{r['check_id']}" for r in data]))
    out.append(_pager(page, "drift", filters or {}, "drift"))
    return "".join(out)


SEVERITY_PILL = {"failure": ("quarantined", "failed"), "warning": ("indexed, warning", "warn"),
                 "repaired": ("indexed, repaired", "ok")}


def _quarantine(data: list[dict[str, Any]]) -> str:
    order = {"failure": 0, "warning": 1, "repaired": 2}
    data = sorted(data, key=lambda q: order.get(q.get("severity") or "failure", 3))
    rows = []
    for q in data:
        label, cls = SEVERITY_PILL.get(q.get("severity") or "failure", ("?", ""))
        rows.append([_ts(q["created_at"]), esc(q["index"]), esc(q["doc_id"]), _pill(label, cls), esc(q["stage"]),
                     _pill(q["reason"], cls), esc(str(q["detail"])[:300])])
    return ("<h2 id='quarantine'>Data quality: quarantined, repaired and warned documents (each index's latest "
            "sync)</h2>" + _table(
                ["when", "index", "document", "outcome", "stage", "reason", "detail"], rows,
                empty="Nothing quarantined, repaired or flagged in the latest syncs: every document passed the "
                      "quality checks as it was."))


def _last_sync(ls: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in (ls.get("counts") or {}).items())
    out = f"<p class='muted'>last sync {esc(ls['run_id'])}: {esc(ls['status'])} ({esc(counts)})</p>"
    rp = ls.get("repairs") or {}
    if rp.get("kinds"):
        kinds = ", ".join(f"{k} {v}" for k, v in rp["kinds"].items())
        out += (f"<p class='muted'>repaired {esc(rp.get('repaired_documents', 0))} document(s), "
                f"{esc(rp.get('warned_documents', 0))} indexed with a warning: {esc(kinds)}</p>")
    if ls.get("skipped"):
        out += (f"<p class='muted skipped'>skipped {esc((ls.get('counts') or {}).get('skipped', len(ls['skipped'])))} "
                f"file(s) of a type ragops does not read: {esc(', '.join(ls['skipped']))}</p>")
    return out


def _links(links: list[dict[str, str]] | None, up: str = "") -> str:
    return " · ".join(f"<a href='{esc(up + link['href'])}' class='to-{esc(link['kind'])}'>{esc(link['label'])}</a>"
                      for link in links or [])


def _audit(data: list[dict[str, Any]], filters: dict[str, Any] | None = None,
           page: dict[str, Any] | None = None) -> str:
    rows = [[_ts(a["at"]), _who(a["actor"]), _pill(a["action"], ""), esc(a["index"] or ""),
             (f"<a href='audit/{esc(a['id'])}' class='audit-evidence'>evidence</a>" if a.get("id") is not None
              else "") + (" · " + _bias_link(a) if _bias_link(a) else "")
             + (" · " + _links(a.get("links")) if a.get("links") else "")] for a in data]
    return ("<h2 id='audit'>Audit log</h2>" + _table(
        ["when", "who", "action", "index", "evidence and what it concerns"], rows,
        empty="No audit entries match the filters: clear them; entries appear when an index is built or swapped, a "
              "prompt is promoted, drift breaches or a trace is reviewed.",
        ids=[f"audit-{a.get('id')}" for a in data])
        + _pager(page, "audit", filters or {}, "audit"))


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
    ctx = "".join(f"<div class='ctx'><b>[{esc(c.get('n'))}] {esc(c.get('doc_id'))}</b>{_page(c)} "
                  f"{esc(c.get('title') or '')} (score {fmt(c.get('score'))})\n{esc(c.get('text') or '')}</div>"
                  for c in r.get("contexts") or [])
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
            f"<span class='muted'>{_ts(r.get('ts'))} · {esc(r.get('prompt') or 'prompt ?')} · index "
            f"{esc(r.get('index_ref') or '?')} · trace {_sid(tid, 'trace/' + quote(tid, safe=''), 'trace')}"
            f" <a href='trace/{esc(quote(tid, safe=''))}' class='open-trace'>open the trace</a></span> "
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
        return out[0] + ("<p class='empty'>Nothing waiting for review: traces a user disliked or whose answer has an "
                         "unsupported claim appear here once monitor_production has loaded and evaluated them.</p>")
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


def _ref(r: dict[str, Any]) -> str:
    return f"{r['prompt']}@{r['version']}"


def _daily(rows: list[dict[str, Any]]) -> str:
    """Per prompt version and UTC day: volume, hallucination and refusal rates, latency, cost, feedback."""
    if not rows:
        return ""
    body = [[f"{esc(r['prompt'])}@{esc(r['version'])}", esc(r["day"]), esc(r["requests"]),
             f"{_pct(r.get('hallucination_rate'))} <span class='muted'>of {esc(r.get('evaluated', 0))}</span>",
             _pct(r.get("refusal_rate")), fmt(r.get("latency_p50_ms")), fmt(r.get("latency_p95_ms")),
             esc(f"{r.get('tokens_in', 0)} / {r.get('tokens_out', 0)}"), fmt(r.get("cost_usd")),
             f"{_pct(r.get('negative_feedback_rate'))} <span class='muted'>of {esc(r.get('feedback', 0))}</span>",
             f"<a href='traces?{esc(_q({'prompt': _ref(r), 'since': r['day'], 'until': r['day']}))}'>traces</a>"]
            for r in rows]
    return ("<h3 id='production-daily'>By day (UTC)</h3>" + _table(
        ["prompt version", "day", "requests", "hallucination", "refusals", "latency p50 ms", "latency p95 ms",
         "tokens in / out", "cost USD", "negative feedback", ""], body))


def _production(data: dict[str, Any] | None) -> str:
    if not data:
        return ("<h2 id='production'>Production by prompt version</h2><p class='empty'>No production figures yet: "
                "the application records traces with <code>ragops.tracing</code> and monitor_production loads "
                "them (docs/production.md).</p>")
    days = data.get("days", 7)
    rows = []
    for v in data.get("versions") or []:
        h, g = v["hallucination"], v.get("golden") or {}
        gm = g.get("metrics") or {}
        cost = fmt(v.get("cost_usd")) + (f" <span class='muted'>+{esc(v['unpriced_requests'])} unpriced</span>"
                                         if v.get("unpriced_requests") else "")
        ref = f"{v['prompt']}@{v['version']}"
        rows.append([f"{esc(v['prompt'])}@{esc(v['version'])} " + " ".join(_pill(a, "live" if a == "production" else "")
                                                                           for a in v.get("aliases") or [])
                     + f"<br><a href='traces?{esc(_q({'prompt': ref}))}' class='version-traces'>traces</a>",
                     esc(v["requests"]), _pct(v.get("refusal_rate")),
                     f"{_pct(v.get('negative_feedback_rate'))} <span class='muted'>of {esc(v.get('feedback', 0))}</span>",
                     f"{_pct(h['rate'])}{_ci(h['ci'])} <span class='muted'>of {esc(h['n'])}</span>",
                     fmt(v.get("latency_p95_ms")), cost,
                     # named by its date: the run id is the link of the Evaluations table already
                     (f"<a href='eval/{esc(g['run_id'])}' title='{esc(g['run_id'])}'>"
                      f"{esc(g['started_at'][:16].replace('T', ' '))} UTC</a> <span class='muted'>{esc(g['index'])}, "
                      f"{esc(g['questions'])} questions</span>" if g else "–"),
                     *[fmt(gm.get(m)) for m in ("hallucination_rate", "faithfulness", "answer_f1", "hit_rate@5")]])
    out = [f"<h2 id='production'>Production by prompt version</h2><p class='muted'>Traffic of the last {esc(days)} "
           "days; hallucination rate of the online-evaluated answers with its 95% Wilson interval; golden: the "
           "version's latest eval run.</p>",
           _table(["prompt version", "requests", "refusals", "negative feedback", "hallucination [95% CI]",
                   "latency p95 ms", "cost USD", "latest eval run", "golden hallucination_rate", "faithfulness",
                   "answer_f1", "hit_rate@5"], rows,
                  empty="No production traffic in this window: the application records traces with "
                        "<code>ragops.tracing</code> and monitor_production loads them (docs/production.md)."),
           _daily(data.get("daily") or [])]
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

        moves.append([_ts(e["at"]), f"{esc(e['prompt'])} v{esc(e['from_version'])} → v{esc(e['to_version'])}",
                      _pill(e["action"]), _who(e.get("actor") or ""), side(hall), diff(hall), side(neg), diff(neg)])
    out.append(f"<h3>Promotions in production</h3><p class='muted'>Each move of a production alias older than a day: "
               f"the version before (its {esc(days)} days before the move) against the version after (up to "
               f"{esc(days)} days, until the next move). 95% interval of the difference in percentage points "
               f"(Newcombe); fewer than {esc(data.get('min_traces', 20))} evaluated answers (or answers with feedback) "
               "on a side is not enough traffic.</p>")
    out.append(_table(["when", "move", "action", "who", "hallucination before → after (evaluated)", "difference",
                       "negative feedback before → after (with feedback)", "difference"], moves))
    return "".join(out)


BIAS_STATUS = {"flagged": ("gap beyond noise", "failed"), "no_gap": ("no gap beyond noise", "ok"),
               "not_applicable": ("not applicable", "warn")}


def _bias_status(status: Any) -> str:
    text, cls = BIAS_STATUS.get(str(status), (str(status or "?"), ""))
    return _pill(text, cls)


def _bias_gate_cell(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "<span class='muted'>–</span>"
    verdict = _pill("passed", "ok") if gate.get("passed") is True else _pill("failed", "failed")
    return (f"<span title='{esc(gate.get('reason') or '')}'>{verdict} against {esc(gate.get('against') or '?')}</span>")


def _bias_tests(data: dict[str, Any] | None, filters: dict[str, Any] | None = None) -> str:
    """Recent counterfactual bias tests (``bias_tested`` audit entries), newest first, each linking
    its tables (``bias/<test id>``)."""
    rows = []
    for t in (data or {}).get("rows") or []:
        tid = t.get("test_id")
        link = (_sid(tid, f"bias/{tid}", "bias-test") if tid else "<span class='muted'>no test id</span>")
        flagged = int(t.get("flagged") or 0)
        rows.append([_ts(t.get("at")), link, esc(t.get("prompt") or "?"), esc(t.get("index") or "–"),
                     _bias_status(t.get("status")),
                     f"<span class='{'bad' if flagged else ''}'>{flagged}</span>", _bias_gate_cell(t.get("gate")),
                     esc(f"{t.get('questions', '?')} / {t.get('answers', '?')}"), _who(t.get("actor") or "")])
    return ("<h2 id='bias'>Bias tests</h2><p class='muted'>Counterfactual bias tests (<code>ragops eval bias</code>): "
            "each question asked as different people with the same passages; per attribute a table of the groups' "
            "gaps with intervals. Newest first; times in UTC; they follow the time, index and prompt filters.</p>"
            + _table(["when", "test", "prompt", "index", "status", "flagged gaps", "gate", "questions / answers",
                      "who"], rows,
                     empty="No bias tests match the filters: run <code>ragops eval bias --prompt NAME@V</code> (add "
                           "<code>--against NAME@production</code> for the gate rule); each test is kept and listed "
                           "here with its tables.",
                     ids=[f"bias-{t.get('test_id')}" for t in (data or {}).get("rows") or []])
            + _pager(data, "bias", filters or {}, "bias"))


def _bias_head() -> str:
    from ragops.evaluation.bias_report import BIAS_CSS

    return f"<style>{BIAS_CSS}</style>"


def render_bias(t: dict[str, Any]) -> str:
    """One kept bias test (ragops.evaluation.bias_report.load_test): its tables, the way back, its
    audit entry and the prompt's history."""
    from ragops.evaluation.bias_report import bias_tables_html

    tid = t.get("test_id") or "?"
    prompt = str(t.get("prompt") or "")
    pname = prompt.partition("@")[0]
    audit = t.get("audit") or {}
    links = ["<a href='../#bias' class='back-to-bias'>← LLMOps bias tests</a>"]
    if audit.get("id") is not None:
        links.append(f"<a href='../audit/{esc(audit['id'])}' class='bias-audit'>its audit entry</a>")
    if pname:
        links.append(f"<a href='../?{esc(_q({'prompt': pname}))}#prompt-{esc(pname)}'>history of {esc(pname)}</a>")
    meta = (f"<p class='muted'>{_ts(audit.get('at'))} · {_who_up(audit.get('actor') or '', '../')}</p>"
            if audit else "")
    body = (f"<p>{' · '.join(links)}</p><h1>Bias test {_sid(tid)}</h1>{meta}" + bias_tables_html(t))
    return _frame(f"ragops bias test {tid}", body, _bias_head())


def _bias_link(a: dict[str, Any], up: str = "") -> str:
    """The tables of a ``bias_tested`` audit entry (its test id, checked against the id pattern)."""
    from ragops.evaluation.bias_report import valid_test_id

    detail = a.get("detail")
    tid = detail.get("test_id") if isinstance(detail, dict) else None
    if a.get("action") != "bias_tested" or not valid_test_id(tid):
        return ""
    return f"<a href='{esc(up)}bias/{esc(tid)}' class='to-bias'>bias tables of {esc(tid)}</a>"


CHART_HEAD = ("<link rel='stylesheet' href='static/uPlot.min.css'><script src='static/uPlot.iife.min.js'></script>"
              "<script src='static/charts.js'></script>")  # vendored uPlot 1.6.32 (MIT) and our charts


def _frame(title: str, body: str, head: str = "") -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{PAGE_CSS}</style>"
            f"<script>{SCRIPT}</script>{head}</head><body><div id='confirm' role='dialog' aria-label='confirm'><p></p>"
            "<button class='go'>Start the run</button> <button class='cancel'>Cancel</button></div>"
            f"<div id='msg' role='status'></div>{body}</body></html>")


def render_page(data: dict[str, Any], user: str, dags: dict[str, dict[str, Any]] | None = None,
                review: dict[str, Any] | None = None, production: dict[str, Any] | None = None,
                bias: dict[str, Any] | None = None) -> str:
    """``review``: {pending, items} of ragops.production.review; ``production``:
    ragops.production.versions.production_view; ``bias``: ragops.evaluation.bias_report.recent_tests."""
    nav = ("<nav><a href='#indexes'>Indexes</a><a href='#prompts'>Prompts</a><a href='#evals'>Evaluations</a>"
           "<a href='#bias'>Bias tests</a><a href='#production'>Production</a><a href='#review'>Review queue</a>"
           "<a href='#drift'>Drift</a><a href='#quarantine'>Quarantine</a><a href='#audit'>Audit log</a>"
           f"<span class='muted'>signed in as {esc(user)}</span></nav>")
    filters, pages = data.get("filters") or {}, data.get("pages") or {}
    body = (f"<h1>ragops LLMOps</h1>{nav}{_strip(data.get('status'), dags or {})}{_paused(dags or {})}"
            f"{_filters_form(data)}{_indexes(data['indexes'])}{_prompts(data['prompts'], filters)}"
            f"{_evals(data['eval'], filters, pages.get('evals'))}{_bias_tests(bias, filters)}"
            f"{_production(production)}{_review(review)}"
            f"{_drift(data['drift'], [i['name'] for i in data['indexes']], filters, pages.get('drift'))}"
            f"{_quarantine(data['quarantine'])}{_audit(data['audit'], filters, pages.get('audit'))}")
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


def _cited(answer: str, anchor: str, numbers: set[str]) -> str:
    """The answer, escaped, each ``[n]`` of a passage the question retrieved a link to that passage."""
    import re

    out, pos = [], 0
    for m in re.finditer(r"\[(\d{1,3})\]", answer):
        if m.group(1) not in numbers:
            continue
        out.append(esc(answer[pos:m.start()]))
        out.append(f"<a class='cite' href='#{esc(anchor)}-c{m.group(1)}' title='passage [{m.group(1)}]'>"
                   f"[{m.group(1)}]</a>")
        pos = m.end()
    out.append(esc(answer[pos:]))
    return "".join(out)


OPERATIONS = (("latency_ms_p50", "latency p50 ms"), ("latency_ms_p95", "latency p95 ms"),
              ("retrieval_ms_p50", "retrieval p50 ms"), ("generation_ms_p50", "generation p50 ms"),
              ("tokens_in", "tokens in"), ("tokens_out", "tokens out"), ("cost_this_run_usd", "cost of this run USD"),
              ("cost_usd", "cost USD"), ("cost_per_1k_usd", "cost per 1,000 questions USD"),
              ("cached_answers", "cached answers"), ("refused", "refusals"), ("refusal_share", "share refused"),
              ("errors", "errors"))


def _operations(ops: dict[str, Any]) -> str:
    """Latency, tokens, cost and refusals of the run (metrics.json's operations and counts)."""
    known = dict(OPERATIONS)
    rows = [[esc(label), f"<span class='num'>{fmt(ops[k])}</span>"] for k, label in OPERATIONS if k in ops]
    rows += [[f"<code>{esc(k)}</code>", f"<span class='num'>{fmt(v)}</span>"] for k, v in sorted(ops.items())
             if k not in known and isinstance(v, (int, float))]
    return "<h3 id='operations'>latency, tokens, cost, refusals</h3>" + _table(["figure", "value"], rows, empty="no latency, token or cost figures "
                                                            "in this run's metrics.json (a run from before they "
                                                            "were recorded)")


def _by_tag(tags: dict[str, Any]) -> str:
    """The per-tag table: each tag's questions and its mean of every watched metric."""
    if not tags:
        return ""
    metrics = sorted({k for t in tags.values() for k in t if k != "n"})
    rows = [[esc(t), esc(v.get("n")), *[f"<span class='num'>{fmt(v.get(m))}</span>" for m in metrics]]
            for t, v in sorted(tags.items())]
    return "<h3 id='by-tag'>by tag</h3>" + _table(["tag", "questions", *metrics], rows)


def _failed(q: dict[str, Any]) -> bool:
    m = q.get("metrics") or {}
    return bool(q.get("error")) or m.get("hit_rate@5") == 0 or (m.get("hallucination_rate") or 0) > 0 or \
        m.get("refusal_accuracy") == 0


def render_eval(data: dict[str, Any]) -> str:
    r = data["run"]
    report = r.get("report_url", r.get("output_dir"))  # a row from before report_url: the folder was there
    head = (f"<p><a href='../'>← LLMOps</a></p><h1>Evaluation {esc(r['run_id'])} {_pill(r['status'])}</h1>"
            f"<p>{esc(r['prompt'])} on index {esc(r['index'])} v{esc(r['index_version'])}, {esc(r['questions'])} "
            f"questions of {esc(str(r['dataset']).rsplit('/', 1)[-1])}, answered by "
            f"{esc(', '.join(r.get('served_models') or []) or r.get('generator') or '?')}"
            + (f", started {_ts(r['started_at'])}" if r.get("started_at") else "") + ". "
            f"Context texts from {esc(data['context_source'])}.</p><p>{airflow_links(r.get('origin'), '../../')} · "
            + (f"<a href='{esc(quote(str(r['run_id']), safe=''))}/report'>report.html</a>" if report else
               "<span class='muted'>report.html is not on this server</span>")
            + f" · <a href='../?{esc(_q({'prompt': r['prompt']}))}#evals'>runs of {esc(r['prompt'])}</a></p>"
            "<p class='muted'>faithfulness and hallucination_rate: every claim of an answer checked against the "
            "passages (numbers, names, negation, meaning; docs/groundedness.md). Questions in red failed: a missed "
            "relevant document in the top 5, an unsupported claim, a wrong refusal or an error.</p>")
    from ragops.evaluation.compare import GROUPS, metric_group

    groups: dict[str, list[str]] = {}
    for k, v in sorted(r["metrics"].items()):
        groups.setdefault(metric_group(k), []).append(f"<tr><td><code>{esc(k)}</code></td><td class='num'>{fmt(v)}"
                                                      "</td></tr>")
    metrics = "".join(f"<h3>{esc(g)}</h3><table>{''.join(groups[g])}</table>" for g in GROUPS if g in groups)
    questions = data["questions"]
    failed = sum(_failed(q) for q in questions)
    out = [head, f"<h2>Metrics</h2>{metrics}", _operations(data.get("operations") or {}),
           _by_tag(data.get("by_tag") or {}),
           f"<h2 id='questions-head'>Questions</h2><p class='q-tools'><label>sort <select id='q-sort' "
           "aria-label='sort the questions'><option value='id'>by id</option>"
           "<option value='failed'>failures first</option><option value='hit'>hit_rate@5, lowest first</option>"
           "<option value='faith'>faithfulness, lowest first</option><option value='f1'>answer_f1, lowest first"
           "</option></select></label> <label><input type='checkbox' id='only-worse'> "
           f"failures only ({failed})</label> <input type='search' id='q-search' placeholder='search questions' "
           "aria-label='search questions'> <span class='muted'><span id='q-shown'>"
           f"{len(questions)}</span> shown</span></p><div id='questions'>"]
    for q in questions:
        m = q.get("metrics") or {}
        ms = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(m.items())
                       if k in ("hit_rate@5", "ndcg@10", "faithfulness", "hallucination_rate", "answer_f1",
                                "refusal_accuracy"))
        anchor = f"q-{q.get('id')}"
        contexts = q.get("contexts") or []
        numbers = {str(c.get("n")) for c in contexts}
        bad = (q.get("detail") or {}).get("unsupported_claims") or []
        claims = "".join(f"<li><span class='bad'>{esc(c.get('claim'))}</span> <b>{esc(c.get('reason'))}</b> "
                         f"{esc(', '.join(map(str, c.get('detail') or []))[:200])} <span class='muted'>closest "
                         + (f"<a class='cite' href='#{esc(anchor)}-c{esc(c.get('passage'))}'>[{esc(c.get('passage'))}]"
                            "</a>" if str(c.get("passage")) in numbers else f"[{esc(c.get('passage'))}]")
                         + f": {esc(c.get('closest') or '')}</span></li>" for c in bad)
        claims = f"<p><b>unsupported claims</b></p><ul>{claims}</ul>" if claims else ""
        relevant = set(q.get("relevant_doc_ids") or [])
        ctx = "".join(f"<div class='ctx' id='{esc(anchor)}-c{esc(c.get('n'))}'><b"
                      f"{' class=' + chr(39) + 'rel' + chr(39) if c.get('doc_id') in relevant else ''}>"
                      f"[{esc(c.get('n'))}] {esc(c.get('doc_id'))}{' ★' if c.get('doc_id') in relevant else ''}</b>"
                      f"{_page(c)} (score {fmt(c.get('score'))})\n{esc(c.get('text', ''))}</div>" for c in contexts)
        fail = _failed(q)
        retrieved = ", ".join(f"<span class='rel'>{esc(d['doc_id'])} ★</span>" if d["doc_id"] in relevant
                              else esc(d["doc_id"]) for d in q.get("retrieved_docs") or [])
        answer = _cited(str(q.get("answer")), anchor, numbers) if q.get("answer") else esc(q.get("error") or "")
        sort = " ".join(f"data-{k}='{esc(m[name])}'" for k, name in (("hit", "hit_rate@5"), ("faith", "faithfulness"),
                                                                      ("f1", "answer_f1"))
                        if isinstance(m.get(name), (int, float)))
        search = f"{q.get('id')} {q.get('question')} {' '.join(q.get('tags') or [])}".lower()
        out.append(f"<details id='{esc(anchor)}' class='q{' q-worse' if fail else ''}' data-qid='{esc(q.get('id'))}' "
                   f"data-failed='{0 if fail else 1}' {sort} data-text='{esc(search)}'><summary><b>"
                   f"{esc(q.get('id'))}</b> {esc(q.get('question'))} <span class='muted'>{esc(ms)}</span></summary>"
                   f"<p><b>answer</b>{' (refused)' if q.get('refused') else ''}: {answer}</p>"
                   f"{claims}<p><b>reference</b>: {esc(q.get('reference_answer', ''))}</p>"
                   f"<p><b>relevant</b>: {esc(', '.join(q.get('relevant_doc_ids') or []))}; <b>retrieved</b> "
                   f"(★ relevant): {retrieved}</p>{ctx}</details>")
    if not questions:
        out.append("<p class='empty'>This run has no per-question results (it failed before the first answer: see "
                   "its error and its Airflow task log).</p>")
    out.append("</div>")
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
                esc(r.get("purpose") or ""), _ts(r["started_at"]), esc(r["prompt"]),
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
               "<p><label><input type='checkbox' id='only-worse'> only questions that got "
               "worse</label> <input type='search' id='q-search' placeholder='search questions' aria-label='search "
               "questions'> <span class='muted'><span id='q-shown'>"
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


def _value(v: Any) -> str:
    """One evidence value: a number or text as it is, anything nested as JSON that wraps in its box."""
    if isinstance(v, (dict, list)):
        return f"<pre>{esc(json.dumps(v, indent=1, default=str)[:20000])}</pre>"
    return fmt(v)


def _evidence_tables(evidence: dict[str, Any]) -> str:
    """Evidence as tables: scalars in one key/value table, each list of records (a gate's checks,
    the worst questions) as its own table, other nested values as wrapped JSON."""
    scalars = [[f"<code>{esc(k)}</code>", _value(v)] for k, v in evidence.items()
               if not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))]
    out = [_table(["field", "value"], scalars, empty="no further detail")]
    for k, v in evidence.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            cols = list(dict.fromkeys(c for x in v for c in x))
            rows = [[_value(x.get(c)) for c in cols] for x in v]
            if k in ("checks", "failed"):
                rows = [[_pill("failed", "failed") if x.get("passed") is False else
                         _pill("passed", "ok") if x.get("passed") is True else "", *r] for x, r in zip(v, rows, strict=True)]
                cols = ["", *cols]
            out.append(f"<h3>{esc(k)}</h3>" + _table(cols, rows))
    return "".join(out)


def render_audit_entry(a: dict[str, Any]) -> str:
    """One audit entry: who, when, what, the links to what it concerns, its whole evidence."""
    body = (f"<p><a href='../#audit-{esc(a['id'])}'>← LLMOps audit log</a></p><h1>Audit entry {esc(a['id'])}: "
            f"{esc(a['action'])}</h1><p>{_ts(a['at'])} · {_who_up(a.get('actor') or '', '../')} · index "
            f"{esc(a.get('index') or '–')}</p>"
            + (f"<p class='concerns'>concerns: {_links(a.get('links'), '../')}</p>" if a.get("links") else "")
            + (f"<p class='bias-tables'>{_bias_link(a, '../')}</p>" if _bias_link(a) else "")
            + "<h2>Evidence</h2>" + _evidence_tables(a.get("detail") or {}))
    return _frame(f"ragops audit {a['id']}", body)


def render_prompt_event(e: dict[str, Any]) -> str:
    """A prompt-history event (promotion, rejection, rollback): the gate's checks, the worst
    questions, both eval runs, the pair compared, the versions side by side, the gate's audit entry."""
    up = "../../../"
    gate = (f" · <a href='{up}audit/{esc(e['gate_audit_id'])}' class='gate-audit'>the gate's audit entry</a>"
            if e.get("gate_audit_id") else "")
    body = (f"<p><a href='{up}?{esc(_q({'prompt': e['prompt']}))}#prompt-{esc(e['prompt'])}'>← history of "
            f"{esc(e['prompt'])}</a></p><h1>{esc(e['prompt'])}: {esc(e['action'])} "
            f"{_v(e.get('from'))} → {_v(e.get('to'))}</h1>"
            f"<p>{_ts(e['at'])} · alias {esc(e['alias'])} · {_who_up(e.get('actor') or '', up)}</p>"
            f"<p><b>why</b>: {esc(e.get('reason') or '')}</p>"
            f"<p class='concerns'>{_links(e.get('links'), up)}{gate}</p>"
            "<h2>Gate evidence</h2>" + _evidence_tables({k: v for k, v in (e.get("evidence") or {}).items()
                                                          if k != "bias"})
            + _gate_bias(e, up))
    return _frame(f"ragops {e['prompt']} history {e['id']}", body, _bias_head())


def _gate_bias(e: dict[str, Any], up: str) -> str:
    """The gate's bias rule: the candidate's and production's tables when the evidence holds both
    results (``bias``: {candidate, production}); when it holds only the bias check's verdict, where
    to see the tables."""
    from ragops.evaluation.bias_report import bias_tables_html

    ev = e.get("evidence") or {}
    bias = ev.get("bias")
    if isinstance(bias, dict) and any(isinstance(bias.get(k), dict) for k in ("candidate", "production")):
        out = ["<h2 id='gate-bias'>Bias (counterfactual)</h2>"]
        for label in ("candidate", "production"):
            if isinstance(bias.get(label), dict):
                out.append(f"<h3 class='bias-{label}'>{esc(label)}</h3>" + bias_tables_html(bias[label], level=4))
        return "".join(out)
    checks = [c for c in ev.get("checks") or [] if isinstance(c, dict) and c.get("kind") == "bias"]
    if not checks:
        return ""
    from ragops.evaluation.bias_report import valid_test_id

    kept = [(label, str(c.get(f"{label}_test"))) for c in checks for label in ("candidate", "production")
            if valid_test_id(str(c.get(f"{label}_test")))]
    if kept:  # the gate kept both bias tests: link their per-group tables
        return ("<h2 id='gate-bias'>Bias (counterfactual)</h2><p>Per-group tables: " + " · ".join(
            f"<a href='{esc(up)}bias/{esc(tid)}' class='gate-bias-{esc(label)}'>{esc(label)} ({esc(tid)})</a>"
            for label, tid in kept) + "</p>")
    pname = str(e.get("prompt") or "")
    return ("<h2 id='gate-bias'>Bias (counterfactual)</h2><p class='empty'>This gate evidence keeps the bias "
            "check's verdict (in the checks above), not the per-group tables. To see them, run <code>ragops eval bias "
            f"--prompt {esc(pname)}@{esc(e.get('to') or 'V')} --against {esc(pname)}@production</code>; "
            f"the <a href='{esc(up)}?{esc(_q({'prompt': pname}))}#bias'>bias tests of {esc(pname)}</a> list it.</p>")


def _v(version: Any) -> str:
    return esc(f"v{version}") if version else "–"


def _who_up(actor: str, up: str) -> str:
    """_who from a page ``up`` levels below the plugin's root (its Airflow link is relative)."""
    return _who(actor).replace("href='../dags/", f"href='{esc(up)}../dags/")


def _trace_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    def flags(t: dict[str, Any]) -> str:
        out = []
        if t.get("error"):
            out.append(_pill("error", "failed"))
        if t.get("refused"):
            out.append(_pill("refused", ""))
        if t.get("hallucinated") == 1:
            out.append(_pill("unsupported claim", "failed"))
        if t.get("feedback") is not None and t["feedback"] < 0:
            out.append(_pill("disliked", "failed"))
        return " ".join(out)

    return [[_ts(t["ts"]), _sid(t["trace_id"], "trace/" + quote(t["trace_id"], safe=""), "trace"),
             esc(t.get("prompt") or "–"), esc(t.get("index") or "–"), esc(str(t.get("question") or "")[:200]),
             flags(t), fmt(t.get("latency_ms")), fmt(t.get("feedback"))] for t in rows]


def render_traces(data: dict[str, Any]) -> str:
    """A page of production traces (newest first) narrowed by prompt version, index and time."""
    f = data.get("filters") or {}
    what = ", ".join(f"{k} {v}" for k, v in f.items() if k != "per_page") or "all"
    body = (f"<p><a href='./#production'>← LLMOps production</a></p><h1>Production traces</h1>"
            f"<p class='muted'>{esc(what)}; newest first; times in UTC.</p>"
            + _table(["when", "trace", "prompt", "index", "question", "", "latency ms", "feedback"],
                     _trace_rows(data.get("rows") or []),
                     empty="No traces match: the application records them with <code>ragops.tracing</code> and "
                           "monitor_production loads them; widen the time range or clear the filters.")
            + _pager(data, "traces", f, "", base="traces"))
    return _frame("ragops production traces", body)


def render_trace(t: dict[str, Any]) -> str:
    """One production trace: question, retrieved contexts, answer (unsupported claims marked,
    citations linked to their passages), the online evaluation, the user's feedback, the review."""
    ev = t.get("evaluation") or {}
    claims = ev.get("unsupported_claims") or []
    contexts = t.get("contexts") or []
    numbers = {str(c.get("n")) for c in contexts}
    answer = t.get("answer")
    shown = ((_highlight(answer, claims) if claims else _cited(answer, "trace", numbers)) if answer else
             f"<span class='muted'>{esc(t.get('error') or 'no answer')}</span>")
    ctx = "".join(f"<div class='ctx' id='trace-c{esc(c.get('n'))}'><b>[{esc(c.get('n'))}] {esc(c.get('doc_id'))}</b>"
                  f"{_page(c)} {esc(c.get('title') or '')} (score {fmt(c.get('score'))})\n{esc(c.get('text') or '')}</div>"
                  for c in contexts)
    listed = "".join(f"<li><span class='bad'>{esc(c.get('claim'))}</span> <b>{esc(c.get('reason') or '')}</b></li>"
                     for c in claims)
    prompt = t.get("prompt") or ""
    evaluation = ("<p class='empty'>Not evaluated online (monitor_production samples the traces it checks).</p>"
                  if not ev else _table(["check", "value"], [[esc(k), _value(ev.get(k))] for k in (
                      "evaluated_at", "faithfulness", "hallucinated", "citation_validity", "pii", "blocklist",
                      "injection", "judge") if ev.get(k) is not None]))
    fb = ("<p class='muted'>no feedback from the user</p>" if t.get("feedback") is None else
          f"<p><b>{'disliked' if t['feedback'] < 0 else 'liked'}</b> ({fmt(t['feedback'])})"
          + (f": <q>{esc(t['feedback_comment'])}</q>" if t.get("feedback_comment") else "") + "</p>")
    r = t.get("review")
    review = (f"<p>reviewed {_ts(r['reviewed_at'])} by {esc(r['reviewer'])}: {_pill(r['verdict'], '')}"
              + (f"; golden question {esc(r['question_id'])}" if r["verdict"] != "not_a_problem" else "")
              + (f"; answer: {esc(r['reference_answer'])}" if r.get("reference_answer") else "") + "</p>" if r else
              f"<p>waiting for review: <a href='../#review-{esc(t['trace_id'])}' class='to-review'>review it in the "
              "queue</a></p>" if t.get("pending_review") else "<p class='muted'>not in the review queue (no negative "
                                                                "feedback, no unsupported claim)</p>")
    meta = (f"{_ts(t['ts'])} · prompt {esc(prompt or '?')} · index {esc(t.get('index') or '?')}"
            f"{'@v' + esc(t['index_version']) if t.get('index_version') is not None else ''} · model "
            f"{esc(t.get('served_model') or t.get('model') or '?')} · latency {fmt(t.get('latency_ms'))} ms · tokens "
            f"{esc(t.get('tokens_in'))} / {esc(t.get('tokens_out'))} · cost {fmt(t.get('cost_usd'))} USD"
            + (" · answered from the cache" if t.get("cache_hit") else ""))
    body = ("<p><a href='../#review'>← review queue</a> · <a href='../#production'>production</a>"
            + (f" · <a href='../traces?{esc(_q({'prompt': prompt}))}'>traces of {esc(prompt)}</a>" if prompt else "")
            + f"</p><h1>Trace {_sid(t['trace_id'])}</h1><p class='muted'>{meta}</p>"
            f"<h2>Question</h2><p>{esc(t.get('question') or '')}</p>"
            f"<h2>Answer{' (refused)' if t.get('refused') else ''}</h2><p class='answer'>{shown}</p>"
            + (f"<p><b>unsupported claims</b></p><ul>{listed}</ul>" if listed else "")
            + f"<h2>Retrieved contexts ({len(contexts)})</h2>"
            + (ctx or "<p class='empty'>no contexts recorded with this trace</p>")
            + f"<h2>Online evaluation</h2>{evaluation}<h2>Feedback</h2>{fb}<h2>Review</h2>{review}")
    return _frame(f"ragops trace {t['trace_id']}", body)
