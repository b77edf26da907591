"""`ragops index tune`: retrieval mode and fusion weights chosen per index on its own golden set,
stored on the index version, applied with the documented precedence, and tuned on rebuild.

Real parts throughout: the bundled embedding model, embedded Chroma, BM25, a SQLite state store."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from ragops import state
from ragops.errors import RagopsError, UnknownIndexError
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync
from ragops.lifecycle import rebuild
from ragops.registry import load_prompt
from ragops.retrieval import effective, index_status, search
from ragops.tuning import decide, holm, tune
from tests.conftest import write

# Maintenance notes on 24 different topics, each with a reference code made of the same four digits
# in another order: a dense embedding ranks by topic and barely tells 4172 from 4127 (nDCG@10 about
# 0.44 here), BM25 finds the one note that carries the code verbatim.
TOPICS = ["pump housing seals", "valve actuator springs", "conveyor belt rollers", "boiler feed water",
          "air compressor intake", "hydraulic hose fittings", "cooling tower fans", "gearbox lubrication",
          "steam trap maintenance", "motor bearing noise", "pressure gauge calibration", "heat exchanger fouling",
          "filter cartridge replacement", "chiller refrigerant charge", "forklift battery charging",
          "welding torch tips", "paint booth exhaust", "dust collector bags", "packaging line sensors",
          "generator fuel filters", "crane hoist brakes", "water softener resin", "lighting ballast faults",
          "sump pump float switch"]
CODES = [f"PX-{''.join(p)}" for p in itertools.permutations("4172")]
ENTRY = ("# {topic}\n\nNotes on {topic} for the plant maintenance team. Inspect it every month and log what you "
         "find. Reference code {code} applies to this procedure.\n")


def golden(path: Path, codes: list[str]) -> Path:
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "question": f"What does reference code {c} refer to?",
                                          "relevant_doc_ids": [f"item{i:02d}.md"]})
                              for i, c in enumerate(codes)) + "\n", encoding="utf-8")
    return path


def ingest(settings, root: Path, embedder):
    corpus = root / "catalogue"
    for i, (code, topic) in enumerate(zip(CODES, TOPICS, strict=True)):
        write(corpus, f"item{i:02d}.md", ENTRY.format(code=code, topic=topic))
    sync(settings, str(corpus), "codes", trigger="test", embedder=embedder)
    path = golden(root / "codes.jsonl", CODES)
    return settings.replace(indexes={**settings.indexes, "codes": {"golden": str(path)}}), path


@pytest.fixture(scope="module")
def indexed_once(tmp_path_factory: pytest.TempPathFactory, embedder):
    """One ingested catalogue for the tests that do not rebuild (an ingest costs seconds)."""
    from ragops.config import load_settings

    root = tmp_path_factory.mktemp("tuning")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAGOPS_DATA_DIR", str(root / "data"))
        settings = load_settings()
        state.upgrade(settings.state_db_url)
        yield ingest(settings, root, embedder)


@pytest.fixture
def catalogue(indexed_once):
    """The shared catalogue, untuned: every test starts from the settings' retrieval."""
    settings, _ = indexed_once
    with state.session_scope(settings.state_db_url) as s:
        s.execute(sa.update(state.IndexVersion).values(retrieval=None))
        s.execute(sa.delete(state.AuditEntry).where(state.AuditEntry.action == "index_retrieval_tuned"))
    return indexed_once


def ranking(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_lexical_wins_on_part_numbers_and_serves_afterwards(catalogue, embedder) -> None:
    settings, path = catalogue
    r = tune(settings, "codes", embedder=embedder, actor="tester")
    assert r["applied"] and r["questions"] == len(CODES) and r["dataset_sha256"]
    scores = {c["name"]: c["ndcg@10"] for c in r["candidates"]}
    assert scores["lexical"] > scores["dense"] + 0.2, scores
    assert all(c["ci_low"] <= c["ndcg@10"] <= c["ci_high"] for c in r["candidates"])
    assert r["mode"] in ("lexical", "hybrid"), r["reason"]
    chosen = next(c for c in r["comparisons"] if c["candidate"] == r["candidate"] and c["baseline"] == "dense")
    assert chosen["p_holm"] < 0.05 and chosen["significant"]
    assert "beats dense" in r["reason"] or "beats lexical" in r["reason"]

    # stored on the live version, audit-logged, shown in the status
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, "codes")
        assert live.retrieval["mode"] == r["mode"] and live.retrieval["candidate"] == r["candidate"]
        entry = s.execute(sa.select(state.AuditEntry).where(state.AuditEntry.action == "index_retrieval_tuned")
                          ).scalar_one()
        assert entry.actor == "tester" and entry.detail["candidate"] == r["candidate"]
    st = index_status(settings, "codes", check=False)[0]
    assert st["retrieval"]["mode"] == r["mode"] and st["retrieval"]["source"] == "tuned"
    assert st["versions"][-1]["retrieval"]["reason"] == r["reason"]

    # search without a mode now ranks as the tuned mode does, not as retrieval.mode (hybrid 1:1) did
    q = f"What does reference code {CODES[3]} refer to?"
    tuned_hits = search(settings, q, k=10, index="codes", embedder=embedder)
    same = search(settings, q, k=10, index="codes", embedder=embedder, mode=r["mode"])
    assert ranking(tuned_hits) == ranking(same)
    assert [h.score for h in tuned_hits] == [h.score for h in same]  # BM25 or this fusion's scores, nothing else
    assert tuned_hits[0].doc_id == "item03.md"
    before = search(settings, q, k=10, index="codes", embedder=embedder, mode=settings.retrieval.mode)
    if r["candidate"] != "hybrid 1:1":  # what served before the tuning (retrieval.mode: hybrid 1:1)
        assert [h.score for h in tuned_hits] != [h.score for h in before]


def test_dry_run_stores_nothing(catalogue, embedder) -> None:
    settings, _ = catalogue
    r = tune(settings, "codes", apply=False, embedder=embedder)
    assert not r["applied"] and r["mode"] in ("lexical", "hybrid")
    with state.session_scope(settings.state_db_url) as s:
        assert state.live_version(s, "codes").retrieval is None
        assert not s.execute(sa.select(state.AuditEntry).where(
            state.AuditEntry.action == "index_retrieval_tuned")).all()
    assert effective(settings, "codes").source == "settings"


def test_too_few_questions_keep_dense_and_say_why(catalogue, embedder, tmp_path: Path) -> None:
    settings, _ = catalogue
    small = golden(tmp_path / "small.jsonl", CODES[:5])
    r = tune(settings, "codes", str(small), embedder=embedder)
    assert r["mode"] == "dense" and r["questions"] == 5
    assert "only 5 golden question(s)" in r["reason"] and "at least 20" in r["reason"]
    assert effective(settings, "codes").mode == "dense"  # the (untuned) settings say hybrid


def test_no_significant_difference_keeps_dense() -> None:
    from ragops.config import load_settings

    settings = load_settings()
    same = [1.0, 0.5, 0.0, 1.0] * 6
    d = decide(settings, {"dense": same, "lexical": same, "hybrid 1:1": same, "hybrid 1:0.5": same,
                          "hybrid 0.5:1": same})
    assert d["choice"] == "dense" and "no candidate is significantly better than dense" in d["reason"]
    assert all(c["p"] == 1.0 and not c["significant"] for c in d["comparisons"])
    # a small gain on a few questions is not enough either
    better = [*same[:-3], 1.0, 1.0, 1.0]
    d = decide(settings, {"dense": same, "lexical": same, "hybrid 1:1": better, "hybrid 1:0.5": same,
                          "hybrid 0.5:1": same})
    assert d["choice"] == "dense"
    # hybrid clearly better than dense, lexical not: hybrid, and the reason says lexical alone is not
    dense = [0.0] * 12 + [1.0] * 12
    d = decide(settings, {"dense": dense, "lexical": dense, "hybrid 1:1": [1.0] * 24, "hybrid 1:0.5": dense,
                          "hybrid 0.5:1": dense})
    assert d["choice"] == "hybrid 1:1" and "lexical alone is not significantly better" in d["reason"]


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_explicit_and_prompt_modes_override_the_tuned_one(catalogue, embedder) -> None:
    settings, _ = catalogue
    tuned = tune(settings, "codes", embedder=embedder)["mode"]
    other = "dense"
    assert effective(settings, "codes").mode == tuned
    e = effective(settings, "codes", other)
    assert (e.mode, e.source) == (other, "call")
    e = effective(settings, "codes", prompt_mode=other)
    assert (e.mode, e.source) == (other, "prompt")
    assert effective(settings, "codes", "lexical", prompt_mode=other).mode == "lexical"  # call > prompt
    q = f"What does reference code {CODES[7]} refer to?"
    dense = search(settings, q, k=10, index="codes", embedder=embedder, mode="dense")
    assert all(-1 <= h.score <= 1 for h in dense)  # cosine similarities: the dense ranking served
    assert [h.score for h in dense] != [h.score for h in search(settings, q, k=10, index="codes", embedder=embedder)]

    # eval runs: the tuned mode by default, the prompt's own mode over it, the run's over both
    base = load_prompt(settings, "rag_answer@1")
    runs = {}
    for label, prompt in (("tuned", base), ("prompt", dataclasses.replace(base, retrieval_mode=other))):
        s = run_eval(settings, None, prompt, "codes", embedder=embedder, question_ids=["q1"])
        runs[label] = s
        assert s["retrieval_detail"]["source"] == label
    assert runs["tuned"]["retrieval"] == tuned and runs["prompt"]["retrieval"] == other
    with state.session_scope(settings.state_db_url) as s:
        assert s.get(state.EvalRun, runs["tuned"]["run_id"]).config["retrieval"] == tuned


def test_tuned_fusion_weights_apply_to_hybrid(catalogue) -> None:
    settings, _ = catalogue
    with state.session_scope(settings.state_db_url) as s:
        state.live_version(s, "codes").retrieval = {"mode": "hybrid", "dense_weight": 0.5, "lexical_weight": 1.0,
                                                    "rrf_k": 60}
    e = effective(settings, "codes")
    assert (e.mode, e.source, e.retrieval.dense_weight, e.retrieval.lexical_weight) == ("hybrid", "tuned", 0.5, 1.0)
    assert effective(settings, "codes", "hybrid").retrieval.dense_weight == 0.5  # the index's best fusion
    assert effective(settings, "codes", "dense").retrieval.dense_weight == settings.retrieval.dense_weight


def test_clear_errors(catalogue, embedder) -> None:
    tuned_settings, _ = catalogue
    settings = tuned_settings.replace(indexes={k: v for k, v in tuned_settings.indexes.items() if k != "codes"})
    with pytest.raises(UnknownIndexError, match="unknown index 'nope'.*codes"):
        tune(tuned_settings, "nope", embedder=embedder)
    with pytest.raises(RagopsError, match=r"no golden set.*indexes\.codes\.golden.*--dataset"):
        tune(settings, "codes", embedder=embedder)  # settings without indexes.codes.golden
    other = golden(Path(tuned_settings.data_dir) / "other.jsonl", CODES[:3])
    other.write_text(other.read_text().replace("item", "missing"))
    with pytest.raises(RagopsError, match="not this index's golden set"):
        tune(tuned_settings, "codes", str(other), embedder=embedder)


def test_rebuild_tunes_the_new_version_and_a_tuning_failure_does_not_stop_it(settings, embedder,
                                                                             tmp_path: Path) -> None:
    settings, path = ingest(settings, tmp_path, embedder)
    r = rebuild(settings, "codes", actor="test", embedder=embedder)
    assert r["swapped"] and r["tuning"]["mode"] in ("lexical", "hybrid"), r["tuning"]
    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, "codes")
        assert live.version == 2 and live.retrieval["candidate"] == r["tuning"]["candidate"]
        assert live.retrieval["version"] == 2 and live.retrieval["actor"] == "test"
    assert effective(settings, "codes").source == "tuned"

    off = settings.replace(retrieval=dataclasses.replace(settings.retrieval, tune_on_rebuild=False))
    r = rebuild(off, "codes", actor="test", embedder=embedder)
    assert r["swapped"] and "tune_on_rebuild is false" in r["tuning"]["skipped"]
    assert effective(settings, "codes").source == "settings"  # v3 is untuned

    # a golden set none of whose documents is in the index: the gate skips its check, the tuning fails;
    # the swap still happens, untuned, and the report and audit log say why
    stray = golden(path.parent / "stray.jsonl", CODES)
    stray.write_text(stray.read_text().replace("item", "gone"))
    broken = settings.replace(indexes={**settings.indexes, "codes": {"golden": str(stray)}})
    r = rebuild(broken, "codes", actor="test", embedder=embedder)
    assert r["swapped"] and "not this index's golden set" in r["tuning"]["error"], r
    assert "skipped" in r["retrieval"]
    with state.session_scope(settings.state_db_url) as s:
        assert state.live_version(s, "codes").version == 4 and state.live_version(s, "codes").retrieval is None
        swap = s.execute(sa.select(state.AuditEntry).where(state.AuditEntry.action == "index_swapped")
                         .order_by(state.AuditEntry.id.desc()).limit(1)).scalar_one()
        assert "not this index's golden set" in swap.detail["tuning"]["error"]


def test_migration_0008_adds_the_column(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    state.upgrade(url, "0007")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO index_versions (index_name, version, collection, embedding_model, status, "
                             "created_at) VALUES ('docs', 1, 'docs__v1', 'm', 'live', '2026-01-01 00:00:00')"))
    assert state.upgrade(url) == state.head_revision() >= "0008"
    with state.session_scope(url) as s:
        v = s.execute(sa.select(state.IndexVersion)).scalar_one()
        assert v.retrieval is None  # an old version: untuned
        v.retrieval = {"mode": "lexical"}
    with state.session_scope(url) as s:
        assert s.execute(sa.select(state.IndexVersion)).scalar_one().retrieval == {"mode": "lexical"}
    command.downgrade(state.alembic_config(url), "0007")
    assert "retrieval" not in {c["name"] for c in sa.inspect(sa.create_engine(url)).get_columns("index_versions")}
    engine.dispose()
