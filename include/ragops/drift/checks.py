"""One drift check of an index: corpus, documents, queries, knowledge gaps, quality.

Each part returns a status (``ok``, ``breach``, ``skipped`` with the reason, or ``baseline`` when
the reference was only taken now), its figures and the rule it applied. The check, its figures
and its breaches are stored in the state store (``drift_checks``; every breach also in the audit
log), with an HTML report and ``results.json`` under ``<data_dir>/drift/<check_id>/``. A check id
that already finished is not run again, so a retried task returns the stored outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from ragops import pipelines, state
from ragops.config import DRIFT_CHECKS, DRIFT_METHODS, Settings, check_index_name, parse_window
from ragops.drift import querylog, snapshots
from ragops.drift import stats as S
from ragops.errors import DriftError
from ragops.gates import LOWER_IS_BETTER, one_per_night, run_night_key
from ragops.vectorstore import VectorStore

log = logging.getLogger(__name__)
REGION_SIZE = 50  # vectors that mark the drifted region (least like the reference)
MIN_SAMPLE = 20  # vectors per side below which the corpus tests are not run
QUERY_BATCH = 64  # queries are short: a larger batch embeds them faster at little memory


def _params(settings: Settings, index: str | None, checks: Sequence[str] | None, methods: Sequence[str] | None,
            reference: str | None, reference_window: str | None, current_window: str | None,
            end: dt.datetime | None, sample_size: int | None, permutations: int | None, seed: int | None,
            targeted: bool | None) -> dict[str, Any]:
    d = settings.drift
    index = check_index_name(index or settings.ingest.default_index)
    checks = list(checks or d.checks)
    methods = list(methods or d.methods)
    bad = [c for c in checks if c not in DRIFT_CHECKS]
    if bad:
        raise DriftError(f"unknown check(s) {', '.join(bad)}: choose from {', '.join(DRIFT_CHECKS)}")
    bad = [m for m in methods if m not in DRIFT_METHODS]
    if bad:
        raise DriftError(f"unknown method(s) {', '.join(bad)}: choose from {', '.join(DRIFT_METHODS)}")
    sample = int(d.sample_size if sample_size is None else sample_size)
    perms = int(d.permutations if permutations is None else permutations)
    if sample < 50:
        raise DriftError(f"sample size {sample} is too small for a two-sample test: use at least 50")
    if perms < 19:
        raise DriftError(f"{perms} permutations cannot give a p-value below 0.05: use at least 19 (default "
                         f"{d.permutations})")
    end = (end or dt.datetime.now(dt.UTC))
    end = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    cur_w = parse_window(current_window or d.current_window, "current window")
    ref_w = parse_window(reference_window or d.reference_window, "reference window")
    return {"index": index, "checks": checks, "methods": methods, "reference": reference or "last",
            "reference_window": reference_window or d.reference_window,
            "current_window": current_window or d.current_window, "end": end.isoformat(),
            "current_start": (end - cur_w).isoformat(), "reference_start": (end - cur_w - ref_w).isoformat(),
            "sample_size": sample, "permutations": perms, "seed": d.seed if seed is None else int(seed),
            "alpha": d.alpha, "targeted": d.targeted_eval if targeted is None else bool(targeted)}


def run_check(settings: Settings, index: str | None = None, *, checks: Sequence[str] | None = None,
              methods: Sequence[str] | None = None, reference: str | None = None,
              reference_window: str | None = None, current_window: str | None = None, end: dt.datetime | None = None,
              sample_size: int | None = None, permutations: int | None = None, seed: int | None = None,
              targeted: bool | None = None, check_id: str | None = None, trigger: str = "cli", actor: str = "cli",
              store: VectorStore | None = None, embedder: Any = None) -> dict[str, Any]:
    """Run a drift check and record it. Returns the summary (what XCom and the e-mail need)."""
    state.require_schema(settings.state_db_url)
    p = _params(settings, index, checks, methods, reference, reference_window, current_window, end, sample_size,
                permutations, seed, targeted)
    index = p["index"]
    check_id = check_id or f"drift_{index}_{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}"
    if not re.match(r"^[A-Za-z0-9_.:+-]{1,128}$", check_id):
        raise DriftError(f"invalid check id {check_id!r}: letters, digits and _.:+- only, at most 128")
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.DriftCheck, check_id)
        if row is not None and row.status in ("ok", "breach"):
            log.info("drift check %s already finished (%s): returning its stored outcome", check_id, row.status)
            return dict(row.results.get("summary") or {}, reused=True)
        if row is None:
            row = state.DriftCheck(check_id=check_id, index_name=index)
            s.add(row)
        row.status, row.trigger, row.started_at, row.finished_at = "running", trigger, state.utcnow(), None
        row.params, row.results, row.breaches, row.error = _jsonable(p), {}, [], None
    t0 = time.perf_counter()
    try:
        results, ref = _compute(settings, p, actor, store or VectorStore(settings), embedder)
    except BaseException as exc:
        with state.session_scope(settings.state_db_url) as s:
            row = s.get(state.DriftCheck, check_id)
            row.status, row.finished_at, row.error = "failed", state.utcnow(), f"{type(exc).__name__}: {exc}"
        raise
    breaches = [name for name, r in results["checks"].items() if r.get("status") == "breach"]
    out_dir = settings.drift_dir / check_id
    out_dir.mkdir(parents=True, exist_ok=True)
    from ragops.drift.report import write_report

    report = write_report(out_dir / "report.html", check_id, p, results, breaches)
    results["elapsed_s"] = round(time.perf_counter() - t0, 2)
    stored = _strip(results)
    summary = _summary(check_id, p, stored, breaches, report)
    stored["summary"] = summary
    (out_dir / "results.json").write_text(json.dumps(_jsonable({"params": p, **stored}), indent=2), encoding="utf-8")
    with state.session_scope(settings.state_db_url) as s:
        row = s.get(state.DriftCheck, check_id)
        row.status, row.finished_at = ("breach" if breaches else "ok"), state.utcnow()
        row.snapshot_id = (ref or {}).get("id")
        row.results, row.breaches, row.report_path = _jsonable(stored), breaches, str(report)
        for name in breaches:
            state.audit(s, actor, "drift_breach", index, check_id=check_id, check=name,
                        rule=stored["checks"][name].get("rule"), evidence=stored["checks"][name].get("evidence"),
                        report=str(report))
    log.info("drift check %s: %s in %.1fs (%s)", check_id, "BREACH " + ", ".join(breaches) if breaches else "ok",
             results["elapsed_s"], {k: v.get("status") for k, v in results["checks"].items()})
    return summary


def _compute(settings: Settings, p: dict[str, Any], actor: str, store: VectorStore,
             embedder: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    index = p["index"]
    prof = snapshots.index_profile(settings, index)
    results: dict[str, Any] = {"collection": prof["collection"], "version": prof["version"], "model": prof["model"],
                               "checks": {}}
    ref: dict[str, Any] | None = None
    arrays: dict[str, np.ndarray] = {}
    note = None
    if {"corpus", "documents"} & set(p["checks"]):
        ref, arrays, note = snapshots.resolve(settings, index, p["reference"], actor=actor, store=store)
        results["reference"] = {k: ref[k] for k in ("id", "name", "reason", "created_at", "collection", "vectors",
                                                    "seed", "model")}
        results["reference_note"] = note
    region: dict[str, np.ndarray] = {}
    emb = None
    def embedder_() -> Any:
        nonlocal emb
        if emb is None:
            from ragops.embedding import Embedder

            emb = embedder or Embedder(pipelines.for_index(settings, index).embedding)
        return emb
    encoded: dict[str, tuple[list[querylog.Query], np.ndarray]] = {}
    def window(side: str, log: querylog.LogRead) -> tuple[list[querylog.Query], np.ndarray]:
        """A window's seeded query sample and its vectors, embedded once for both query checks."""
        if side not in encoded:
            qs = _sample_queries(log.queries, p["sample_size"], p["seed"] + (1 if side == "current" else 0))
            encoded[side] = (qs, embedder_().encode([q.text for q in qs], log_every=30, batch_size=QUERY_BATCH))
        return encoded[side]
    fresh = note is not None  # the reference was taken by this run: nothing to compare the corpus with yet
    if "corpus" in p["checks"]:
        results["checks"]["corpus"] = _corpus(settings, p, prof, ref, arrays, fresh, store, region)
    if "documents" in p["checks"]:
        results["checks"]["documents"] = _documents(settings, p, prof, ref, arrays, fresh)
    if {"queries", "gaps"} & set(p["checks"]):
        start, mid, end = (dt.datetime.fromisoformat(p[k]) for k in ("reference_start", "current_start", "end"))
        cur = querylog.read(settings, mid, end, index)
        refq = querylog.read(settings, start, mid, index)
        results["query_log"] = {"uri": settings.query_log_uri, "traces": settings.traces_uri, "files": len(cur.files), "rows": cur.rows,
                                "invalid": cur.invalid, "problems": cur.problems,
                                "current": len(cur.queries), "reference": len(refq.queries)}
        if "queries" in p["checks"]:
            results["checks"]["queries"] = _queries(settings, p, refq, cur, window, region)
        if "gaps" in p["checks"]:
            results["checks"]["gaps"] = _gaps(settings, p, prof, refq, cur, window, store, region)
    if "quality" in p["checks"]:
        results["checks"]["quality"] = _quality(settings, p)
    breached_regions = {k: v for k, v in region.items() if results["checks"].get(k, {}).get("status") == "breach"}
    if p["targeted"] and breached_regions:
        results["targeted"] = _targeted(settings, index, breached_regions, embedder_)
    return results, ref


# ----------------------------------------------------------------------------------------------
# corpus and documents


def _corpus(settings: Settings, p: dict[str, Any], prof: dict[str, Any], ref: dict[str, Any],
            arrays: dict[str, np.ndarray], fresh: bool, store: VectorStore,
            region: dict[str, np.ndarray]) -> dict[str, Any]:
    if ref["model"] != prof["model"]:
        fix = ("the next check with reference 'last' takes a new one" if ref["reason"] != "named" else
               f"take a new named snapshot (`ragops drift snapshot --index {p['index']} --name NAME`) or use 'last'")
        return {"status": "skipped", "reason": f"the reference snapshot {ref['name']} was embedded with {ref['model']} "
                                               f"and the live index with {prof['model']}: vectors of two models are "
                                               f"not comparable; {fix}"}
    # the current sample is drawn from the chunks the reference did NOT sample: shared vectors would
    # pull both samples together (p-values too high, a small index never drifting); an unchanged
    # index is then two disjoint random halves of one corpus, which the permutation test is exact for
    if len(arrays["vectors"]) < MIN_SAMPLE:
        return {"status": "skipped", "reason": f"the reference snapshot {ref['name']} holds {len(arrays['vectors'])} "
                                               f"vectors; the tests need at least {MIN_SAMPLE} (an index of at "
                                               f"least {2 * MIN_SAMPLE} chunks)"}
    taken = set(arrays["ids"].tolist()) if "ids" in arrays else set()
    pool = [c for c in prof["ids"] if c not in taken]
    if len(pool) < MIN_SAMPLE:
        return {"status": "ok" if not fresh else "baseline",
                "reason": f"only {len(pool)} chunk(s) outside the reference sample (at least {MIN_SAMPLE} needed): "
                          "the corpus has hardly changed since the reference", "n_current": len(pool)}
    _, current = snapshots.sample_vectors(settings, prof["collection"], pool, p["sample_size"], p["seed"] + 1, store)
    reference = arrays["vectors"]
    if fresh:
        return {"status": "baseline", "reason": "reference taken by this run", "n_reference": len(reference),
                "n_current": len(current)}
    t0 = time.perf_counter()
    res = S.two_sample(reference, current, p["methods"], alpha=p["alpha"], permutations=p["permutations"],
                       seed=p["seed"])
    out = _verdict(res, "corpus", f"reference snapshot {ref['name']} vs the live collection {prof['collection']}")
    out.update(n_reference=len(reference), n_current=len(current), seconds=round(time.perf_counter() - t0, 2),
               projection=_projection(reference, current, p["seed"]))
    region["corpus"] = _novel(reference, current)
    return out


def _verdict(res: dict[str, Any], what: str, compared: str) -> dict[str, Any]:
    tests = res["tests"]
    fired = [n for n, r in tests.items() if r["significant"]]
    evidence = {n: {"statistic": round(r["statistic"], 6), "p_value": round(r["p_value"], 4),
                    **({"threshold": round(r["threshold"], 4)} if "threshold" in r else {})} for n, r in tests.items()}
    return {"status": "breach" if fired else "ok", "tests": tests, "fired": fired, "compared": compared,
            "rule": f"a test's permutation p-value <= {res['level']:.4g} (alpha {res['alpha']} over "
                    f"{len(tests)} test(s))", "evidence": evidence}


def _projection(reference: np.ndarray, current: np.ndarray, seed: int, limit: int = 400) -> dict[str, Any]:
    """2-D PCA of both samples (at most ``limit`` points each) for the report's scatter plot."""
    rng = np.random.default_rng(seed)
    r = reference[rng.choice(len(reference), min(limit, len(reference)), replace=False)]
    c = current[rng.choice(len(current), min(limit, len(current)), replace=False)]
    Z = np.vstack([r, c]).astype(np.float64)
    Z -= Z.mean(axis=0)
    _, _, vt = np.linalg.svd(Z, full_matrices=False)
    xy = Z @ vt[:2].T
    return {"reference": np.round(xy[:len(r)], 4).tolist(), "current": np.round(xy[len(r):], 4).tolist()}


def _unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def _novel(reference: np.ndarray, current: np.ndarray, k: int = REGION_SIZE) -> np.ndarray:
    """The current vectors least like anything in the reference: where the drift is."""
    best = (_unit(current) @ _unit(reference).T).max(axis=1)
    return current[np.argsort(best)[:k]]


def _documents(settings: Settings, p: dict[str, Any], prof: dict[str, Any], ref: dict[str, Any],
               arrays: dict[str, np.ndarray], fresh: bool) -> dict[str, Any]:
    d = settings.drift
    parts: dict[str, Any] = {}
    fired: list[str] = []
    for name, label in (("n_tokens", "chunk length (tokens)"), ("chunks_per_doc", "chunks per document")):
        r, c = arrays[name], prof[name]
        if len(r) == 0 or len(c) == 0:
            continue
        part = {"label": label, **S.psi(r, c), "ks": S.ks(r, c), "reference_mean": float(np.mean(r)),
                "current_mean": float(np.mean(c)), "reference_values": _hist_values(r), "current_values": _hist_values(c)}
        part["breach"] = part["psi"] >= d.psi_threshold and part["ks"]["p_value"] < d.alpha
        parts[name] = part
        if part["breach"]:
            fired.append(name)
    counts = {"documents": (ref.get("documents", 0), int(len(prof["chunks_per_doc"]))),
              "chunks": (ref.get("chunks", 0), len(prof["ids"]))}
    for name, (before, now) in counts.items():
        change = (now - before) / before if before else None
        parts[f"{name}_count"] = {"reference": before, "current": now, "change": change,
                                  "breach": change is not None and abs(change) > d.count_change}
        if parts[f"{name}_count"]["breach"]:
            fired.append(f"{name}_count")
    q = _quarantine(settings, p)
    q["breach"] = (q["p_value"] is not None and q["p_value"] < d.alpha
                   and (q["current"] or 0) - (q["reference"] or 0) > d.quarantine_rise)
    parts["quarantine_rate"] = q
    if q["breach"]:
        fired.append("quarantine_rate")
    if fresh:  # only the quarantine rate (ingest windows) does not depend on the new snapshot
        late = ["quarantine_rate"] if q["breach"] else []
        return {"status": "breach" if late else "baseline", "reason": "reference taken by this run", "parts": parts,
                "fired": late, "rule": f"quarantine rate up by more than {d.quarantine_rise:.0%} (one-sided Fisher "
                                      f"p < {d.alpha})",
                "evidence": {"quarantine_rate": {k: q[k] for k in ("reference", "current", "p_value")}}}
    return {"status": "breach" if fired else "ok", "parts": parts, "fired": fired,
            "rule": (f"PSI >= {d.psi_threshold} with KS p < {d.alpha}; document or chunk count changed by more than "
                     f"{d.count_change:.0%}; quarantine rate up by more than {d.quarantine_rise:.0%} "
                     f"(one-sided Fisher p < {d.alpha})"),
            "evidence": {k: {kk: v[kk] for kk in ("psi", "reference", "current", "change", "p_value")
                             if kk in v and not isinstance(v[kk], list)} for k, v in parts.items()},
            "compared": f"reference snapshot {ref['name']} vs the state store now"}


def _hist_values(a: np.ndarray, limit: int = 5000) -> list[float]:
    a = np.asarray(a)
    if len(a) > limit:
        a = np.random.default_rng(0).choice(a, limit, replace=False)
    return a.astype(float).tolist()


def _quarantine(settings: Settings, p: dict[str, Any]) -> dict[str, Any]:
    """Quarantined share of the documents ingests read, current window vs reference window."""
    start, mid, end = (dt.datetime.fromisoformat(p[k]) for k in ("reference_start", "current_start", "end"))
    with state.session_scope(settings.state_db_url) as s:
        runs = s.execute(select(state.SyncRun.finished_at, state.SyncRun.stats).where(
            state.SyncRun.index_name == p["index"], state.SyncRun.status.in_(("committed", "incident")),
            state.SyncRun.finished_at.is_not(None))).all()
    tallies = {"reference": [0, 0], "current": [0, 0]}
    for finished, stats in runs:
        at = finished if finished.tzinfo else finished.replace(tzinfo=dt.UTC)
        side = "current" if mid <= at < end else "reference" if start <= at < mid else None
        if side is None:
            continue
        counts = (stats or {}).get("counts") or {}
        quarantined = int(counts.get("quarantined", (stats or {}).get("quarantined", 0)) or 0)
        read = int(counts.get("added", 0) or 0) + int(counts.get("changed", 0) or 0)
        tallies[side][0] += quarantined
        tallies[side][1] += max(read, quarantined)
    r = S.rate_rise(tallies["reference"][0], tallies["reference"][1], tallies["current"][0], tallies["current"][1])
    r.update(reference_documents=tallies["reference"][1], current_documents=tallies["current"][1])
    return r


# ----------------------------------------------------------------------------------------------
# queries and knowledge gaps


def _sample_queries(qs: list[querylog.Query], size: int, seed: int) -> list[querylog.Query]:
    if len(qs) <= size:
        return qs
    idx = np.random.default_rng(seed).choice(len(qs), size, replace=False)
    return [qs[i] for i in sorted(idx)]


def _queries(settings: Settings, p: dict[str, Any], refq: querylog.LogRead, cur: querylog.LogRead,
             window: Any, region: dict[str, np.ndarray]) -> dict[str, Any]:
    d = settings.drift
    windows = (f"queries {p['reference_start']} to {p['current_start']} vs {p['current_start']} to {p['end']}")
    if len(refq.queries) < d.min_queries or len(cur.queries) < d.min_queries:
        why = (f"too few queries: {len(refq.queries)} in the reference window and {len(cur.queries)} in the current "
               f"one (drift.min_queries = {d.min_queries})")
        if not refq.files and not cur.files:
            why = (f"no query log at {settings.query_log_uri} and no traces at {settings.traces_uri}: answer through "
                   "ragops.app / ragops.tracing, or point drift.query_log at your application's log "
                   "(JSONL or Parquet with timestamp and query; see docs/drift.md)")
        return {"status": "skipped", "reason": why}
    r, R = window("reference", refq)
    c, C = window("current", cur)
    t0 = time.perf_counter()
    res = S.two_sample(R, C, p["methods"], alpha=p["alpha"], permutations=p["permutations"], seed=p["seed"])
    out = _verdict(res, "queries", windows)
    out.update(n_reference=len(r), n_current=len(c), seconds=round(time.perf_counter() - t0, 2),
               projection=_projection(R, C, p["seed"]))
    order = np.argsort((_unit(C) @ _unit(R).T).max(axis=1))  # least like any reference query first
    out["novel_examples"] = list(dict.fromkeys(c[i].text for i in order))[:5]
    region["queries"] = C[order[:REGION_SIZE]]
    fb = _feedback(r, c)
    if fb is not None:
        out["feedback"] = fb
        if fb["p_value"] is not None and fb["p_value"] < d.alpha and \
                (fb["current"] or 0) - (fb["reference"] or 0) > d.feedback_rise:
            out["fired"].append("negative_feedback")
            out["status"] = "breach"
        out["evidence"]["negative_feedback"] = {k: fb[k] for k in ("reference", "current", "p_value")}
    return out


def _feedback(r: list[querylog.Query], c: list[querylog.Query]) -> dict[str, Any] | None:
    rf = [q.feedback for q in r if q.feedback is not None]
    cf = [q.feedback for q in c if q.feedback is not None]
    if not rf or not cf:
        return None
    out = S.rate_rise(sum(1 for f in rf if f < 0), len(rf), sum(1 for f in cf if f < 0), len(cf))
    out.update(reference_rated=len(rf), current_rated=len(cf))
    return out


def best_scores(store: VectorStore, collection: str, vectors: np.ndarray, block: int = 256) -> np.ndarray:
    """Cosine similarity of each query's best chunk in the live collection."""
    out = []
    for i in range(0, len(vectors), block):
        res = store.collection(collection).query(query_embeddings=list(vectors[i:i + block]), n_results=1,
                                                 include=["distances"])
        out.extend(1.0 - float(ds[0]) if ds else -1.0 for ds in res["distances"])
    return np.asarray(out)


def _gaps(settings: Settings, p: dict[str, Any], prof: dict[str, Any], refq: querylog.LogRead,
          cur: querylog.LogRead, window: Any, store: VectorStore, region: dict[str, np.ndarray]) -> dict[str, Any]:
    d = settings.drift
    if len(cur.queries) < d.min_queries:
        why = (f"too few queries in the current window: {len(cur.queries)} (drift.min_queries = {d.min_queries})"
               if cur.files else f"no query log at {settings.query_log_uri} and no traces at {settings.traces_uri}: "
                                 "point drift.query_log at your application's log (see docs/drift.md)")
        return {"status": "skipped", "reason": why}
    c, C = window("current", cur)
    best = best_scores(store, prof["collection"], C)
    uncovered = np.flatnonzero(best < d.gap_threshold)
    share = len(uncovered) / len(c)
    ref_share = None
    if len(refq.queries) >= d.min_queries:
        rb = best_scores(store, prof["collection"], window("reference", refq)[1])
        ref_share = float(np.mean(rb < d.gap_threshold))
    clusters = S.cluster_texts(C[uncovered], [c[i].text for i in uncovered], distance=d.cluster_distance,
                               top=d.gap_clusters)
    for cl in clusters:
        cl["share"] = cl["size"] / len(c)
        cl["best_score"] = float(np.max(best[uncovered[cl.pop("members")]])) if cl["size"] else None
    breach = share > d.max_gap_share
    if len(uncovered):
        region["gaps"] = C[uncovered[np.argsort(best[uncovered])[:REGION_SIZE]]]
    return {"status": "breach" if breach else "ok", "share": share, "reference_share": ref_share,
            "uncovered": int(len(uncovered)), "queries": len(c), "threshold": d.gap_threshold, "clusters": clusters,
            "scores": np.round(best, 4).tolist(),
            "rule": f"share of current queries whose best chunk scores below {d.gap_threshold} (cosine) > "
                    f"{d.max_gap_share:.0%}",
            "evidence": {"share": round(share, 4), "reference_share": None if ref_share is None else round(ref_share, 4),
                         "uncovered": int(len(uncovered)), "queries": len(c), "max_share": d.max_gap_share},
            "compared": f"queries {p['current_start']} to {p['end']} against {prof['collection']}"}


# ----------------------------------------------------------------------------------------------
# quality


def metric_series(settings: Settings, index: str) -> dict[str, Any]:
    """Nightly eval metrics of ``index``, oldest first, on the dataset and retrieval mode of the
    newest nightly run (runs on other questions are not comparable).

    One point per night, as in the nightly regression check: of several nightly runs of one UTC
    day with the same prompt version, served model and index version (Airflow's catch-up run
    next to a triggered one, or a rerun), only the newest is a point; ``same_day_left_out`` lists
    the others."""
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.EvalRun).where(
            state.EvalRun.index_name == index, state.EvalRun.status.in_(("success", "partial")))
            .order_by(state.EvalRun.started_at, state.EvalRun.run_id)).scalars().all()
        runs = [(r.run_id, r.started_at, r.dataset_hash, r.dataset_path, r.config or {},
                 (r.metrics or {}).get("metrics") or {}, run_night_key(r))
                for r in rows if (r.config or {}).get("purpose") == "nightly"]
    if not runs:
        return {"runs": [], "dataset": None, "same_day_left_out": []}
    _, _, ds_hash, ds_path, cfg, _, _ = runs[-1]
    mode = cfg.get("retrieval")
    same = [r for r in runs if r[2] == ds_hash and r[4].get("retrieval") == mode]
    newest_first = same[::-1]
    kept, dropped = one_per_night([r[6] for r in newest_first])
    return {"runs": [{"run_id": r[0], "at": r[1].isoformat(), "metrics": r[5]}
                     for r in (newest_first[i] for i in reversed(kept))],
            "dataset": ds_path, "retrieval": mode,
            "same_day_left_out": [newest_first[i][0] for i in reversed(dropped)]}


def _quality(settings: Settings, p: dict[str, Any]) -> dict[str, Any]:
    d = settings.drift
    series = metric_series(settings, p["index"])
    runs = series["runs"]
    if len(runs) < d.window_runs + 3:
        return {"status": "skipped", "reason": f"{len(runs)} nightly eval run(s) on this index and dataset; control "
                                               f"limits need at least {d.window_runs + 3} (drift.window_runs + 3)",
                "runs": len(runs)}
    charts: dict[str, Any] = {}
    for metric in settings.eval.watch_metrics:
        values = [r["metrics"].get(metric) for r in runs]
        if any(not isinstance(v, (int, float)) for v in values):
            continue
        charts[metric] = S.control_chart(values, baseline_runs=d.baseline_runs, window_runs=d.window_runs,
                                         higher_is_better=metric not in LOWER_IS_BETTER, min_sigma=d.min_sigma,
                                         ewma_lambda=d.ewma_lambda, run_length=d.run_length)
    fired = {m: c["rules"] for m, c in charts.items() if c.get("status") == "breach"}
    return {"status": "breach" if fired else "ok", "charts": charts, "fired": sorted(fired),
            "runs": [{"run_id": r["run_id"], "at": r["at"]} for r in runs[-(d.baseline_runs + d.window_runs):]],
            "dataset": series["dataset"], "retrieval": series["retrieval"],
            "rule": (f"control limits from {d.baseline_runs} nightly runs before the newest {d.window_runs}: newest "
                     f"beyond 3 sigma, EWMA (lambda {d.ewma_lambda}) beyond its limit, or {d.run_length} runs in a "
                     "row worse than the centre by half a sigma; one run per UTC day counts (the newest of the day)"),
            "same_day_left_out": series["same_day_left_out"],
            "evidence": {m: {"rules": r, "latest": round(charts[m]["latest"], 4), "centre": round(charts[m]["centre"], 4),
                             "limit": round(charts[m]["limit"], 4)} for m, r in fired.items()},
            "compared": f"{len(runs)} nightly runs of {series['dataset']}"}


# ----------------------------------------------------------------------------------------------
# targeted evaluation


def golden_set(settings: Settings, index: str) -> str | None:
    path = settings.golden_set(index)
    return settings.resolve_path(path) if path else None


def _targeted(settings: Settings, index: str, regions: dict[str, np.ndarray], embedder_: Any) -> dict[str, Any]:
    """The golden questions nearest the drifted region(s), for a targeted nightly_eval run."""
    from ragops.evaluation.datasets import load_dataset

    path = golden_set(settings, index)
    if not path or not Path(path).exists():
        return {"question_ids": [], "reason": f"index {index} has no golden set (indexes.{index}.golden)"}
    ds = load_dataset(path)
    if not ds.questions:
        return {"question_ids": [], "reason": f"golden set {path} is empty"}
    Q = embedder_().encode([q.question for q in ds.questions], log_every=30)
    pts = np.vstack(list(regions.values()))
    near = (_unit(Q) @ _unit(pts).T).max(axis=1)
    floor = settings.drift.targeted_min_similarity
    order = [i for i in np.argsort(-near)[:settings.drift.targeted_questions] if near[i] >= floor]
    if not order:
        return {"question_ids": [], "dataset": path, "regions": sorted(regions),
                "reason": f"no golden question is near the drifted {' and '.join(sorted(regions))} (best cosine "
                          f"{float(near.max()):.3f} < drift.targeted_min_similarity {floor}): the golden set does not "
                          "cover it; add questions about it"}
    return {"question_ids": [ds.questions[i].id for i in order], "dataset": path,
            "similarity": [round(float(near[i]), 4) for i in order], "regions": sorted(regions),
            "reason": f"the {len(order)} golden questions closest to the drifted {' and '.join(sorted(regions))}"}


# ----------------------------------------------------------------------------------------------
# storage


def _strip(results: dict[str, Any]) -> dict[str, Any]:
    """What the state store keeps: figures and null-distribution quantiles, not every resample."""
    out = json.loads(json.dumps(_jsonable(results)))
    for chk in out.get("checks", {}).values():
        chk.pop("projection", None)
        chk.pop("scores", None)
        for t in (chk.get("tests") or {}).values():
            null = t.pop("null", None)
            t.pop("current_scores", None)
            if null:
                t["null_quantiles"] = {q: float(np.quantile(null, float(q))) for q in ("0.5", "0.95", "0.99")}
        for part in (chk.get("parts") or {}).values():
            part.pop("reference_values", None)
            part.pop("current_values", None)
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (dt.datetime, Path)):
        return str(obj)
    return obj


def _summary(check_id: str, p: dict[str, Any], results: dict[str, Any], breaches: list[str],
             report: Path) -> dict[str, Any]:
    checks = {}
    for name, r in results["checks"].items():
        checks[name] = {"status": r["status"], **({"reason": r["reason"]} if r.get("reason") else {}),
                        **({"fired": r["fired"]} if r.get("fired") else {}),
                        **({"evidence": r["evidence"]} if r.get("evidence") else {}),
                        **({"rule": r["rule"]} if r.get("rule") else {})}
        if name == "gaps" and r.get("clusters"):
            checks[name]["clusters"] = [{k: c[k] for k in ("size", "terms", "examples")} for c in r["clusters"]]
        if name == "queries" and r.get("novel_examples"):
            checks[name]["novel_examples"] = r["novel_examples"]
    return {"check_id": check_id, "index": p["index"], "status": "breach" if breaches else "ok", "breaches": breaches,
            "checks": checks, "report": str(report), "reference": (results.get("reference") or {}).get("name"),
            "reference_note": results.get("reference_note"), "targeted": results.get("targeted"),
            "collection": results.get("collection"), "elapsed_s": results.get("elapsed_s"),
            "windows": {"reference": [p["reference_start"], p["current_start"]], "current": [p["current_start"], p["end"]]}}


def describe_check(name: str, c: dict[str, Any]) -> str:
    """One line of figures for a check summary (CLI and e-mail)."""
    if c.get("reason") and c["status"] in ("skipped", "baseline"):
        return str(c["reason"])
    ev = c.get("evidence") or {}
    if name in ("corpus", "queries"):
        parts = []
        for m, v in ev.items():
            if m == "classifier":
                parts.append(f"classifier AUC {v['statistic']:.3f} (threshold {v.get('threshold', 0):.3f}) "
                             f"p={v['p_value']:.4f}")
            elif m == "negative_feedback":
                parts.append(f"negative feedback {_pct(v.get('reference'))} -> {_pct(v.get('current'))}")
            else:
                parts.append(f"{'MMD²' if m == 'mmd' else 'centroid distance'} {v['statistic']:.4g} p={v['p_value']:.4f}")
        return "; ".join(parts)
    if name == "documents":
        bits = []
        for k, v in ev.items():
            if "psi" in v:
                bits.append(f"{k} PSI {v['psi']:.3f}")
            elif v.get("change") is not None:
                bits.append(f"{k} {v['change']:+.1%}")
            elif k == "quarantine_rate" and v.get("current") is not None:
                bits.append(f"quarantine {_pct(v.get('reference'))} -> {_pct(v.get('current'))}")
        return "; ".join(bits) + (f" (fired: {', '.join(c['fired'])})" if c.get("fired") else "")
    if name == "gaps":
        return (f"{ev.get('uncovered')} of {ev.get('queries')} queries uncovered ({_pct(ev.get('share'))}; reference "
                f"window {_pct(ev.get('reference_share'))})")
    if name == "quality":
        return "; ".join(f"{m}: {', '.join(v['rules'])} (newest {v['latest']}, centre {v['centre']}, limit {v['limit']})"
                         for m, v in ev.items()) or "every watched metric within its control limits"
    return ""


def _pct(v: Any) -> str:
    return "–" if v is None else f"{v:.1%}"


def history(settings: Settings, index: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        q = select(state.DriftCheck).order_by(state.DriftCheck.started_at.desc()).limit(limit)
        if index:
            q = q.where(state.DriftCheck.index_name == index)
        return [{"check_id": r.check_id, "index": r.index_name, "status": r.status, "trigger": r.trigger,
                 "started_at": r.started_at.isoformat() if r.started_at else None, "breaches": r.breaches,
                 "report": r.report_path, "error": r.error} for r in s.execute(q).scalars()]


def show(settings: Settings, check_id: str) -> dict[str, Any]:
    state.require_schema(settings.state_db_url)
    with state.session_scope(settings.state_db_url) as s:
        r = s.get(state.DriftCheck, check_id)
        if r is None:
            raise DriftError(f"no drift check {check_id!r}; see `ragops drift history`")
        return {"check_id": r.check_id, "index": r.index_name, "status": r.status, "params": r.params,
                "results": r.results, "breaches": r.breaches, "report": r.report_path, "error": r.error}
