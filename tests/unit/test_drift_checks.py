"""Drift checks of an index (``ragops.drift.checks`` and ``ragops.drift.snapshots``) on real parts:
embedded Chroma, a SQLite state store, the bundled embedding model and real query log files.

A small corpus about Airflow is ingested; then the corpus drifts (cooking recipes join it), the
queries drift (users ask about marine biology), the nightly eval metrics slide. Sample sizes and
permutations are kept small so the whole file runs in well under two minutes on two cores."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ragops import state
from ragops.config import load_settings
from ragops.drift import querylog, snapshots
from ragops.drift.checks import describe_check, golden_set, history, metric_series, run_check, show
from ragops.errors import ConfigError, DriftError
from ragops.indexing import sync
from tests.conftest import doc, write

UTC = dt.UTC
SMALL = {"sample_size": 200, "permutations": 99}  # 99 requested; two_sample raises it to what alpha needs
TOPICS = ["DAG scheduling", "task retries", "worker pools", "sensors and deferrable operators", "XCom passing",
          "connections and hooks", "backfills and catchup", "dynamic task mapping"]
DISHES = ["sourdough bread", "pizza dough", "roast vegetables", "chocolate cake", "vegetable soup", "fresh pasta",
          "banana bread", "apple pie", "lentil curry", "pancakes", "risotto", "lasagna", "scones", "gnocchi",
          "focaccia"]
AIRFLOW_QUESTIONS = [
    ("af-1", "How do I set the schedule of an Airflow DAG?"),
    ("af-2", "How many times does Airflow retry a failed task?"),
    ("af-3", "What limits concurrency in an Airflow worker pool?"),
    ("af-4", "How do XComs pass data between tasks?"),
]
COOKING_QUESTIONS = [
    ("cook-1", "How long should sourdough bread bake in the oven?"),
    ("cook-2", "How much yeast goes into pizza dough?"),
    ("cook-3", "What temperature do I roast vegetables at?"),
]
ON_TOPIC = ["How do I configure {t} in Airflow?", "Why does Airflow {t} not work for my DAG?",
            "What is the best practice for Airflow {t}?", "Can you explain Airflow {t}?",
            "Where are Airflow {t} documented?"]
MARINE = ["coral reefs bleach in warm ocean water", "humpback whales migrate across the ocean",
          "octopuses change colour on the reef", "sea turtles navigate back to their nesting beach",
          "jellyfish sting swimmers in the sea", "deep sea anglerfish glow in the dark", "dolphins sleep in the ocean",
          "kelp forests grow so fast"]
OFF_TOPIC = ["Why do {m}?", "How deep do {m}?", "What do scientists know about how {m}?", "Is it true that {m}?"]
MARINE_WORDS = {w for m in MARINE for w in m.split()}


# ----------------------------------------------------------------------------------------------
# helpers


def configure(settings, golden: Path | None = None, **drift):
    """The settings with drift overrides and (optionally) an index-specific golden set."""
    return dataclasses.replace(settings, drift=dataclasses.replace(settings.drift, **drift),
                               indexes={"docs": {"golden": str(golden)}} if golden else {})


def airflow_corpus(root: Path) -> Path:
    for i, topic in enumerate(TOPICS):
        write(root, f"airflow/{i:02d}.md", doc(f"Airflow {topic}", f"Airflow {topic}", sections=5))
    return root / "airflow"


def cooking_corpus(root: Path, recipes: int = 15) -> Path:
    """Recipes: four sections each, one chunk a section; more chunks than the base corpus has."""
    for i in range(recipes):
        dish = DISHES[i % len(DISHES)]
        body = [f"# Recipe {i}: {dish}", ""]
        for section in ("Ingredients", "Method", "Baking", "Serving"):
            body += [f"## {section}", ""]
            body += [f"For the {dish}, knead the dough with flour, yeast, butter and a pinch of salt, then bake at "
                     f"{170 + i} degrees until golden. Stir the sauce with olive oil, garlic and fresh basil, season "
                     "with pepper, and let it simmer gently before serving with cream and sugar. " * 2, ""]
        write(root, f"cooking/recipe{i:02d}.md", "\n".join(body))
    return root / "cooking"


def golden_file(path: Path, questions: list[tuple[str, str]]) -> Path:
    """A golden set in the format of include/eval/golden/docs.jsonl."""
    path.write_text("".join(json.dumps({"id": qid, "question": q, "reference_answer": "See the guide.",
                                        "relevant_doc_ids": [], "answerable": True, "tags": ["drift-test"]}) + "\n"
                            for qid, q in questions), encoding="utf-8")
    return path


def drift_rows(settings) -> list[state.DriftCheck]:
    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.DriftCheck).order_by(state.DriftCheck.started_at)).scalars())


def audits(settings, action: str) -> list[state.AuditEntry]:
    with state.session_scope(settings.state_db_url) as s:
        return list(s.execute(select(state.AuditEntry).where(state.AuditEntry.action == action)
                              .order_by(state.AuditEntry.id)).scalars())


@pytest.fixture
def indexed(settings, embedder, tmp_path: Path):
    """The Airflow corpus ingested into index docs (16 chunks); no golden set unless a test adds one."""
    s = configure(settings)
    sync(s, str(airflow_corpus(tmp_path / "src")), "docs", trigger="test", embedder=embedder)
    return s


@pytest.fixture(scope="module")
def drifted(tmp_path_factory: pytest.TempPathFactory, embedder):
    """One state store for the corpus-drift tests: the Airflow corpus, its first check (which took
    the reference snapshot), then 15 recipes (60 chunks) ingested into the same index."""
    root = tmp_path_factory.mktemp("drifted")
    data = root / "data"
    s = load_settings(data_dir=data, state_db_url=f"sqlite:///{data / 'state.db'}")
    state.upgrade(s.state_db_url)
    s = configure(s)
    sync(s, str(airflow_corpus(root / "src")), "docs", trigger="test", embedder=embedder)
    first = run_check(s, "docs", checks=["corpus", "documents"], check_id="baseline", embedder=embedder, **SMALL)
    sync(s, str(cooking_corpus(root / "src")), "docs", trigger="test", embedder=embedder)
    return s, first, root


# ----------------------------------------------------------------------------------------------
# snapshots


def test_named_snapshots_take_list_refuse_duplicates_and_remove(indexed, embedder) -> None:
    s = indexed
    snap = snapshots.take(s, "docs", name="before-upgrade", sample_size=60, actor="alice")
    assert snap["name"] == "before-upgrade" and snap["reason"] == "named" and snap["collection"] == "docs__v1"
    assert snap["chunks"] == 40 and snap["vectors"] == 20 and snap["documents"] == 8  # half the chunks at most
    listed = snapshots.listing(s, "docs")
    assert [(x["name"], x["named"], x["created_by"], x["vectors"]) for x in listed] == \
        [("before-upgrade", True, "alice", 20)]
    assert snapshots.listing(s, "other-index") == []

    with pytest.raises(DriftError) as err:
        snapshots.take(s, "docs", name="before-upgrade")
    msg = str(err.value)
    assert "'before-upgrade' already exists" in msg and "pick another name" in msg
    assert "--delete before-upgrade" in msg  # the fix, spelled out
    with pytest.raises(DriftError, match="invalid snapshot name 'no spaces please'"):
        snapshots.take(s, "docs", name="no spaces please")
    assert len(snapshots.listing(s, "docs")) == 1

    # an unknown reference fails the check and names the snapshots there are
    with pytest.raises(DriftError) as err:
        run_check(s, "docs", checks=["corpus"], reference="after-upgrade", check_id="unknown-ref", embedder=embedder,
                  **SMALL)
    msg = str(err.value)
    assert "no snapshot named 'after-upgrade'" in msg and "named snapshots: before-upgrade" in msg
    assert "--name NAME" in msg and "'last'" in msg
    assert show(s, "unknown-ref")["status"] == "failed"  # recorded as failed, with the error
    assert "after-upgrade" in show(s, "unknown-ref")["error"]

    # the named snapshot is a usable reference: compared (not a baseline), and nothing changed
    out = run_check(s, "docs", checks=["corpus", "documents"], reference="before-upgrade", embedder=embedder, **SMALL)
    assert out["reference"] == "before-upgrade" and out["reference_note"] is None
    assert out["checks"]["corpus"]["status"] == "ok" and out["checks"]["documents"]["status"] == "ok"
    assert out["status"] == "ok" and out["breaches"] == []

    removed = snapshots.remove(s, "docs", "before-upgrade", actor="bob")
    assert removed["name"] == "before-upgrade"
    assert [x["name"] for x in snapshots.listing(s, "docs") if x["named"]] == []
    with pytest.raises(DriftError, match="no snapshot 'before-upgrade' for index docs"):
        snapshots.remove(s, "docs", "before-upgrade")
    assert [a.detail["snapshot"] for a in audits(s, "drift_snapshot_deleted")] == ["before-upgrade"]
    # the name is free again
    assert snapshots.take(s, "docs", name="before-upgrade", sample_size=60)["name"] == "before-upgrade"


def test_automatic_snapshots_beyond_keep_are_dropped_named_ones_stay(indexed) -> None:
    s = configure(indexed, snapshot_keep=2)
    snapshots.take(s, "docs", name="keep-me", sample_size=60)
    autos = [snapshots.take(s, "docs", reason="index_swap", sample_size=60)["name"] for _ in range(4)]
    assert len(set(autos)) == 4 and all(a.startswith("index_swap-") for a in autos)
    snapshots.take(s, "docs", name="keep-me-too", sample_size=60)
    listed = snapshots.listing(s, "docs")
    assert sorted(x["name"] for x in listed if x["named"]) == ["keep-me", "keep-me-too"]
    # the two newest automatic ones are kept, newest first
    assert [x["name"] for x in listed if not x["named"]] == [autos[3], autos[2]]
    assert all(x["reason"] == "index_swap" for x in listed if not x["named"])
    # a check's "last" reference is the newest automatic snapshot, not a named one
    ref, arrays, note = snapshots.resolve(s, "docs", "last")
    assert ref["name"] == autos[3] and note is None and arrays["vectors"].shape == (20, 384)


def test_a_reference_event_after_the_newest_snapshot_takes_a_new_one(indexed, embedder) -> None:
    s = indexed
    old = snapshots.take(s, "docs", reason="index_swap", sample_size=60)
    assert snapshots.resolve(s, "docs", "last")[0]["name"] == old["name"]  # nothing happened since
    with state.session_scope(s.state_db_url) as session:
        state.audit(session, "test", "index_swapped", "docs", to="docs__v1")
    event = snapshots.last_reference_event(s, "docs")
    assert event is not None and event[0] == "index_swap"
    out = run_check(s, "docs", checks=["corpus", "documents"], embedder=embedder, **SMALL)
    note = out["reference_note"]
    assert out["reference"] != old["name"] and note is not None
    assert "index swap" in note and "newer than the newest snapshot" in note
    # a reference taken by this run is a baseline, not a comparison
    assert out["checks"]["corpus"]["status"] == "baseline" and out["checks"]["documents"]["status"] == "baseline"
    newest = snapshots.listing(s, "docs")[0]
    assert newest["name"] == out["reference"] and newest["reason"] == "reference_event"
    # resolved again: the new snapshot is newer than the event, so it is reused
    again, _, note = snapshots.resolve(s, "docs", "last")
    assert again["name"] == out["reference"] and note is None


def test_the_reserved_reference_name_last_is_refused_as_a_snapshot_name(indexed) -> None:
    with pytest.raises(DriftError, match="'last'"):
        snapshots.take(indexed, "docs", name="last", sample_size=60)


# ----------------------------------------------------------------------------------------------
# the first check, idempotency, history


def test_first_check_takes_the_reference_and_is_stored(indexed, embedder) -> None:
    s = indexed
    out = run_check(s, "docs", check_id="first", trigger="test", embedder=embedder, **SMALL)  # every check
    assert out["check_id"] == "first" and out["index"] == "docs" and out["collection"] == "docs__v1"
    assert out["status"] == "ok" and out["breaches"] == []
    statuses = {k: v["status"] for k, v in out["checks"].items()}
    assert statuses == {"corpus": "baseline", "documents": "baseline", "queries": "skipped", "gaps": "skipped",
                        "quality": "skipped"}
    assert "taken now" in out["reference_note"] and out["reference"].startswith("first_check-")
    assert out["checks"]["corpus"]["reason"] == "reference taken by this run"
    assert "drift.query_log" in out["checks"]["queries"]["reason"]
    assert "0 nightly eval run(s)" in out["checks"]["quality"]["reason"]
    assert out["targeted"] is None
    assert describe_check("corpus", out["checks"]["corpus"]) == "reference taken by this run"
    # the reference snapshot: every chunk, automatic
    [snap] = snapshots.listing(s, "docs")
    assert snap["name"] == out["reference"] and snap["reason"] == "first_check" and not snap["named"]
    assert snap["vectors"] == 20  # half of the 40 chunks: the other half is left for the current sample
    # stored: the row, the report, results.json; no breach in the audit log
    [row] = drift_rows(s)
    assert (row.check_id, row.status, row.trigger, row.breaches) == ("first", "ok", "test", [])
    assert row.snapshot_id == snap["id"] and row.finished_at is not None and row.error is None
    assert row.params["sample_size"] == 200 and row.params["checks"] == list(s.drift.checks)
    out_dir = s.drift_dir / "first"
    assert Path(out["report"]) == out_dir / "report.html" and row.report_path == out["report"]
    html = (out_dir / "report.html").read_text(encoding="utf-8")
    assert "Drift check first: no drift" in html and "BASELINE" in html and "SKIPPED" in html
    saved = json.loads((out_dir / "results.json").read_text(encoding="utf-8"))
    assert saved["summary"]["check_id"] == "first" and saved["params"]["index"] == "docs"
    assert saved["checks"]["corpus"]["status"] == "baseline"
    assert audits(s, "drift_breach") == []
    assert [a.detail["reason"] for a in audits(s, "drift_snapshot")] == ["first_check"]

    # the same check id again: the stored outcome, no new row, no new snapshot
    again = run_check(s, "docs", check_id="first", embedder=embedder, **SMALL)
    assert again["reused"] is True
    assert {k: v for k, v in again.items() if k != "reused"} == out
    assert len(drift_rows(s)) == 1 and len(snapshots.listing(s, "docs")) == 1

    # a new check without changes compares with the same reference: no breach
    second = run_check(s, "docs", checks=["corpus", "documents"], check_id="second", embedder=embedder, **SMALL)
    assert second["reference"] == out["reference"] and second["reference_note"] is None
    assert second["checks"]["corpus"]["status"] == "ok" and second["checks"]["documents"]["status"] == "ok"
    assert second["status"] == "ok" and "reused" not in second
    assert not second["checks"]["corpus"].get("fired")  # two disjoint halves of one unchanged corpus
    docs_ev = second["checks"]["documents"]["evidence"]
    assert docs_ev["chunks_count"]["change"] == 0 and docs_ev["documents_count"]["change"] == 0
    assert len(snapshots.listing(s, "docs")) == 1

    # history and show
    hist = history(s, "docs")
    assert [h["check_id"] for h in hist] == ["second", "first"]  # newest first
    assert all(h["status"] == "ok" and h["index"] == "docs" and h["breaches"] == [] for h in hist)
    assert history(s, "docs", limit=1)[0]["check_id"] == "second"
    assert history(s, "another-index") == []
    shown = show(s, "second")
    assert shown["status"] == "ok" and shown["params"]["checks"] == ["corpus", "documents"]
    assert shown["results"]["checks"]["corpus"]["status"] == "ok"
    assert shown["results"]["checks"]["corpus"]["tests"]["mmd"]["n_current"] == 20  # the chunks the reference left
    assert shown["results"]["summary"] == second
    assert "null" not in shown["results"]["checks"]["corpus"]["tests"]["mmd"]  # resamples are not stored
    assert set(shown["results"]["checks"]["corpus"]["tests"]["mmd"]["null_quantiles"]) == {"0.5", "0.95", "0.99"}
    with pytest.raises(DriftError, match="no drift check 'nope'"):
        show(s, "nope")


# ----------------------------------------------------------------------------------------------
# corpus drift and targeted questions


def test_corpus_drift_is_a_breach_audited_and_described(drifted, embedder, tmp_path: Path) -> None:
    s, first, _ = drifted
    assert first["checks"]["corpus"]["status"] == "baseline" and first["status"] == "ok"
    s = configure(s, golden_file(tmp_path / "golden.jsonl", AIRFLOW_QUESTIONS + COOKING_QUESTIONS))
    out = run_check(s, "docs", checks=["corpus", "documents"], check_id="corpus-drift", embedder=embedder, **SMALL)
    assert out["status"] == "breach" and out["breaches"] == ["corpus", "documents"]
    assert out["reference"] == first["reference"] and out["reference_note"] is None  # the first check's snapshot
    corpus = out["checks"]["corpus"]
    assert corpus["status"] == "breach" and corpus["fired"]
    level = 0.01 / 3  # alpha split over the three methods
    assert "0.003333" in corpus["rule"]
    for method in corpus["fired"]:
        assert corpus["evidence"][method]["p_value"] <= level
    assert corpus["evidence"]["mmd"]["statistic"] > 0 and corpus["evidence"]["centroid"]["statistic"] > 0
    assert corpus["evidence"]["classifier"]["statistic"] > corpus["evidence"]["classifier"]["threshold"]
    documents = out["checks"]["documents"]
    assert {"documents_count", "chunks_count"} <= set(documents["fired"])
    assert documents["evidence"]["chunks_count"]["reference"] == 40
    assert documents["evidence"]["chunks_count"]["current"] == 40 + 60
    assert documents["evidence"]["documents_count"]["change"] == pytest.approx((8 + 15 - 8) / 8)

    # every breach is in the audit log with the check id
    entries = [a for a in audits(s, "drift_breach") if a.detail["check_id"] == "corpus-drift"]
    assert sorted(a.detail["check"] for a in entries) == ["corpus", "documents"]
    assert all(a.index_name == "docs" and a.detail["report"] == out["report"] for a in entries)
    corpus_entry = next(a for a in entries if a.detail["check"] == "corpus")
    assert corpus_entry.detail["evidence"]["mmd"]["p_value"] == corpus["evidence"]["mmd"]["p_value"]
    assert show(s, "corpus-drift")["breaches"] == ["corpus", "documents"]

    # the one-line description quotes the figures
    line = describe_check("corpus", corpus)
    ev = corpus["evidence"]
    assert f"MMD² {ev['mmd']['statistic']:.4g} p={ev['mmd']['p_value']:.4f}" in line
    assert f"classifier AUC {ev['classifier']['statistic']:.3f}" in line
    assert f"centroid distance {ev['centroid']['statistic']:.4g}" in line
    doc_line = describe_check("documents", documents)
    assert "chunks_count +150.0%" in doc_line and "fired:" in doc_line and "documents_count" in doc_line

    # the golden questions nearest the drifted region: the cooking ones
    targeted = out["targeted"]
    assert targeted["dataset"] == str(tmp_path / "golden.jsonl") and targeted["regions"] == ["corpus"]
    assert targeted["question_ids"] and set(targeted["question_ids"]) <= {q for q, _ in COOKING_QUESTIONS}
    assert len(targeted["question_ids"]) == len(COOKING_QUESTIONS)
    assert all(x >= s.drift.targeted_min_similarity for x in targeted["similarity"])
    assert targeted["similarity"] == sorted(targeted["similarity"], reverse=True)

    # targeted=False: the same breach, no question selection
    quiet = run_check(s, "docs", checks=["corpus"], targeted=False, embedder=embedder, **SMALL)
    assert quiet["breaches"] == ["corpus"] and quiet["targeted"] is None


def test_targeted_questions_are_empty_when_nothing_in_the_golden_set_is_near(drifted, embedder,
                                                                              tmp_path: Path) -> None:
    s, _, _ = drifted
    s = configure(s, golden_file(tmp_path / "airflow-only.jsonl", AIRFLOW_QUESTIONS))
    assert golden_set(s, "docs") == str(tmp_path / "airflow-only.jsonl")
    out = run_check(s, "docs", checks=["corpus"], embedder=embedder, **SMALL)
    assert out["breaches"] == ["corpus"]
    targeted = out["targeted"]
    assert targeted["question_ids"] == []
    assert "no golden question is near the drifted corpus" in targeted["reason"]
    assert "drift.targeted_min_similarity 0.3" in targeted["reason"] and "add questions" in targeted["reason"]
    # a golden set path that does not exist: said so, nothing selected
    missing = configure(s, tmp_path / "missing.jsonl")
    out = run_check(missing, "docs", checks=["corpus"], embedder=embedder, **SMALL)
    assert out["targeted"]["question_ids"] == [] and "has no golden set" in out["targeted"]["reason"]


# ----------------------------------------------------------------------------------------------
# queries and knowledge gaps


def query_rows(end: dt.datetime, n_ref: int, n_cur: int, off_share: float, seed: int = 3) -> tuple[list, list]:
    """Reference window (1.5-6.5 days before end): on-topic questions. Current window (the last
    day): ``off_share`` of them about marine biology."""
    rng = random.Random(seed)
    ref = [{"timestamp": (end - dt.timedelta(days=rng.uniform(1.5, 6.5))).isoformat(), "index": "docs",
            "query": rng.choice(ON_TOPIC).format(t=rng.choice(TOPICS).lower()), "feedback": "up"}
           for _ in range(n_ref)]
    cur = []
    for i in range(n_cur):
        off = i % 10 < off_share * 10
        q = rng.choice(OFF_TOPIC).format(m=rng.choice(MARINE)) if off else \
            rng.choice(ON_TOPIC).format(t=rng.choice(TOPICS).lower())
        cur.append({"timestamp": (end - dt.timedelta(hours=rng.uniform(0.1, 22))).isoformat(), "query": q,
                    "feedback": -1 if off else 1})
    return ref, cur


def test_query_drift_and_knowledge_gaps(indexed, embedder) -> None:
    s = configure(indexed, min_queries=20)
    end = dt.datetime.now(UTC).replace(microsecond=0)
    kw = {"checks": ["queries", "gaps"], "end": end, "targeted": False, "embedder": embedder, **SMALL}

    # 1. no query log at all: skipped, and the reason says which setting to point at the log
    out = run_check(s, "docs", check_id="no-log", **kw)
    assert out["status"] == "ok"
    for name in ("queries", "gaps"):
        assert out["checks"][name]["status"] == "skipped"
        assert "drift.query_log" in out["checks"][name]["reason"] and s.query_log_uri in out["checks"][name]["reason"]
    assert show(s, "no-log")["results"]["query_log"]["files"] == 0

    # 2. a log with too few queries in the current window: skipped with the counts
    ref, cur = query_rows(end, n_ref=30, n_cur=30, off_share=0.8)
    querylog.append(s, ref + cur[:12])
    out = run_check(s, "docs", check_id="too-few", **kw)
    assert out["status"] == "ok"
    assert out["checks"]["queries"]["status"] == "skipped" and out["checks"]["gaps"]["status"] == "skipped"
    assert "30 in the reference window and 12 in the current one" in out["checks"]["queries"]["reason"]
    assert "drift.min_queries = 20" in out["checks"]["queries"]["reason"]
    assert "too few queries in the current window: 12" in out["checks"]["gaps"]["reason"]
    assert describe_check("gaps", out["checks"]["gaps"]) == out["checks"]["gaps"]["reason"]
    stored = show(s, "too-few")["results"]["query_log"]
    assert (stored["reference"], stored["current"], stored["invalid"]) == (30, 12, 0)

    # 3. the whole last day: most queries are about marine biology, which nothing in the index covers
    querylog.append(s, cur[12:])
    out = run_check(s, "docs", check_id="query-drift", **kw)
    assert out["status"] == "breach" and out["breaches"] == ["queries", "gaps"]
    q = out["checks"]["queries"]
    assert q["fired"] and all(q["evidence"][m]["p_value"] <= 0.01 / 3 for m in q["fired"])
    assert q["evidence"]["classifier"]["statistic"] > 0.7
    off_topic_texts = {r["query"] for r in cur if r["feedback"] == -1}
    assert q["novel_examples"] and set(q["novel_examples"]) <= off_topic_texts
    # negative feedback rose from none to 80%: significant on its own
    assert "negative_feedback" in q["fired"]
    assert q["evidence"]["negative_feedback"]["reference"] == 0.0
    assert q["evidence"]["negative_feedback"]["current"] == pytest.approx(0.8)
    assert "negative feedback 0.0% -> 80.0%" in describe_check("queries", q)

    g = out["checks"]["gaps"]
    ev = g["evidence"]
    assert ev["queries"] == 30 and ev["uncovered"] == 24 and ev["share"] == pytest.approx(0.8)
    assert ev["reference_share"] == 0.0  # every on-topic question finds a chunk
    assert ev["share"] > s.drift.max_gap_share and str(s.drift.gap_threshold) in g["rule"]
    assert g["clusters"] and sum(c["size"] for c in g["clusters"]) <= 24
    assert g["clusters"] == sorted(g["clusters"], key=lambda c: -c["size"])
    for c in g["clusters"]:  # uncovered = the marine biology questions; their words name the clusters
        assert set(c["examples"]) <= off_topic_texts
        assert set(c["terms"]) & MARINE_WORDS, c
        assert not {"airflow", "dag", "task"} & set(c["terms"])
    assert "24 of 30 queries uncovered (80.0%; reference window 0.0%)" == describe_check("gaps", g)
    assert describe_check("queries", q).startswith("MMD²")
    entries = [a.detail["check"] for a in audits(s, "drift_breach") if a.detail["check_id"] == "query-drift"]
    assert sorted(entries) == ["gaps", "queries"]
    assert out["windows"]["current"] == [(end - dt.timedelta(days=1)).isoformat(), end.isoformat()]
    assert out["windows"]["reference"][0] == (end - dt.timedelta(days=8)).isoformat()


def test_unchanged_queries_are_not_a_breach(indexed, embedder) -> None:
    s = configure(indexed, min_queries=20)
    end = dt.datetime.now(UTC)
    ref, cur = query_rows(end, n_ref=30, n_cur=30, off_share=0.0, seed=11)
    querylog.append(s, ref + cur)
    out = run_check(s, "docs", checks=["queries", "gaps"], end=end, targeted=False, embedder=embedder, **SMALL)
    assert out["status"] == "ok", out["checks"]
    assert out["checks"]["queries"]["status"] == "ok" and out["checks"]["gaps"]["status"] == "ok"
    assert out["checks"]["gaps"]["evidence"]["uncovered"] == 0
    assert audits(s, "drift_breach") == []


# ----------------------------------------------------------------------------------------------
# quality: control charts over nightly eval runs


def add_runs(settings, series: list[dict], *, prefix: str = "n", start: dt.datetime | None = None,
             purpose: str = "nightly", status: str = "success", dataset_hash: str = "golden-v1",
             retrieval: str = "hybrid") -> None:
    start = start or dt.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    with state.session_scope(settings.state_db_url) as s:
        for i, metrics in enumerate(series):
            at = start + dt.timedelta(days=i)
            s.add(state.EvalRun(run_id=f"{prefix}{i:03d}", status=status, trigger="test", started_at=at,
                                finished_at=at + dt.timedelta(minutes=5), index_name="docs", prompt_name="rag_answer",
                                prompt_version=1, prompt_hash="p" * 16, dataset_path="golden.jsonl",
                                dataset_hash=dataset_hash, n_questions=40, generator="extractive",
                                config={"purpose": purpose, "retrieval": retrieval}, metrics={"metrics": metrics}))


@pytest.fixture
def tiny(settings, embedder, tmp_path: Path):
    """A two-document index: the quality check only needs the index to exist."""
    s = configure(settings)
    write(tmp_path / "tiny", "a.md", doc("Alpha", "Airflow DAG scheduling"))
    write(tmp_path / "tiny", "b.md", doc("Beta", "Airflow task retries"))
    sync(s, str(tmp_path / "tiny"), "docs", trigger="test", embedder=embedder)
    return s


def test_a_slow_decline_of_a_watched_metric_is_a_quality_breach(tiny) -> None:
    s = tiny
    flat = [{"hit_rate@5": 0.9 + (0.002 if i % 2 else -0.002), "ndcg@10": 0.8} for i in range(14)]
    decline = [{"hit_rate@5": round(0.9 - 0.003 * (i + 1), 4), "ndcg@10": 0.8} for i in range(7)]
    series = flat + decline
    for i, m in enumerate(series):
        if i % 3 == 0:
            m["faithfulness"] = 0.95  # not in every run: not charted
    # noise the check must ignore: another dataset (older), a targeted run and a failed run (newer)
    add_runs(s, [{"hit_rate@5": 0.2, "ndcg@10": 0.1}] * 5, prefix="old", dataset_hash="golden-v0",
             start=dt.datetime(2025, 12, 1, tzinfo=UTC))
    add_runs(s, series)
    add_runs(s, [{"hit_rate@5": 0.1, "ndcg@10": 0.1}], prefix="targeted", purpose="targeted",
             start=dt.datetime(2026, 2, 1, tzinfo=UTC))
    add_runs(s, [{"hit_rate@5": 0.1, "ndcg@10": 0.1}], prefix="failed", status="failed",
             start=dt.datetime(2026, 2, 2, tzinfo=UTC))
    ms = metric_series(s, "docs")
    assert [r["run_id"] for r in ms["runs"]] == [f"n{i:03d}" for i in range(21)]
    assert ms["retrieval"] == "hybrid" and ms["dataset"] == "golden.jsonl"
    # every step is small: no single run is out of the 3-sigma limits
    steps = [series[i]["hit_rate@5"] - series[i + 1]["hit_rate@5"] for i in range(13, 20)]
    assert max(steps) < s.drift.min_sigma

    out = run_check(s, "docs", checks=["quality"], check_id="quality-slide")
    qual = out["checks"]["quality"]
    assert out["status"] == "breach" and out["breaches"] == ["quality"]
    assert qual["fired"] == ["hit_rate@5"]
    ev = qual["evidence"]["hit_rate@5"]
    assert set(ev["rules"]) & {"ewma", "run"} and "shewhart" not in ev["rules"]
    assert ev["latest"] == pytest.approx(0.879) and ev["centre"] == pytest.approx(0.9, abs=1e-3)
    assert ev["limit"] == pytest.approx(0.87, abs=1e-3)  # centre - 3 sigma (sigma floored at min_sigma)
    line = describe_check("quality", qual)
    assert line.startswith("hit_rate@5: ") and "newest 0.879" in line and "centre 0.9" in line
    charts = show(s, "quality-slide")["results"]["checks"]["quality"]["charts"]
    assert set(charts) == {"hit_rate@5", "ndcg@10"}  # faithfulness is missing in some runs
    assert charts["ndcg@10"]["status"] == "ok" and charts["ndcg@10"]["rules"] == []
    [entry] = audits(s, "drift_breach")
    assert entry.detail["check_id"] == "quality-slide" and entry.detail["check"] == "quality"
    assert "hit_rate@5" in entry.detail["evidence"]


def test_a_flat_metric_series_is_ok(tiny) -> None:
    s = tiny
    add_runs(s, [{"hit_rate@5": 0.9 + (0.003 if i % 2 else -0.003), "ndcg@10": 0.8 + 0.001 * (i % 3)}
                 for i in range(21)])
    out = run_check(s, "docs", checks=["quality"])
    assert out["status"] == "ok" and out["checks"]["quality"]["status"] == "ok"
    assert describe_check("quality", out["checks"]["quality"]) == "every watched metric within its control limits"


def test_too_few_eval_runs_skip_the_quality_check(tiny) -> None:
    s = tiny
    add_runs(s, [{"hit_rate@5": 0.9 - 0.05 * i} for i in range(s.drift.window_runs + 2)])  # a steep fall, but 9 runs
    out = run_check(s, "docs", checks=["quality"])
    qual = out["checks"]["quality"]
    assert out["status"] == "ok" and qual["status"] == "skipped"
    assert "9 nightly eval run(s)" in qual["reason"] and "at least 10 (drift.window_runs + 3)" in qual["reason"]
    # the tenth run makes it checkable (and the fall is a breach)
    add_runs(s, [{"hit_rate@5": 0.4}], prefix="tenth", start=dt.datetime(2026, 3, 1, tzinfo=UTC))
    assert run_check(s, "docs", checks=["quality"])["checks"]["quality"]["status"] == "breach"


def test_two_nightly_runs_of_one_day_are_one_point_of_the_control_chart(tiny) -> None:
    """Unpausing nightly_eval adds Airflow's catch-up run to the triggered one: one night, one point
    (the newest run of the day), so it can neither fill the history nor weigh twice."""
    s = tiny
    add_runs(s, [{"hit_rate@5": 0.9 - 0.05 * i} for i in range(s.drift.window_runs + 2)])  # 9 nights, a steep fall
    # two more runs of the fifth night, at 01:20 and 02:40 UTC around its 02:00 run (same prompt, served
    # model and index version): the newest, 02:40, is the point of that night
    add_runs(s, [{"hit_rate@5": 0.2}], prefix="catchup", start=dt.datetime(2026, 1, 5, 1, 20, tzinfo=UTC))
    add_runs(s, [{"hit_rate@5": 0.7}], prefix="click", start=dt.datetime(2026, 1, 5, 2, 40, tzinfo=UTC))
    ms = metric_series(s, "docs")
    runs = [r["run_id"] for r in ms["runs"]]
    assert runs == ["n000", "n001", "n002", "n003", "click000", "n005", "n006", "n007", "n008"]
    assert sorted(ms["same_day_left_out"]) == ["catchup000", "n004"]
    qual = run_check(s, "docs", checks=["quality"])["checks"]["quality"]
    assert qual["status"] == "skipped" and "9 nightly eval run(s)" in qual["reason"]  # 11 runs, but 9 nights
    add_runs(s, [{"hit_rate@5": 0.4}], prefix="tenth", start=dt.datetime(2026, 3, 1, tzinfo=UTC))
    assert run_check(s, "docs", checks=["quality"], check_id="nights")["checks"]["quality"]["status"] == "breach"
    qual = show(s, "nights")["results"]["checks"]["quality"]
    assert "one run per UTC day counts" in qual["rule"]
    assert sorted(qual["same_day_left_out"]) == ["catchup000", "n004"]
    assert "catchup000" not in [r["run_id"] for r in qual["runs"]]


# ----------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(("kwargs", "error", "fragments"), [
    ({"checks": ["corpus", "vibes"]}, DriftError, ["vibes", "corpus, documents, queries, gaps, quality"]),
    ({"methods": ["mmd", "t-test"]}, DriftError, ["t-test", "mmd, classifier, centroid"]),
    ({"sample_size": 49}, DriftError, ["49", "at least 50"]),
    ({"permutations": 18}, DriftError, ["18", "at least 19"]),
    ({"current_window": "3x"}, ConfigError, ["'3x'", "90m, 12h, 7d or 2w", "current window"]),
    ({"reference_window": "0d"}, ConfigError, ["'0d'", "90m, 12h, 7d or 2w", "reference window"]),
    ({"check_id": "has spaces/and slashes"}, DriftError, ["'has spaces/and slashes'", "letters, digits"]),
])
def test_bad_arguments_are_refused_before_anything_is_stored(settings, kwargs, error, fragments) -> None:
    with pytest.raises(error) as err:
        run_check(settings, "docs", **kwargs)
    for fragment in fragments:
        assert fragment in str(err.value)
    with state.session_scope(settings.state_db_url) as s:
        assert s.execute(select(func.count()).select_from(state.DriftCheck)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(state.DriftSnapshot)).scalar_one() == 0
    assert not settings.drift_dir.exists()
