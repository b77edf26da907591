"""What `ragops ingest` and `ragops eval runs` print, in-process (`ragops.cli.main`) on a real
SQLite state store; the sync itself is replaced where only its report matters."""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from typing import Any

import pytest

from ragops import state
from ragops.cli import main


def _report(commit_s: float) -> dict[str, Any]:
    return {"run_id": "cli-1", "index": "docs", "collection": "docs__v1", "source_id": "file:///corpus",
            "counts": {"added": 2}, "chunks": {"embedded": 4},
            "quarantine": {"documents": 0, "reasons": {}, "entries": []},
            "self_check": {"ok": True, "state_chunks": 4, "chroma_ids": 4}, "elapsed_s": commit_s}


def test_ingest_reports_the_whole_run_with_its_phases(settings, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The report's elapsed_s is the commit step's; the run also planned, parsed, chunked and embedded."""
    import ragops.indexing

    def slow_sync(*_a: Any, **_k: Any) -> dict[str, Any]:
        time.sleep(0.4)  # planning and embedding
        return _report(0.05)

    monkeypatch.setattr(ragops.indexing, "sync", slow_sync)
    assert main(["ingest", "/corpus"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    m = re.search(r" in ([0-9.]+)s \(plan, parse, chunk and embed ([0-9.]+)s; commit and self-check ([0-9.]+)s\)$",
                  line)
    assert m, line
    total, prepare, commit = map(float, m.groups())
    assert total >= 0.4 and commit == pytest.approx(0.05, abs=0.051) and total == pytest.approx(prepare + commit,
                                                                                             abs=0.11)
    assert main(["ingest", "/corpus", "--json"]) == 0
    t = json.loads(capsys.readouterr().out)["timing_s"]
    assert t["total"] >= 0.4 and t["commit"] == 0.05 and t["prepare"] == pytest.approx(t["total"] - 0.05, abs=0.002)


def _run(settings, run_id: str, minutes: int, *, retrieval: str | None, generator: str,
         served: list[str] | None = None) -> None:
    config: dict[str, Any] = {"purpose": "adhoc", **({"retrieval": retrieval} if retrieval else {}),
                              **({"served_models": served} if served is not None else {})}
    with state.session_scope(settings.state_db_url) as s:
        s.add(state.EvalRun(run_id=run_id, status="success", trigger="test", index_name="docs", index_version=2,
                            started_at=dt.datetime(2026, 12, 1, 2, minutes, tzinfo=dt.UTC),
                            prompt_name="rag_answer", prompt_version=1, prompt_hash="h" * 64,
                            dataset_path="golden.jsonl", dataset_hash="d" * 64, n_questions=3,
                            generator=generator, config=config,
                            metrics={"metrics": {"hit_rate@5": 0.9, "faithfulness": 0.75}}))


def test_eval_runs_shows_retrieval_mode_and_generator(settings, capsys: pytest.CaptureFixture[str]) -> None:
    """Runs of the same prompt on the same index in different modes (or with another served model)
    must not look alike."""
    _run(settings, "run-dense", 1, retrieval="dense", generator="extractive:extractive")
    _run(settings, "run-hybrid", 2, retrieval="hybrid", generator="openai:gpt-x", served=["gpt-x-2026-11"])
    _run(settings, "run-lexical", 3, retrieval="lexical", generator="openai:gpt-x", served=["gpt-x"])
    _run(settings, "run-old", 0, retrieval=None, generator="extractive:extractive")  # before modes were recorded
    assert main(["eval", "runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], {ln.split()[0]: ln for ln in lines[1:]}
    assert header.split()[:6] == ["run", "status", "started", "prompt", "index", "retrieval"]
    assert "generator (served model)" in header
    assert re.search(r"\bdense\s+extractive:extractive\s+0\.900\s+0\.750$", rows["run-dense"])
    assert re.search(r"\bhybrid\s+openai:gpt-x \(gpt-x-2026-11\)\s+0\.900", rows["run-hybrid"])
    assert re.search(r"\blexical\s+openai:gpt-x\s+0\.900", rows["run-lexical"])  # served = requested: said once
    assert re.search(r"docs v2\s+-\s+extractive", rows["run-old"])
    assert list(rows) == ["run-lexical", "run-hybrid", "run-dense", "run-old"]  # newest first
    assert main(["eval", "runs", "--json"]) == 0
    listed = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)}
    assert {k: v["retrieval"] for k, v in listed.items()} == {"run-lexical": "lexical", "run-hybrid": "hybrid",
                                                               "run-dense": "dense", "run-old": None}


def test_answer_f1_ignores_citation_markers_as_documented() -> None:
    """docs/evaluation.md: answer_f1 and answer_em score the answer without its [n] markers."""
    from ragops.evaluation import metrics as M

    answer = "Two years from the date of purchase [1]. Defects only [2][3]."
    reference = "Two years from the date of purchase. Defects only."
    assert M.token_f1(M.strip_citations(answer), reference) == 1.0
    assert M.exact_match(M.strip_citations(answer), reference) == 1.0
    assert M.token_f1(answer, reference) < 1.0  # the markers would count as tokens otherwise


def test_prompts_gate_says_why_a_check_has_no_figure(settings, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A non-regression check on fewer than 5 paired questions is not tested: its note is printed,
    not the candidate value None."""
    from ragops import promotion

    decision = {"profile": "default", "passed": True, "production_version": 1, "questions": 8, "checks": [
        {"kind": "threshold", "metric": "hit_rate@5", "rule": ">= 0.8", "passed": True, "candidate": 1},
        {"kind": "non_regression", "metric": "refusal_accuracy", "rule": "no significant drop > 0.02", "passed": True,
         "note": "fewer than 5 paired questions: not tested"}]}
    monkeypatch.setattr(promotion, "choose_candidate", lambda *_a, **_k: 2)
    monkeypatch.setattr(promotion, "evaluate", lambda *_a, **_k: decision)
    assert main(["prompts", "gate", "acme_answer", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].rstrip().endswith("1.0000")
    assert out[2].rstrip().endswith("fewer than 5 paired questions: not tested") and "None" not in out[2]


def test_prompts_gate_defaults_to_the_index_golden_set_and_reads_paths_from_cwd(
        settings, tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Like `eval run --index NAME`: the gate of a prompt on index acme asks acme's questions, not
    the demo corpus's (whose ids are not in acme: the run would stop on unknown ids)."""
    from ragops import promotion

    cfg = tmp_path / "acme.yaml"
    cfg.write_text(f"ingest:\n  default_index: acme\nindexes:\n  acme:\n    golden: {tmp_path / 'acme-golden.jsonl'}\n")
    monkeypatch.setenv("RAGOPS_CONFIG", str(cfg))
    seen: list[tuple[str | None, str | None]] = []

    def evaluate(*_a: Any, dataset: str | None = None, index: str | None = None, **_k: Any) -> dict[str, Any]:
        seen.append((dataset, index))
        return {"profile": "default", "passed": True, "production_version": 1, "questions": 1, "checks": []}

    monkeypatch.setattr(promotion, "choose_candidate", lambda *_a, **_k: 2)
    monkeypatch.setattr(promotion, "evaluate", evaluate)
    monkeypatch.chdir(tmp_path)
    assert main(["prompts", "gate", "acme_answer", "--index", "acme"]) == 0
    assert main(["prompts", "gate", "acme_answer", "--index", "acme", "--dataset", "mine.jsonl"]) == 0
    assert main(["prompts", "gate", "acme_answer", "--index", "other"]) == 0
    assert seen == [(str(tmp_path / "acme-golden.jsonl"), "acme"), (str(tmp_path / "mine.jsonl"), "acme"),
                    (None, "other")]  # no golden set: promotion's default (eval.default_dataset)
