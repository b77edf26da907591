"""The bias test's tables (issue 25): in the standalone report (``ragops eval bias --html``), on the
LLMOps page's ``/bias/<test id>`` (listed in the page's Bias tests section, linked from its audit
entry) and on a gate's evidence page.

Results are made with ``bias.analyse`` on synthetic values (one group refused far more often: a
real flag; answer length alike for all: no flag) and kept with ``bias.record`` on a real SQLite
state store and data directory; the page is FastAPI's TestClient on the plugin's app (sign-in
replaced by a fixed user, as in test_llmops_http)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragops.evaluation.bias import analyse, record
from ragops.evaluation.bias_report import bias_tables_html, valid_test_id, write_bias_report
from tests.unit.test_eval_runner import env  # noqa: F401 - a fixture: a real index and golden set
from tests.unit.test_llmops_http import _User, get

EVIL = "<script>alert('x')</script>"
GROUPS = ["women", "men", "nonbinary"]


def _values() -> dict[str, dict[str, dict[str, float]]]:
    rng = np.random.default_rng(3)
    refusal = {f"q{i}": {"women": float(i < 15), "men": 0.0, "nonbinary": 0.0} for i in range(20)}
    words = {f"q{i}": {g: float(20 + rng.integers(0, 3)) for g in GROUPS} for i in range(20)}
    extra = {f"q{i}": {g: float(rng.random()) for g in GROUPS} for i in range(20)}  # a metric the renderer never saw
    return {"refusal_rate": refusal, "answer_words": words, "sentiment_like": extra}


def make_result(dataset: str = "/srv/secret/golden.jsonl") -> dict[str, Any]:
    rows = analyse(_values(), GROUPS, samples=500)
    flagged = [r for r in rows if r["flagged"]]
    return {"prompt": "rag_answer@2", "index": "docs", "dataset": dataset, "questions": 20, "answers": 120,
            "terms": "/srv/secret/terms.yaml", "status": "flagged" if flagged else "no_gap", "attributes": [
                {"attribute": "gender", "status": "tested", "questions": 20, "groups": GROUPS, "rows": rows,
                 "flagged": flagged, "verdict": "gap beyond noise" if flagged else "no gap beyond noise",
                 "examples": [{"question": "q1", "group": "women", "variant": "How does she reset SSO?",
                               "answer": EVIL, "refused": True},
                              {"question": "q1", "group": "men", "variant": "How does he reset SSO?",
                               "answer": "Open the admin panel.", "refused": False}]},
                {"attribute": "religion", "status": "not_applicable", "questions": 0,
                 "reason": "no question mentions one of its terms and it has no template", "rows": [],
                 "verdict": "not applicable"}]}


def row_html(html: str, group: str) -> str:
    m = re.search(rf"<tr data-group='{group}'>(.*?)</tr>", html, flags=re.S)
    assert m, f"no row of {group}"
    return m.group(1)


def cell_html(row: str, metric: str) -> str:
    m = re.search(rf"<td data-metric='{metric}'[^>]*>(.*?)</td>", row, flags=re.S)
    assert m, f"no cell of {metric}"
    return m.group(0)


def section_html(html: str, attribute: str) -> str:
    m = re.search(rf"<section class='bias-attr[^']*' data-attribute='{attribute}'>(.*?)</section>", html, flags=re.S)
    assert m, f"no section of {attribute}"
    return m.group(1)


def test_flagged_cells_carry_the_gap_badge_and_only_they() -> None:
    result = make_result()
    rows = result["attributes"][0]["rows"]
    flags = {(r["group"], r["metric"]): r["flagged"] for r in rows}
    assert flags[("women", "refusal_rate")] is True  # the synthetic bias is found ...
    assert not any(v for (g, m), v in flags.items() if m == "answer_words")  # ... and alike lengths are not
    html = bias_tables_html(result)
    women = cell_html(row_html(html, "women"), "refusal_rate")
    assert "GAP" in women and "class='bias-cell flagged'" in women
    r = next(r for r in rows if (r["group"], r["metric"]) == ("women", "refusal_rate"))
    assert f"gap <b>{r['gap']:+.3f}</b> [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" in women and r["gap"] > 0.4
    assert f"mean {r['mean']:.3f}" in women and f"p {r['p']:.3f}" in women
    for (g, m), flagged in flags.items():  # every cell: badge exactly when flagged
        assert ("GAP" in cell_html(row_html(html, g), m)) is flagged, (g, m)
    assert "GAP" not in cell_html(row_html(html, "women"), "answer_words")
    assert "gap beyond noise: refusal_rate" in row_html(html, "women")  # the row's verdict names the metric
    # generic over the metrics: a metric the renderer does not know is a column like the others
    assert "<th data-metric='sentiment_like'>" in html and "data-metric='sentiment_like'" in row_html(html, "men")


def test_not_applicable_says_why_and_never_reads_as_a_pass() -> None:
    html = bias_tables_html(make_result())
    na = section_html(html, "religion")
    assert "not applicable" in na and "no question mentions one of its terms and it has no template" in na
    for word in ("pass", "no gap", "GAP", "bias-ok", "<table"):
        assert word not in na, word
    # a result with nothing tested: the overall status says not applicable too
    only = {**make_result(), "status": "not_applicable", "attributes": [make_result()["attributes"][1]]}
    top = bias_tables_html(only).split("<section")[0]
    assert "not applicable" in top and "no gap" not in top and "bias-ok" not in top


def test_everything_escaped_and_no_server_path() -> None:
    result = make_result()
    result["prompt"] = EVIL
    result["attributes"][0]["groups"] = [*GROUPS]
    html = bias_tables_html(result)
    assert "<script>" not in html and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "How does she reset SSO?" in html and "/srv/secret" not in html and "golden.jsonl" in html


def test_gate_verdict_and_introduced_gaps() -> None:
    result = make_result()
    result["gate"] = {"passed": False, "reason": "1 gap(s) the production version does not have: gender/refusal_rate/women",
                      "introduced": [{"attribute": "gender", "metric": "refusal_rate", "group": "women"}],
                      "against": "rag_answer@1", "against_status": "no_gap"}
    html = bias_tables_html(result)
    gate = re.search(r"<p class='bias-gate'>.*?</p>", html, flags=re.S).group(0)
    assert "against rag_answer@1" in gate and "FAILED" in gate and "PASSED" not in gate
    assert "<li>gender / refusal_rate / women</li>" in html


def test_standalone_report_file(tmp_path: Path) -> None:
    out = write_bias_report({**make_result(), "test_id": "bias-20261207T120000-abcdef"}, tmp_path / "r" / "bias.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and "</html>" in text and "<style>" in text
    assert "bias-20261207T120000-abcdef" in text and "GAP" in cell_html(row_html(text, "women"), "refusal_rate")
    assert "<script>" not in text and "http" not in text  # no external asset


@pytest.mark.parametrize("bad", ["bias-2026", "../../etc/passwd", "bias-20261207T120000-ABCDEF",
                                 "bias-20261207T120000-abcdef.json", "x" * 300])
def test_test_id_pattern(bad: str) -> None:
    assert valid_test_id("bias-20261207T120000-abcdef") and not valid_test_id(bad)


@pytest.fixture
def client(settings, tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    from ragops.airflow import llmops

    llmops.app.dependency_overrides[llmops.authenticated_user] = lambda: _User()
    try:
        with TestClient(llmops.app) as c:
            c.settings = settings
            c.paths = [str(tmp_path), str(settings.data_dir), "/srv/secret"]
            yield c
    finally:
        llmops.app.dependency_overrides.clear()


def test_page_lists_a_recorded_test_and_shows_its_tables(client) -> None:
    empty = get(client, "/").text
    assert "<h2 id='bias'>Bias tests</h2>" in empty and "ragops eval bias --prompt NAME@V" in empty
    result = make_result()
    result["gate"] = {"passed": False, "reason": "1 gap(s)", "introduced": [], "against": "rag_answer@1",
                      "against_status": "no_gap"}
    test_id = record(client.settings, result, actor="bob")
    other = record(client.settings, {**make_result(), "prompt": "other@1", "index": "docs"}, actor="bob")
    assert (Path(client.settings.data_dir) / "bias" / f"{test_id}.json").is_file()
    html = get(client, "/").text
    section = html.split("<h2 id='bias'>")[1].split("<h2 ")[0]
    assert f"href='bias/{test_id}'" in section and f"href='bias/{other}'" in section
    assert section.index(other) < section.index(test_id)  # newest first
    assert "against rag_answer@1" in section and "gap beyond noise" in section
    # the prompt filter narrows the list; the JSON API lists the same
    only = get(client, "/?prompt=rag_answer%402").text.split("<h2 id='bias'>")[1].split("<h2 ")[0]
    assert test_id in only and other not in only
    api = client.get("/api/bias?prompt=rag_answer").json()
    assert [t["test_id"] for t in api["rows"]] == [test_id] and api["rows"][0]["flagged"] >= 1
    # the test's page: its tables, the way back, its audit entry
    page = get(client, f"/bias/{test_id}").text
    assert "<table class='bias-table'>" in page and "GAP" in cell_html(row_html(page, "women"), "refusal_rate")
    assert "href='../#bias'" in page and "not applicable" in section_html(page, "religion")
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    audit_id = re.search(r"href='\.\./audit/(\d+)' class='bias-audit'", page).group(1)
    # the audit entry's evidence page links back to the tables
    entry = get(client, f"/audit/{audit_id}").text
    assert f"href='../bias/{test_id}' class='to-bias'" in entry
    assert f"href='bias/{test_id}' class='to-bias'" in html  # and so does the audit log's row
    # the JSON of the test: the whole result, no server path
    data = client.get(f"/api/bias/{test_id}").json()
    assert data["test_id"] == test_id and data["attributes"][0]["rows"] and data["audit"]["id"] == int(audit_id)
    for text in (json.dumps(data), page, html, entry):
        for p in client.paths:
            assert p not in text, p


def test_bad_or_unknown_test_ids_are_404_without_echo(client) -> None:
    hostile = "bias-<script>alert(1)</script>"
    for url in (f"/bias/{hostile}", "/bias/..%2F..%2Fetc%2Fpasswd", "/bias/bias-20261207T120000-ABCDEF"):
        for r in (get(client, url, 404), client.get("/api" + url)):
            assert r.status_code == 404
            assert "<script>alert(1)" not in r.text and "alert(1)" not in r.text and "passwd" not in r.text
            assert "ABCDEF" not in r.text
    missing = "bias-20261207T120000-abcdef"  # a valid id no test has
    r = get(client, f"/bias/{missing}", 404)
    assert "no result file" in r.text and "LLMOps" in r.text
    assert client.get("/bias/" + "a" * 100).status_code in (404, 422)


def test_gate_evidence_page_shows_both_tables_or_says_where_they_are(client) -> None:
    from ragops import state

    cand, prod = make_result(), {**make_result(), "prompt": "rag_answer@1"}
    check = {"kind": "bias", "metric": "bias (counterfactual)", "passed": False, "note": "1 gap(s)"}
    with state.session_scope(client.settings.state_db_url) as s:
        for evidence in ({"passed": False, "checks": [check], "bias": {"candidate": cand, "production": prod}},
                         {"passed": False, "checks": [check]}):
            s.add(state.PromptEvent(name="rag_answer", alias="production", action="rejected", from_version=1,
                                    to_version=2, actor="alice", reason="gate failed", evidence=evidence))
    with state.session_scope(client.settings.state_db_url) as s:
        ids = [e.id for e in s.query(state.PromptEvent).order_by(state.PromptEvent.id)]
    full = get(client, f"/prompts/rag_answer/history/{ids[-2]}").text
    assert "<h3 class='bias-candidate'>candidate</h3>" in full and "<h3 class='bias-production'>production</h3>" in full
    cand_part = full.split("<h3 class='bias-candidate'>")[1].split("<h3 class='bias-production'>")[0]
    assert "GAP" in cell_html(row_html(cand_part, "women"), "refusal_rate") and "rag_answer@2" in cand_part
    assert full.count("<table class='bias-table'>") == 2 and "/srv/secret" not in full
    only_check = get(client, f"/prompts/rag_answer/history/{ids[-1]}").text
    assert "not the per-group tables" in only_check and "ragops eval bias --prompt rag_answer@2" in only_check


def test_cli_html_writes_the_tables(env, tmp_path: Path, capsys) -> None:  # noqa: F811
    """``ragops eval bias --html FILE`` on a real index (extractive generator): the file holds one
    table per tested attribute with a row per group, and says "not applicable" for the other."""
    import yaml

    from ragops.cli import main

    _, golden, _, _ = env
    terms = tmp_path / "terms.yaml"
    terms.write_text(yaml.safe_dump({"attributes": {
        "religion": {"template": "I am {term}. {question}", "groups": {"christian": ["a Christian"],
                                                                        "muslim": ["a Muslim"]}},
        "pronoun": {"template": None, "groups": {"she": ["she"], "he": ["he"]}}}}, sort_keys=False))
    out = tmp_path / "report" / "bias.html"
    rc = main(["eval", "bias", str(golden), "--prompt", "rag_answer@1", "--index", "docs", "--terms", str(terms),
               "--html", str(out)])
    assert rc in (0, 1)
    assert f"bias report (tables per attribute): {out}" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    religion = section_html(html, "religion")
    assert "<table class='bias-table'>" in religion
    assert "<tr data-group='christian'>" in religion and "<tr data-group='muslim'>" in religion
    assert "data-metric='refusal_rate'" in religion and "data-metric='answer_words'" in religion
    pronoun = section_html(html, "pronoun")
    assert "not applicable" in pronoun and "<table" not in pronoun
