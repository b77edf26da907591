#!/usr/bin/env python
"""The semantic answer cache's threshold on question pairs: hits on paraphrases, false hits on near-misses.

Input: ``bench/data/cache_replay.jsonl`` (or ``--data FILE``), one pair a line: ``{"id", "kind":
"paraphrase" | "near_miss", "type", "a", "b"}``. A paraphrase pair asks the same thing in other
words (the cache SHOULD serve a's answer for b); a near-miss pair looks alike but asks something
else: negation, another entity, another number, another action (serving a's answer for b is a
wrong answer). The questions are about the bundled demo corpus (the ragops user guide).

Both sides are embedded as ``ragops.app`` embeds a question (the bundled MiniLM through
``SentenceEncoder``, normalised). For every threshold 0.80 .. 0.99 (step 0.01): the hit rate on
paraphrases (cosine >= threshold) and the false-hit rate on near-misses, for similarity alone
("vector only", what ``cache.lookup`` does without the question text) and with the cache's
meaning guard (``ragops.production.cache.mismatch``: numbers, negation, literals, names, opposite
words), plus the figures at the configured default (``production.cache.threshold``). The
recommended threshold keeps false hits <= 1% with the best hit rate, with a margin: false hits
also <= 1% one step (0.01) below it (ties: the higher threshold).

Then the pairs go through the real ``cache.store`` / ``cache.lookup`` on a temporary SQLite state
store at the default threshold: one scope per pair (must give exactly the figures above), and all
the "a" questions in one scope (what a live cache holds: a "b" may also meet another pair's entry).

Usage::

    .venv/bin/python bench/cache_replay.py        # writes bench/results/cache_replay.{json,md}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
DEFAULT_DATA = H.BENCH_DIR / "data" / "cache_replay.jsonl"
KINDS = ("paraphrase", "near_miss")
THRESHOLDS = [round(0.80 + 0.01 * i, 2) for i in range(20)]
MAX_FALSE_HIT = 0.01
log = logging.getLogger("bench.cache_replay")
# How the guard did on pairs it had not seen yet: figures on the committed set are after the fixes.
FIRST_CONTACT = (
    "Provenance of the committed set (field `batch`): batch 1 (104 paraphrases, 107 near-misses) was written after "
    "the guard's word lists and before any run; its first run gave, guarded, 31.7% hits / 1.9% false hits (2 of 107) "
    "at 0.95 and 24.0% / 0.9% at 0.96. The guard was then corrected (possessives: LangChain's = LangChain; a "
    "number's unit: 30 seconds != 30 minutes; 'one' no longer read as a number). Batch 2 (30 + 35) was written after "
    "that, as held-out pairs: first run, guarded, 40.0% / 2.9% (1 of 35: acquire / release the writer lock) at 0.95 "
    "and 30.0% / 0.0% at 0.96; general opposite pairs (acquire / release, hold / release, tighten / loosen, ...) were "
    "added after it. Pooled first-contact figures, the honest estimate for pairs the guard has not seen: 0.95 gives "
    "33.6% hits and 2.1% false hits (3 of 142), 0.96 gives 25.4% and 0.7% (1 of 142). The tables above are after the "
    "fixes, hence optimistic for the guard.")


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The pairs, checked: every line an object with a known kind and two different questions."""
    pairs, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("kind") not in KINDS or not all(isinstance(row.get(k), str) and row[k].strip() for k in "ab"):
            raise SystemExit(f"{path}:{n}: need kind in {KINDS} and non-empty questions a and b")
        if row["a"] == row["b"] or row["id"] in seen:
            raise SystemExit(f"{path}:{n}: identical questions or duplicate id {row['id']!r}")
        seen.add(row["id"])
        pairs.append(row)
    return pairs


def upper_bound(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of a rate seen k times in n (bisection on the CDF)."""
    if n == 0 or k >= n:
        return 1.0

    def cdf(p: float) -> float:
        return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > 1 - conf else (lo, mid)
    return hi


def rates(pairs: list[dict[str, Any]], t: float, guarded: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"threshold": t}
    for kind in KINDS:
        rows = [p for p in pairs if p["kind"] == kind]
        k = sum(1 for p in rows if p["similarity"] >= t and (not guarded or p["guard"] is None))
        out[kind] = {"served": k, "n": len(rows), "rate": round(k / len(rows), 4) if rows else None}
    out["near_miss"]["upper95"] = round(upper_bound(out["near_miss"]["served"], out["near_miss"]["n"]), 4)
    return out


def recommend(curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best hit rate among thresholds whose false-hit rate is <= 1% both there and one step
    lower (a margin: a near-miss of another set lands a little above or below ours), ties to the
    higher threshold; None when no threshold qualifies."""
    def safe(i: int) -> bool:
        return all(curve[j]["near_miss"]["rate"] is not None and curve[j]["near_miss"]["rate"] <= MAX_FALSE_HIT
                   for j in (i - 1, i) if j >= 0)

    ok = [r for i, r in enumerate(curve) if safe(i)]
    if not ok:
        return None
    return max(ok, key=lambda r: (r["paraphrase"]["rate"], r["threshold"]))


def by_type(pairs: list[dict[str, Any]], t: float, field: str = "type") -> list[dict[str, Any]]:
    rows = []
    for kind in KINDS:
        for typ in sorted({str(p.get(field)) for p in pairs if p["kind"] == kind}):
            ps = [p for p in pairs if p["kind"] == kind and str(p.get(field)) == typ]
            rows.append({"kind": kind, "type": typ, "n": len(ps),
                         "vector_only": sum(p["similarity"] >= t for p in ps),
                         "guarded": sum(p["similarity"] >= t and p["guard"] is None for p in ps),
                         "caught_by_guard": sum(p["similarity"] >= t and p["guard"] is not None for p in ps)})
    return rows


def end_to_end(settings: Any, pairs: list[dict[str, Any]], vecs: dict[str, Any]) -> dict[str, Any]:
    """The pairs through the real cache.store / cache.lookup (state store in ``settings``)."""
    from ragops.production import cache

    lat: list[float] = []
    own: dict[str, Counter[str]] = {m: Counter() for m in ("guarded", "vector_only")}
    for p in pairs:
        key = cache.scope(f"replay-{p['id']}", 1, "rag_answer", 1)
        cache.store(settings, key, p["a"], vecs[p["a"]], None, {"answer": f"answer to {p['id']}"})
        t0 = time.perf_counter()
        hit = cache.lookup(settings, key, vecs[p["b"]], question=p["b"])
        lat.append((time.perf_counter() - t0) * 1000)
        own["guarded"][p["kind"]] += hit is not None
        own["vector_only"][p["kind"]] += cache.lookup(settings, key, vecs[p["b"]]) is not None
    shared = cache.scope("replay-shared", 1, "rag_answer", 1)
    for p in pairs:
        cache.store(settings, shared, p["a"], vecs[p["a"]], None, {"answer": p["id"]})
    outcome: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
    other: list[dict[str, Any]] = []
    shared_lat: list[float] = []
    for p in pairs:
        t0 = time.perf_counter()
        hit = cache.lookup(settings, shared, vecs[p["b"]], question=p["b"])
        shared_lat.append((time.perf_counter() - t0) * 1000)
        if hit is None:
            outcome[p["kind"]]["miss"] += 1
        elif hit["payload"]["answer"] == p["id"]:
            outcome[p["kind"]]["own pair's entry"] += 1
        else:
            outcome[p["kind"]]["another pair's entry"] += 1
            other.append({"id": p["id"], "asked": p["b"], "served_for": hit["question"],
                          "similarity": hit["similarity"]})
    n = {k: sum(1 for p in pairs if p["kind"] == k) for k in KINDS}
    return {"per_pair_scope": {m: {k: {"served": own[m][k], "n": n[k], "rate": round(own[m][k] / n[k], 4)}
                                   for k in KINDS} for m in own},
            "lookup_latency_one_entry": H.latency_summary(lat),
            "shared_scope": {"entries": len(pairs), "outcome": {k: dict(v) for k, v in outcome.items()},
                             "another_pairs_entry": other, "lookup_latency": H.latency_summary(shared_lat)}}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render(r: dict[str, Any], markdown: bool) -> str:
    table = H.md_table if markdown else H.text_table
    d = r["default"]
    head = "# " if markdown else ""
    out = [f"{head}Semantic answer cache: threshold replay", "",
           f"command: `{r['command']}`" if markdown else f"command: {r['command']}", "",
           f"{r['date']}; {r['pairs']['paraphrase']} paraphrase and {r['pairs']['near_miss']} near-miss pairs from "
           f"{r['data']}; model {r['model']}; default threshold {d['threshold']}; load average at start "
           f"{r['machine']['loadavg_at_start']}, at end {r['machine']['loadavg_at_end']}; {r['duration_s']} s", ""]
    rows = []
    for v, g in zip(r["curve"]["vector_only"], r["curve"]["guarded"], strict=True):
        rows.append([f"{v['threshold']:.2f}", pct(v["paraphrase"]["rate"]), pct(v["near_miss"]["rate"]),
                     pct(g["paraphrase"]["rate"]), pct(g["near_miss"]["rate"]),
                     pct(g["near_miss"]["upper95"])])
    out += ["Hit rate on paraphrases and false-hit rate on near-misses by threshold (vector only = similarity "
            "alone; guarded = similarity and `cache.mismatch`, what `cache.lookup` does when given the question):",
            "", table(["threshold", "hits (vector only)", "false hits (vector only)", "hits (guarded)",
                       "false hits (guarded)", "false hits, 95% upper bound (guarded)"], rows), ""]
    rec_rows = []
    for mode in ("vector_only", "guarded"):
        rec = r["recommended"][mode]
        dm = d[mode]
        rec_rows.append([mode.replace("_", " "), f"{d['threshold']}: {pct(dm['paraphrase']['rate'])} / "
                         f"{pct(dm['near_miss']['rate'])}",
                         "none keeps false hits <= 1%" if rec is None else
                         f"{rec['threshold']:.2f}: {pct(rec['paraphrase']['rate'])} / {pct(rec['near_miss']['rate'])}"])
    out += ["Default and recommended threshold (hits / false hits; recommended = best hit rate with false hits "
            "<= 1% there and one step (0.01) lower, ties to the higher threshold):", "",
            table(["mode", "at the default", "recommended"], rec_rows), ""]
    out += [f"By type at the default threshold {d['threshold']} (pairs served):", "",
            table(["kind", "type", "pairs", "vector only", "guarded", "caught by the guard"],
                  [[t["kind"], t["type"], str(t["n"]), str(t["vector_only"]), str(t["guarded"]),
                    str(t["caught_by_guard"])] for t in r["by_type_at_default"]]), ""]
    if any(t["type"] != "None" for t in r["by_batch_at_default"]):
        out += [f"By batch at the default threshold {d['threshold']} (pairs served):", "",
                table(["kind", "batch", "pairs", "vector only", "guarded", "caught by the guard"],
                      [[t["kind"], t["type"], str(t["n"]), str(t["vector_only"]), str(t["guarded"]),
                        str(t["caught_by_guard"])] for t in r["by_batch_at_default"]]), ""]
    e = r["end_to_end"]
    same = r["end_to_end_matches"]
    out += [f"End to end (`cache.store` then `cache.lookup`, SQLite state store, threshold {d['threshold']}), one "
            f"scope per pair: guarded {e['per_pair_scope']['guarded']['paraphrase']['served']}/"
            f"{e['per_pair_scope']['guarded']['paraphrase']['n']} paraphrases and "
            f"{e['per_pair_scope']['guarded']['near_miss']['served']}/{e['per_pair_scope']['guarded']['near_miss']['n']}"
            f" near-misses served; vector only {e['per_pair_scope']['vector_only']['paraphrase']['served']} and "
            f"{e['per_pair_scope']['vector_only']['near_miss']['served']}: "
            f"{'the same as computed above' if same else 'DIFFERENT from the figures computed above'}. "
            f"Lookup p50 {e['lookup_latency_one_entry']['p50_ms']} ms.", "",
            f"All {e['shared_scope']['entries']} 'a' questions in one scope, each 'b' looked up (guarded): "
            f"paraphrases {e['shared_scope']['outcome']['paraphrase']}, near-misses "
            f"{e['shared_scope']['outcome']['near_miss']}; lookup p50 {e['shared_scope']['lookup_latency']['p50_ms']} "
            f"ms, p95 {e['shared_scope']['lookup_latency']['p95_ms']} ms.", ""]
    if e["shared_scope"]["another_pairs_entry"]:
        out += ["Served another pair's entry (judge by eye whether the answer fits):", "",
                table(["pair", "asked", "served the answer of", "similarity"],
                      [[x["id"], H.md_cell(x["asked"]), H.md_cell(x["served_for"]), str(x["similarity"])]
                       for x in e["shared_scope"]["another_pairs_entry"]]), ""]
    fh = [p for p in r["pair_details"] if p["kind"] == "near_miss" and p["similarity"] >= d["threshold"]]
    if fh:
        out += [f"Near-misses at or above {d['threshold']} (vector only would serve them):", "",
                table(["pair", "type", "similarity", "a", "b", "guard"],
                      [[p["id"], p["type"], f"{p['similarity']:.4f}", H.md_cell(p["a"]), H.md_cell(p["b"]),
                        H.md_cell(p["guard"] or "(passes: FALSE HIT)")] for p in fh]), ""]
    cost = [p for p in r["pair_details"] if p["kind"] == "paraphrase" and p["similarity"] >= d["threshold"]
            and p["guard"] is not None]
    if cost:
        out += ["Paraphrases the guard refuses at the default threshold (its cost: one generation each):", "",
                table(["pair", "similarity", "a", "b", "guard"],
                      [[p["id"], f"{p['similarity']:.4f}", H.md_cell(p["a"]), H.md_cell(p["b"]), H.md_cell(p["guard"])]
                       for p in cost]), ""]
    out += r["notes"]
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the pairs (JSONL)")
    H.add_common_args(ap, dataset=False, limit=False)
    args = H.check_common_args(ap, ap.parse_args())
    H.setup_logging(args.verbose, log)
    started, load_start = H.utc_now(), H.load_at_start(log)
    pairs = read_pairs(args.data)
    with H.workspace("ragops-cache-replay-", args.keep_tmp, log) as tmp:
        settings = H.open_settings(tmp / "data")
        settings = settings.replace(production=dataclasses.replace(
            settings.production, cache=dataclasses.replace(settings.production.cache, enabled=True)))
        from ragops.embedding import Embedder
        from ragops.llm import SentenceEncoder
        from ragops.production.cache import mismatch

        encoder = SentenceEncoder(Embedder(settings.embedding))
        texts = list(dict.fromkeys(q for p in pairs for q in (p["a"], p["b"])))
        t0 = time.perf_counter()
        vecs = dict(zip(texts, encoder(texts), strict=True))
        log.info("embedded %d questions in %.1fs", len(texts), time.perf_counter() - t0)
        for p in pairs:
            p["similarity"] = round(float(vecs[p["a"]] @ vecs[p["b"]]), 6)
            p["guard"] = mismatch(p["a"], p["b"])
        default = settings.production.cache.threshold
        curve = {m: [rates(pairs, t, m == "guarded") for t in THRESHOLDS] for m in ("vector_only", "guarded")}
        at_default = {"threshold": default, **{m: rates(pairs, default, m == "guarded")
                                               for m in ("vector_only", "guarded")}}
        e2e = end_to_end(settings, pairs, vecs)
    matches = all(e2e["per_pair_scope"][m][k]["served"] == at_default[m][k]["served"]
                  for m in ("vector_only", "guarded") for k in KINDS)
    rec = {m: recommend(curve[m]) for m in curve}
    n_near = at_default["guarded"]["near_miss"]["n"]
    notes = [
        f"Notes: with 0 false hits in {n_near} near-misses the 95% upper bound of the false-hit rate is still "
        f"{pct(upper_bound(0, n_near))}: a rate of 1% cannot be shown with a set this size, only not contradicted.",
        "`ragops.app.answer` passes the question, so the application runs the guarded column; a caller of "
        "`cache.lookup` without `question=` gets the vector-only one."]
    if args.data.resolve() == DEFAULT_DATA.resolve():
        notes.insert(1, FIRST_CONTACT)
    result = {"benchmark": "cache_replay", "command": H.command_line(SCRIPT), "date": H.iso(started),
              "duration_s": round((H.utc_now() - started).total_seconds(), 1), "data": str(args.data),
              "model": settings.embedding.model, "machine": H.basic_machine(load_start),
              "pairs": dict(Counter(p["kind"] for p in pairs)), "default": at_default, "curve": curve,
              "recommended": rec, "by_type_at_default": by_type(pairs, default),
              "by_batch_at_default": by_type(pairs, default, "batch"), "end_to_end": e2e,
              "end_to_end_matches": matches, "notes": notes, "pair_details": pairs}
    H.write_results(args.results_dir, "cache_replay", result, render(result, True))
    print(render(result, False))
    print(f"results: {args.results_dir / 'cache_replay.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
