"""bench/harness.py, the benchmarks' shared module: percentiles against numpy, the results files
round trip, the machine facts, the timers, and the SciFact helpers on a tiny hand-made dataset.

bench/ is not a package (its scripts run as ``python bench/x.py``), so the module is loaded from
its file."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_harness() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("bench_harness", ROOT / "bench" / "harness.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


H = _load_harness()


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101])
@pytest.mark.parametrize("q", [0, 5, 50, 90, 95, 99, 100])
def test_percentile_matches_numpy(n: int, q: float) -> None:
    values = list(np.random.default_rng(n).exponential(10.0, n))
    assert H.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no values"):
        H.percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        H.percentile([1.0], 101)


def test_latency_summary() -> None:
    out = H.latency_summary([4.0, 1.0, 3.0, 2.0])
    assert out == {"n": 4, "p50_ms": 2.5, "p95_ms": 3.85, "mean_ms": 2.5, "max_ms": 4.0}


def test_results_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    targets = [H.Target("speed", 0.91, ">= 0.85", True), H.Target("memory", "skipped", "-", None),
               H.Target("ratio", 1.5, "<= 1.25", False)]
    results = H.run_record("demo", ROOT / "bench" / "demo.py", H.utc_now(), 3, {"path": "/data"}, [0.5, 0.25, 0.1],
                           targets, {"path": Path("/x"), "seconds": 1.25}, versions={"numpy": "2"})
    assert list(results) == ["benchmark", "smoke", "limit", "command", "cwd", "date", "duration_s", "dataset",
                             "machine", "versions", "targets", "all_passed", "figures"]
    assert results["smoke"] is True and results["command"].startswith(".venv/bin/python bench/demo.py")

    def render(r: dict, markdown: bool) -> str:
        tables = [(["check", "value", "target", "result"], H.target_rows(r["targets"])),
                  (["figure", "value"], [["a | b", "1"]])]
        return H.render_report(r, "demo benchmark", "facts line", tables, markdown, notes=["a note"])

    H.publish(tmp_path / "out", results, render)
    json_path, md_path = tmp_path / "out" / "demo.smoke.json", tmp_path / "out" / "demo.smoke.md"
    assert "PASS" in capsys.readouterr().out  # the text report on the console
    back = json.loads(json_path.read_text(encoding="utf-8"))
    assert back["figures"] == {"path": "/x", "seconds": 1.25}  # not JSON by itself: written as text
    assert back["all_passed"] is False and [t["passed"] for t in back["targets"]] == [True, None, False]
    md = md_path.read_text(encoding="utf-8")
    assert md == render(back, True)  # the report renders again from its JSON
    lines = md.splitlines()
    assert lines[0] == "# demo benchmark (SMOKE RUN: --limit, figures not meaningful)"
    assert f"command: `{results['command']}`" in lines
    assert "| speed | 0.91 | >= 0.85 | PASS |" in lines and "| memory | skipped | - | n/a |" in lines
    assert "| a \\| b | 1 |" in lines  # a pipe in a cell is escaped
    assert lines[-3:] == ["a note", "", "all targets met: False"]

    # --render: the .md again from the .json
    md_path.unlink()
    H.rewrite_markdown(json_path, lambda r: f"# {r['benchmark']}\n")
    assert md_path.read_text(encoding="utf-8") == "# demo\n"


def test_result_stem() -> None:
    assert H.result_stem("x", False) == "x"
    assert H.result_stem("x", True) == "x.smoke"
    assert H.result_stem("x", "nojudge") == "x.nojudge"


def test_machine_facts_keys() -> None:
    facts = H.machine_facts([0.5, 0.25, 0.125])
    assert {"nproc", "cpus_usable", "cpu_model", "mem_total_mb", "platform", "python", "torch", "torch_threads",
            "sentence_transformers", "transformers", "chromadb", "ragops", "git_commit", "loadavg_at_start",
            "loadavg_at_end"} <= set(facts)
    assert facts["nproc"] >= 1 and facts["python"].count(".") == 2
    assert facts["loadavg_at_start"] == [0.5, 0.25, 0.12] and len(facts["loadavg_at_end"]) == 3
    short = H.basic_machine([1.0, 2.0, 3.0])
    assert {"cpus", "python", "platform", "git_commit", "loadavg_at_start", "loadavg_at_end"} == set(short)
    assert H.package_version("no-such-distribution-here") is None


def test_timer_and_memory() -> None:
    with H.Timer() as t:
        sum(i * i for i in range(200_000))
        assert t.elapsed() > 0
    assert t.wall > 0 and t.cpu >= 0
    assert H.maxrss_kib() > 0
    assert (H.vm_hwm_kib() or 1) > 0


class _Owner:
    def work(self, x: int) -> int:
        time.sleep(0.001)
        return x + 1

    def outer(self) -> int:
        return self.work(1)


def test_timed_calls_flat_and_nested() -> None:
    original = _Owner.__dict__["work"]
    table = {"f": lambda: 3}
    with H.timed_calls([(_Owner, "work", "work"), (_Owner, "outer", "outer"), (table, "f", "f")]) as spent:
        assert _Owner().outer() == 2 and table["f"]() == 3
    assert set(spent) == {"work", "outer", "f"} and spent["outer"] >= spent["work"] > 0
    with H.timed_calls([(_Owner, "work", "work"), (_Owner, "outer", "outer")], nested=True) as spent:
        _Owner().outer()
    assert set(spent) == {"outer", "outer/work"}
    assert _Owner.__dict__["work"] is original  # the wrappers are gone


def test_scifact_helpers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert H.dataset_or_skip(tmp_path / "absent") is None
    assert "SKIP: BEIR SciFact not found" in capsys.readouterr().out
    ds = tmp_path / "scifact"
    (ds / "qrels").mkdir(parents=True)
    (ds / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": f"text {d}"}) + "\n"
                                             for d in ("d1", "d2", "d3")) + "\n", encoding="utf-8")
    (ds / "queries.jsonl").write_text('{"_id": "q1", "text": "one"}\n{"_id": "q2", "text": "two"}\r\n',
                                      encoding="utf-8")
    (ds / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n", encoding="utf-8")
    assert H.dataset_or_skip(ds) == ds.resolve()

    ids = H.write_copy(ds / "corpus.jsonl", tmp_path / "slice.jsonl", 2)
    assert ids == ["d1", "d2"] and len((tmp_path / "slice.jsonl").read_text().splitlines()) == 2
    queries, qrels = H.test_queries(ds, set(ids))
    assert queries == {"q1": "one"} and qrels == {"q1": {"d1": 1}}
    queries, qrels = H.test_queries(ds, None)
    assert set(queries) == {"q1", "q2"} and qrels["q2"] == {"d3": 1}


def test_isolated_env_and_args(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAGOPS_STATE_DB_URL", "postgresql://real")
    monkeypatch.setenv("RAGOPS_CHROMA_URL", "http://real")
    env = H.isolated_env(tmp_path)
    assert env["RAGOPS_DATA_DIR"] == str(tmp_path) and env["HF_HUB_OFFLINE"] == "1"
    assert "RAGOPS_STATE_DB_URL" not in env and "RAGOPS_CHROMA_URL" not in env

    p = H.add_common_args(argparse.ArgumentParser(), data_dir=True)
    args = H.check_common_args(p, p.parse_args(["--limit", "3", "--results-dir", str(tmp_path)]))
    assert args.limit == 3 and args.results_dir == tmp_path and args.dataset is None and not args.keep_tmp
    with pytest.raises(SystemExit):
        H.check_common_args(p, p.parse_args(["--limit", "0"]))
    with pytest.raises(SystemExit):
        H.check_common_args(p, p.parse_args(["--data-dir", str(ROOT / ".ragops" / "x")]))


def test_forget_eval_caches_clears_the_process_caches_and_only_a_cold_run_the_vector_cache(tmp_path: Path) -> None:
    from ragops.grounding import claims
    from ragops.vectorcache import VectorCache, path_for

    path = path_for(tmp_path, "fp")
    VectorCache(path, "fp").put_many({"x": np.ones(4, dtype=np.float32)})
    claims.facts("The ingest runs daily.")
    H.forget_eval_caches(tmp_path, "fp", disk=False)
    assert claims.facts.cache_info().currsize == 0 and path.is_file()
    H.forget_eval_caches(tmp_path, "fp", disk=True)
    assert not list(path.parent.glob(path.name + "*"))
