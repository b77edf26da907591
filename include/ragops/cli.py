"""The `ragops` command line: the same library calls the DAGs make, for people and scripts.

Exit codes: 0 success, 1 a check failed (self-check), 2 a usage or data error with a message
that names the problem and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from ragops import __version__
from ragops.errors import RagopsError


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _path_arg(value: str | None) -> str | None:
    """A path typed on the command line, made absolute against the current directory as every
    other command line does. Paths inside the settings file (and DAG Params) keep resolving
    against the project root (``Settings.resolve_path``); URLs pass through."""
    if value is None or "://" in value:
        return value
    return os.path.abspath(os.path.expanduser(value))


def _settings(args: argparse.Namespace) -> Any:
    from ragops.config import load_settings

    return load_settings(args.config)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from ragops import state

    s = _settings(args)
    rev = state.upgrade(s.state_db_url)
    print(f"state store {state.redact_url(s.state_db_url)} is at migration {rev}")
    return 0


def _fmt_counts(c: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in c.items())


def cmd_ingest(args: argparse.Namespace) -> int:
    from ragops.indexing import sync

    s = _settings(args)
    index = args.index or s.ingest.default_index
    t0 = time.perf_counter()
    result = sync(s, _path_arg(args.source), index, full_resync=args.full_resync, dry_run=args.dry_run,
                  allow_mass_delete=args.allow_mass_delete, trigger="cli")
    total = time.perf_counter() - t0
    if not result.get("dry_run"):
        # the report's own elapsed_s is the commit step's; the run is plan + batches + commit
        commit = float(result["elapsed_s"])
        result = {**result, "timing_s": {"total": round(total, 3), "prepare": round(max(total - commit, 0.0), 3),
                                         "commit": round(commit, 3)}}
    if args.json:
        _print_json(result)
        return 0
    if result.get("dry_run"):
        plan = result["plan"]
        print(f"dry run: index {plan['index']} from {plan['source_id']} in {total:.1f}s (nothing was written)")
        print(f"  documents: {_fmt_counts(plan['counts'])}")
        for kind in ("added", "changed", "deleted", "protected", "skipped"):
            if plan["samples"].get(kind):
                print(f"  would be {kind}: {', '.join(plan['samples'][kind])}")
        if plan.get("mass_delete_blocked"):
            print("  warning: a real run would refuse these deletions (quality.max_delete_share); "
                  "add --allow-mass-delete if they are intended")
        for p in plan["problems"]:
            print(f"  problem: {p['reason']}: {p['detail']}")
        return 0
    t = result["timing_s"]
    print(f"synced index {result['index']} ({result['collection']}) from {result['source_id']} in {t['total']:.1f}s "
          f"(plan, parse, chunk and embed {t['prepare']:.1f}s; commit and self-check {t['commit']:.1f}s)")
    print(f"  documents: {_fmt_counts(result['counts'])}")
    print(f"  chunks: {_fmt_counts(result['chunks'])}")
    if result.get("skipped"):
        print(f"  skipped {result['counts'].get('skipped', len(result['skipped']))} file(s) ragops does not read: "
              f"{', '.join(result['skipped'])}")
    q = result["quarantine"]
    if q["documents"]:
        still = int(q.get("still") or 0)
        again = f" ({still} unchanged since they were quarantined, not read again)" if still else ""
        print(f"  quarantined {q['documents']} document(s){again}: {_fmt_counts(q['reasons'])}")
        for e in q["entries"]:
            print(f"    {e['doc_id']}: {e['reason']}: {e['detail']}")
    rp = result.get("repairs") or {}
    if rp.get("repaired_documents") or rp.get("warned_documents"):
        print(f"  repaired {rp['repaired_documents']} document(s), {rp['warned_documents']} indexed with a warning: "
              f"{_fmt_counts(rp['kinds'])} (`ragops quarantine --all` lists them)")
    if result.get("phases_s"):
        print(f"  phases (s, summed over batches): {_fmt_counts(result['phases_s'])}")
    sc = result["self_check"]
    print(f"  self-check: {'OK' if sc['ok'] else 'FAILED'} ({sc['state_chunks']} chunks in state, "
          f"{sc['chroma_ids']} in Chroma)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ragops.retrieval import hits_as_dicts, search

    s = _settings(args)
    hits = search(s, args.text, k=args.k, index=args.index, mode=args.retrieval)
    if args.json:
        _print_json([{k: v for k, v in h.items() if k != "text"} for h in hits_as_dicts(hits)])
        return 0
    if not hits:
        print("no results")
    for h in hits:
        where = f"{h.doc_id}" + (f" › {h.headings}" if h.headings else "") + (f" (p. {h.page})" if h.page else "")
        print(f"{h.rank:>2}. {h.score:.3f}  {where}\n    chunk {h.chunk_id}\n    {h.snippet}")
    return 0


def cmd_index_status(args: argparse.Namespace) -> int:
    from ragops.retrieval import index_status

    s = _settings(args)
    items = index_status(s, args.index, check=not args.no_check)
    if args.json:
        _print_json(items)
    elif not items:
        print("no indexes yet: run `ragops ingest SOURCE` (or `make demo`)")
    for it in items if not args.json else []:
        print(f"index {it['index']}: live collection {it['collection']} (v{it['version']}), "
              f"{it['documents']} documents, {it['chunks']} chunks")
        for src in it["sources"]:
            print(f"  source {src['source_id']}: {src['documents']} documents, {src['chunks']} chunks")
        rt = it.get("retrieval")
        if rt:
            weights = f" (fusion {rt['dense_weight']:g}:{rt['lexical_weight']:g}, rrf_k {rt['rrf_k']})" \
                if rt["mode"] == "hybrid" else ""
            how = ("tuned on its golden set" if rt["source"] == "tuned" else
                   "retrieval.mode of the settings; `ragops index tune` picks one from the golden set")
            print(f"  retrieval: {rt['mode']}{weights}, {how}")
        if it.get("pipeline_drift"):
            print(f"  settings changed since the live version was built ({', '.join(it['pipeline_drift'])}): "
                  "`ragops index rebuild` applies them")
        for v in it.get("versions", []):
            if v["status"] in ("live", "retired", "building"):
                st = v.get("stats") or {}
                size = f", {v['vectors']} vectors" if v.get("vectors") is not None else ""
                size += f", BM25 {v['bm25_bytes'] / 1e6:.1f} MB" if v.get("bm25_bytes") else ""
                how = f", {st['embedded']} embedded/{st['reused']} reused in {st['seconds']}s" if st else ""
                tuned = v.get("retrieval")
                how += f"; retrieval tuned: {tuned['candidate']} ({tuned['reason']})" if tuned else ""
                print(f"  v{v['version']} {v['collection']}: {v['status']}{size}; {v['pipeline_text']}; built "
                      f"{v['created_at'][:19]} by {v.get('built_by') or 'ingest'}{how}")
        lr = it["last_run"]
        if lr:
            print(f"  last sync {lr['run_id']}: {lr['status']} at {lr['finished_at'] or lr['started_at']}, "
                  f"{lr['quarantined']} quarantined")
        sc = it.get("self_check")
        if sc:
            status = "OK" if sc.get("ok") else ("skipped: " + sc["skipped"] if sc.get("ok") is None else
                                                f"MISMATCH ({sc['missing']} missing, {sc['extra']} extra)")
            print(f"  self-check: {status}")
    bad = [it for it in items if it.get("self_check", {}).get("ok") is False]
    return 1 if bad else 0


def cmd_index_rebuild(args: argparse.Namespace) -> int:
    from ragops.lifecycle import rebuild
    from ragops.pipelines import describe

    settings = _settings(args)
    r = rebuild(settings, args.index, actor="cli", model=args.model, profile=args.profile, force=args.force,
                backend=args.backend)
    if r["swapped"]:
        r["drift_snapshot"] = _reference_snapshot(settings, r["index"], "index_swap")
    if args.json:
        _print_json(r)
    elif r["swapped"]:
        how = "sources re-read for the new pipeline" if r["pipeline_change"] else f"{r['reused']} vectors reused"
        print(f"index {r['index']} now serves {r['live']} (was {r['previous']}) with {describe(r['pipeline'])}: {how}, "
              f"{r['embedded']} embedded, {len(r['deleted'])} old version(s) deleted")
    else:
        print(f"rebuild of {r['index']} rejected, {r['live']} keeps serving: {'; '.join(r['reasons'])}")
    return 0 if r["swapped"] else 1


def cmd_index_tune(args: argparse.Namespace) -> int:
    from ragops.tuning import tune

    r = tune(_settings(args), args.index, _path_arg(args.dataset), apply=not args.dry_run, actor="cli")
    if args.json:
        _print_json(r)
        return 0
    print(f"index {r['index']} v{r['version']}: {r['questions']} golden questions of {r['dataset']} "
          f"(sha256 {r['dataset_sha256'][:12]}), nDCG@10 [{r['confidence']:.0%} interval]:")
    p = {c["candidate"]: c for c in r["comparisons"] if c["baseline"] == "dense"}
    for c in r["candidates"]:
        vs = p.get(c["name"])
        test = f"   vs dense {vs['difference']:+.4f}, Holm p={vs['p_holm']:.3g}" if vs else ""
        mark = "*" if c["name"] == r["candidate"] else " "
        print(f" {mark} {c['name']:<14} {c['ndcg@10']:.4f} [{c['ci_low']:.4f}, {c['ci_high']:.4f}]{test}")
    for c in r["comparisons"]:
        if c["baseline"] != "dense":
            print(f"   {c['candidate']} vs {c['baseline']}: {c['difference']:+.4f}, Holm p={c['p_holm']:.3g}")
    print(f"choice: {r['candidate']} — {r['reason']}")
    print("dry run: nothing stored" if not r["applied"] else
          f"stored on {r['collection']}: searches, eval runs and the app use it unless a call or prompt names a mode")
    return 0


def cmd_index_rollback(args: argparse.Namespace) -> int:
    from ragops.lifecycle import rollback

    settings = _settings(args)
    r = rollback(settings, args.index, args.to, actor="cli")
    r["drift_snapshot"] = _reference_snapshot(settings, r["index"], "index_rollback")
    if args.json:
        _print_json(r)
    else:
        how = ("its own chunks restored (another pipeline; pinned until a rebuild chooses)" if r["across_pipelines"]
               else f"{r['copied']} chunk(s) brought over, {r['removed']} removed")
        print(f"index {r['index']} now serves {r['to']} (was {r['from']}); {how}")
    return 0


def _reference_snapshot(settings: Any, index: str, reason: str) -> str | None:
    """The drift reference for the version that now serves. The index change already happened, so
    a failure here is reported, not fatal: the next drift check takes the snapshot itself."""
    from ragops.drift.snapshots import take

    try:
        return str(take(settings, index, reason=reason, actor="cli")["name"])
    except RagopsError as exc:
        print(f"warning: index {index} changed, but its drift reference snapshot failed ({exc}); the next "
              "`ragops drift check` takes one", file=sys.stderr)
        return None


def cmd_drift_check(args: argparse.Namespace) -> int:
    from ragops.drift.checks import describe_check, run_check

    r = run_check(_settings(args), args.index, checks=args.checks, methods=args.methods, reference=args.reference,
                  reference_window=args.reference_window, current_window=args.current_window,
                  sample_size=args.sample_size, permutations=args.permutations, seed=args.seed,
                  targeted=False, check_id=args.check_id, trigger="cli", actor="cli")
    if args.json:
        _print_json(r)
        return 1 if r["breaches"] else 0
    print(f"drift check {r['check_id']} of index {r['index']}: "
          + (f"BREACH ({', '.join(r['breaches'])})" if r["breaches"] else "no drift") + f" in {r['elapsed_s']}s")
    if r.get("reference"):
        print(f"  reference snapshot: {r['reference']}" + (f" ({r['reference_note']})" if r.get("reference_note") else ""))
    for name, c in r["checks"].items():
        print(f"  {name:<10} {c['status'].upper():<9} {describe_check(name, c)}")
        for cl in c.get("clusters", []):
            print(f"             {cl['size']} uncovered: {', '.join(cl['terms'])} (e.g. {cl['examples'][0]!r})")
    print(f"  report: {r['report']}")
    return 1 if r["breaches"] else 0


def cmd_drift_snapshot(args: argparse.Namespace) -> int:
    from ragops.drift.snapshots import take

    settings = _settings(args)
    r = take(settings, args.index or settings.ingest.default_index, name=args.name, actor="cli",
             sample_size=args.sample_size)
    if args.json:
        _print_json(r)
    else:
        print(f"snapshot {r['name']} of {r['collection']}: {r['vectors']} of {r['chunks']} chunk vectors, "
              f"{r['documents']} documents")
    return 0


def cmd_drift_snapshots(args: argparse.Namespace) -> int:
    from ragops.drift.snapshots import listing, remove

    settings = _settings(args)
    if args.delete:
        r = remove(settings, args.index or settings.ingest.default_index, args.delete)
        print(f"deleted snapshot {r['name']} of index {r['index']}")
        return 0
    rows = listing(settings, args.index)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no drift snapshots yet: `ragops drift snapshot --name NAME` takes one; checks take them automatically")
    for r in rows:
        print(f"{r['created_at'][:19]}  {r['index']:<12} {r['name']:<44} {r['reason']:<17} {r['collection']:<14} "
              f"{r['vectors']:>6} vectors  {r['chunks']:>7} chunks  by {r['created_by']}")
    return 0


def cmd_drift_history(args: argparse.Namespace) -> int:
    from ragops.drift.checks import history

    rows = history(_settings(args), args.index, args.limit)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no drift checks yet: run `ragops drift check` or trigger the check_drift DAG")
    for r in rows:
        print(f"{(r['started_at'] or '')[:19]}  {r['check_id']:<48} {r['status']:<8} "
              f"{', '.join(r['breaches'] or []) or '-':<24} {r['report'] or r['error'] or ''}")
    return 0


def cmd_drift_show(args: argparse.Namespace) -> int:
    from ragops.drift.checks import show

    _print_json(show(_settings(args), args.check_id))
    return 0


def cmd_llm_serve(args: argparse.Namespace) -> int:
    from ragops.generation.local import LocalChatModel
    from ragops.generation.server import serve

    model = LocalChatModel(_settings(args).data_dir, path=args.model_file, threads=args.threads)
    print(f"loading {model.served_name} from {model.file.path} (sha256 {model.file.sha256[:12]}...)", flush=True)
    model.load()
    print(f"loaded in {model.load_seconds:.1f}s from {model.loaded_from}", flush=True)
    serve(model, host=args.host, port=args.port)
    return 0


def cmd_llm_info(args: argparse.Namespace) -> int:
    from ragops.generation.local import LocalChatModel

    model = LocalChatModel(_settings(args).data_dir, path=args.model_file)
    info = {**model.file.info(), "converted_dir": str(model.converted_dir),
            "converted": (model.converted_dir / "config.json").is_file()}
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:14} {v}")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    from ragops.retrieval import quarantine_entries

    s = _settings(args)
    severities = ("failure", "repaired", "warning") if args.all else ("failure",)
    rows = quarantine_entries(s, args.index, args.run, args.limit, severities=severities)
    if args.json:
        _print_json(rows)
        return 0
    what = "quarantined, repaired or warned documents" if args.all else "quarantined documents"
    if not rows:
        print(f"no {what} in run {args.run}" if args.run else f"no {what} in the latest run")
    for r in rows:
        tag = "" if r["severity"] == "failure" else f"[{r['severity']}] "
        print(f"{r['run_id']}  {tag}{r['doc_id']}  {r['stage']}/{r['reason']}\n    {r['detail']}")
    return 0


def cmd_alerts_list(args: argparse.Namespace) -> int:
    from ragops import state
    from ragops.alerts import outbox

    s = _settings(args)
    state.require_schema(s.state_db_url)
    rows = outbox(s, args.limit, args.status)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("the alert outbox is empty")
    for r in rows:
        extra = f" ({r['error']})" if r["error"] else ""
        print(f"#{r['id']:<5} {r['status']:<13} {r['created_at'][:19]}  {r['subject']}{extra}")
    return 0


def cmd_alerts_flush(args: argparse.Namespace) -> int:
    """Re-send undelivered alerts through the Airflow SMTP Connection (needs Airflow installed)."""
    from ragops import alerts, state
    from ragops.airflow.alerting import smtp_sender

    s = _settings(args)
    state.require_schema(s.state_db_url)
    result = alerts.flush(s, smtp_sender(s.alerts.smtp_conn_id))
    print(f"re-sent {result['sent']} of {result['retried']} undelivered alert(s)")
    return 0 if result["failed"] == 0 else 1


def cmd_eval_import_beir(args: argparse.Namespace) -> int:
    from ragops.evaluation.datasets import import_beir

    r = import_beir(args.folder, args.split, args.output, doc_prefix=args.doc_prefix)
    print(f"wrote {r['questions']} questions to {r['output']}")
    if r["relevant_ids_not_in_corpus"]:
        print(f"  warning: {r['relevant_ids_not_in_corpus']} relevant id(s) are not in corpus.jsonl")
    return 0


def cmd_eval_validate(args: argparse.Namespace) -> int:
    from ragops.evaluation.datasets import UnknownDocsError, load_dataset
    from ragops.evaluation.runner import index_doc_ids

    known = None
    s = _settings(args)
    if args.index:
        from ragops.retrieval import live_collection

        live_collection(s, args.index)  # an index that does not exist is named as such, with the known ones
        known = index_doc_ids(s, args.index)
    try:
        ds = load_dataset(_path_arg(args.dataset), known)
    except UnknownDocsError as exc:
        from ragops.retrieval import explain_unknown_docs_error

        raise explain_unknown_docs_error(s, args.index, exc) from exc
    una = sum(1 for q in ds.questions if not q.answerable)
    print(f"{args.dataset}: {len(ds)} questions ({len(ds) - una} answerable, {una} unanswerable), "
          f"sha256 {ds.sha256[:12]}" + (f"; every relevant document is in index {args.index}" if args.index else ""))
    return 0


def cmd_eval_run(args: argparse.Namespace) -> int:
    from ragops.evaluation.runner import run_eval

    s = _settings(args)
    if args.baseline and args.sample:
        raise RagopsError("--baseline needs every question: drop --sample (a sampled run never joins the baseline)")
    summary = run_eval(s, _path_arg(args.dataset), args.prompt, args.index, output_dir=_path_arg(args.output),
                       sample_size=args.sample,
                       trigger="cli", purpose="nightly" if args.baseline else "adhoc",
                       allow_unknown_docs=True if args.allow_unknown_docs else None, retrieval=args.retrieval,
                       reuse_cache=args.reuse_cache)
    if args.json:
        _print_json(summary)
        return 0
    c = summary["counts"]
    if summary["dataset"]["unknown_relevant_doc_count"]:
        print(f"warning: {summary['dataset']['unknown_relevant_doc_count']} relevant doc id(s) are not in the index "
              "and count as never retrieved", file=sys.stderr)
    print(f"eval {summary['run_id']}: {summary['status']}, {c['questions']} questions "
          f"({c['refused']} refused, {c['errors']} errors), prompt {summary['prompt']['name']}@"
          f"{summary['prompt']['version']}, index {summary['index']} v{summary['index_version']}")
    rd = summary.get("retrieval_detail") or {}
    if rd:
        src = {"call": "--retrieval", "prompt": "the prompt", "tuned": "the index's tuning (`ragops index tune`)",
               "settings": "retrieval.mode"}.get(rd["source"], rd["source"])
        fusion = f" {rd['dense_weight']:g}:{rd['lexical_weight']:g}" if rd["mode"] == "hybrid" else ""
        print(f"  retrieval {rd['mode']}{fusion} (from {src})")
    for k, v in summary["metrics"].items():
        if k not in ("tokens_in", "tokens_out"):
            print(f"  {k:<24} {v:.4f}")
    ops = summary["operations"]
    print(f"  latency p50 {ops['latency_ms_p50']:.0f} ms, p95 {ops['latency_ms_p95']:.0f} ms; tokens in "
          f"{ops['tokens_in']}, out {ops['tokens_out']}; cost per 1k questions "
          f"{ops.get('cost_per_1k_questions_usd', ops.get('cost_note'))}")
    print(f"  report: {summary['output_dir']}/report.html")
    return 0


def cmd_eval_groundedness(args: argparse.Namespace) -> int:
    from ragops.grounding.labelled import calibrate, groundedness_report

    s = _settings(args)
    names = args.checker or None
    if args.eval_command == "calibrate":
        out = calibrate(s, args.file, names)
        if args.json:
            _print_json(out)
            return 0
        print(f"agreement with the labels of {out['file']} ({out['answers']} answers), stored in the data dir:")
        for name, a in out["checkers"].items():
            def f(v: float | None) -> str:
                return "n/a" if v is None else f"{v:.3f}"
            print(f"  {name:<14} accuracy {f(a['accuracy'])}  precision {f(a['precision'])}  recall {f(a['recall'])}"
                  f"  kappa {f(a['kappa'])}  false alarms {f(a['false_alarm_rate'])}")
        return 0
    rep = groundedness_report(s, args.file, names)
    if args.json:
        _print_json(rep if args.misses else {**rep, "checkers": [{k: v for k, v in c.items() if k != "misses"}
                                                                  for c in rep["checkers"]]})
        return 0
    kinds = [k for k in rep["kinds"]  # error kinds only: grounded kinds are the false-alarm column
             if any(c["by_kind"].get(k, {}).get("label") == "hallucinated" for c in rep["checkers"])]
    print(f"{rep['file']}: {rep['answers']} labelled answers")
    print(f"  {'checker':<14}" + "".join(f"{k:>12}" for k in kinds) + f"{'false alarms':>14}{'kappa':>8}"
          f"{'s/1k answers':>14}")
    for c in rep["checkers"]:
        bk = c["by_kind"]
        cells = "".join(f"{bk[k]['rate']:>12.3f}" if k in bk else f"{'-':>12}" for k in kinds)
        kappa = c["agreement"]["kappa"]
        print(f"  {c['checker']:<14}{cells}{(c['false_alarm_rate'] or 0):>14.3f}"
              f"{(kappa if kappa is not None else float('nan')):>8.3f}{c['seconds_per_1k_answers']:>14.1f}")
        if args.misses:
            for m in c["misses"]:
                print(f"      miss {m['id']} ({m['label']}): {m['answer'][:120]}")
    print("  columns: share of answers flagged per error kind (detection) and on grounded answers (false alarms)")
    return 0


def cmd_eval_runs(args: argparse.Namespace) -> int:
    from ragops.evaluation.runner import list_runs

    rows = list_runs(_settings(args), args.index, args.limit)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no eval runs yet: `ragops eval run`")
        return 0
    table = [("run", "status", "started", "prompt", "index", "retrieval", "generator (served model)",
              "hit_rate@5", "faithfulness")]
    for r in rows:
        m = r["metrics"]
        gen = r["generator"] or "-"
        served = [x for x in r["served_models"] if gen.partition(":")[2] != x]
        table.append((r["run_id"], r["status"], r["started_at"][:19], r["prompt"], f"{r['index']} v{r['index_version']}",
                      r.get("retrieval") or "-", gen + (f" ({', '.join(served)})" if served else ""),
                      _fmt_metric(m.get("hit_rate@5")), _fmt_metric(m.get("faithfulness"))))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _fmt_metric(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "-"


def cmd_eval_check(args: argparse.Namespace) -> int:
    from ragops.gates import check_regression

    r = check_regression(_settings(args), args.run_id)
    if args.json:
        _print_json(r)
    else:
        print(f"{args.run_id}: {r['verdict']} against {len(r['baseline_runs'])} baseline run(s)")
        for c in r["checks"]:
            print(f"  {c['metric']:<20} {c['current']:.4f} vs {c['baseline']:.4f}  diff {c['difference']:+.4f} "
                  f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]{'  REGRESSED' if c['regressed'] else ''}")
    return 1 if r["verdict"] == "regression" else 0


def cmd_eval_bias(args: argparse.Namespace) -> int:
    """Counterfactual bias test; exit 1 when a gap is flagged, nothing could be tested, or the gate fails."""
    from ragops.evaluation.bias import bias_gate, record, run_bias, to_markdown

    s = _settings(args)
    kw = {"terms": _path_arg(args.terms) if args.terms else None,
          "attributes": args.attributes.split(",") if args.attributes else None,
          "limit": args.limit or None}
    result = run_bias(s, _path_arg(args.dataset) if args.dataset else None, args.prompt, args.index, **kw)
    if args.against:
        base = run_bias(s, _path_arg(args.dataset) if args.dataset else None, args.against, args.index, **kw)
        result["gate"] = dict(bias_gate(result, base), against=base["prompt"], against_status=base["status"])
    result["test_id"] = record(s, result, actor=os.environ.get("USER") or "cli")  # audit log + file
    if args.output:
        with open(str(_path_arg(args.output)), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(result, indent=2, default=str))
    if args.html:
        from ragops.evaluation.bias_report import write_bias_report

        page = write_bias_report(result, str(_path_arg(args.html)))
        print(f"bias report (tables per attribute): {page}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        _print_json(result)
    else:
        print(to_markdown(result))
        if "gate" in result:
            g = result["gate"]
            print(f"gate against {g['against']}: {'PASSED' if g['passed'] else 'FAILED'}: {g['reason']}")
    if "gate" in result:
        return 0 if result["gate"]["passed"] else 1
    return 0 if result["status"] == "no_gap" else 1


def cmd_eval_compare(args: argparse.Namespace) -> int:
    from ragops.evaluation.compare import compare_runs

    r = compare_runs(_settings(args), args.run_a, args.run_b, limit=None if args.json else args.limit)
    if args.json:
        _print_json(r)
        return 0
    print(f"{args.run_b} ({r['b']['prompt']}, {r['b']['index']} v{r['b']['index_version']}) against "
          f"{args.run_a} ({r['a']['prompt']}, {r['a']['index']} v{r['a']['index_version']}): differences are B - A, "
          f"{int(r['confidence'] * 100)}% paired intervals")
    for w in r["warnings"]:
        print(f"  note: {w}")
    group = None
    for m in r["metrics"]:
        if m["group"] != group:
            group = m["group"]
            print(f"{group}:")
        ci = f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]" if m["ci_low"] is not None else ""
        diff = f"{m['difference']:+.4f}" if m["difference"] is not None else "-"
        verdict = m["verdict"].upper() if m["verdict"] in ("worse", "better") else ""
        print(f"  {m['metric']:<28} {_fmt_metric(m['a']):>9} -> {_fmt_metric(m['b']):<9} {diff:>9} {ci:<20} "
              f"{verdict}".rstrip())
    c = r["counts"]
    print(f"questions: {c['paired']} paired, {c['worse']} worse, {c['better']} better, {c['unchanged']} unchanged, "
          f"{c['answers_changed']} answers changed; only in A {c['only_in_a']}, only in B {c['only_in_b']}")
    worse = [q for q in r["questions"] if q["change"] < 0]
    if worse:
        print("worst regressions:")
    for q in worse:
        deltas = ", ".join(f"{k} {v:+.2f}" for k, v in sorted(q["deltas"].items())
                           if k in ("hit_rate@5", "ndcg@10", "answer_f1", "faithfulness", "hallucination_rate"))
        print(f"  {q['id']:<10} {q['change']:+.3f}  {q['question'][:70]}  ({deltas})")
    return 0


def cmd_eval_toxicity(args: argparse.Namespace) -> int:
    """Detection per category and false alarms of each toxicity checker on a labelled set (exit 1
    when a checker misses the target)."""
    from ragops.safety import toxicity as T

    checkers = [args.checker] if args.checker else list(T.CHECKERS)
    r = T.evaluate_set(args.file, checkers, split=args.split, threshold=args.threshold)
    if args.json:
        _print_json(r)
    else:
        t = r["target"]
        print(f"{r['path']} ({r['split']} split, {r['n']} texts): target >= {t['detection']:.0%} of "
              f"{', '.join(t['categories'])} detected at <= {t['false_alarms']:.0%} false alarms on "
              f"{', '.join(t['clean'])}")
        cats = list(next(iter(r["checkers"].values()))["categories"])
        print(f"  {'checker':<10} {'threshold':>9} " + " ".join(f"{c[:13]:>13}" for c in cats)
              + f" {'detection':>9} {'false al.':>9} {'texts/s':>8}  target")
        for name, c in r["checkers"].items():
            cells = " ".join(f"{c['categories'][k]['flagged']:>4}/{c['categories'][k]['n']:<3} {c['categories'][k]['rate']:>4.0%}"
                             for k in cats)
            print(f"  {name:<10} {c['threshold']:>9.4f} {cells} {c['detection']:>9.1%} {c['false_alarms']:>9.1%} "
                  f"{c['texts_per_second']:>8.0f}  {'met' if c['target_met'] else 'NOT MET'}")
        print("  (false alarm columns: " + ", ".join(t["clean"]) + "; every other column is detection)")
    return 0 if all(c["target_met"] for c in r["checkers"].values()) else 1


def cmd_prompts_sync(args: argparse.Namespace) -> int:
    from ragops import registry

    r = registry.sync(_settings(args), "cli")
    print(f"registered {len(r['registered'])} new version(s): {', '.join(r['registered']) or 'none'}")
    return 0


def cmd_prompts_new(args: argparse.Namespace) -> int:
    import getpass

    from ragops import registry

    try:
        author = args.author if args.author is not None else getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment (e.g. a container's numeric uid)
        author = ""
    r = registry.new_prompt(_settings(args), args.name, args.source, version=args.version, author=author)
    if args.json:
        _print_json(r)
        return 0
    n, ref, src = r["name"], r["ref"], r["source"]
    print(f"wrote {r['path']}: {ref}, a copy of {src} (not registered yet)")
    print("next steps:")
    print(f"  1. edit it for your documents. Its 'system' text and refusal message are {src}'s:")
    print(f"       refusal.message: {json.dumps(r['source_refusal_message'], ensure_ascii=False)}")
    print("     also set 'message' (what this version is for) and check 'template', 'model', 'retrieval.top_k' "
          "and 'refusal.threshold'")
    print("  2. ragops prompts sync")
    print(f"     validates every new prompt file (an error names the line) and registers {ref}, which is immutable "
          "from then on" + (f"; the first sync of {n} points {n}@production at it" if r["new_prompt"] else ""))
    if r["new_prompt"]:
        print(f"  3. ragops eval run --prompt {ref} --index INDEX --dataset GOLDEN.jsonl")
    else:
        print(f"  3. ragops prompts gate {n} {r['version']} --index INDEX --dataset GOLDEN.jsonl")
        print(f"     evaluates it against {n}@production on the same questions; --promote promotes it when the "
              "gate passes")
    return 0


def cmd_prompts_list(args: argparse.Namespace) -> int:
    from ragops import registry

    rows = registry.list_prompts(_settings(args))
    if args.json:
        _print_json(rows)
        return 0
    for p in rows:
        print(f"{p['name']}: " + (", ".join(f"{a} -> v{v}" for a, v in sorted(p["aliases"].items()))
                                  or "no aliases yet (`ragops prompts sync` registers it)"))
        for v in p["versions"]:
            tags = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
            who = f"  {v['author']}: {v['message'][:80]}" if v["author"] or v["message"] else ""
            print(f"  v{v['version']}{tags}  {v['status']}  {v['hash']}{who}")
    return 0


def cmd_prompts_show(args: argparse.Namespace) -> int:
    from ragops.registry import load_prompt

    p = load_prompt(_settings(args), args.ref)
    if args.json:
        _print_json({**p.summary(), "author": p.author, "message": p.message, "system": p.system,
                     "template": p.template, "variables": list(p.variables)})
        return 0
    print(f"{p.ref}  ({p.path}, sha256 {p.content_hash[:12]})\nauthor: {p.author}\nmessage: {p.message}\n"
          f"model: {p.model.provider}/{p.model.name} {p.model.params}\nretrieval: top_k {p.top_k}, mode "
          f"{p.retrieval_mode or 'the retrieval.mode setting'}; refusal below {p.refusal_threshold}\n"
          f"system: {p.system}\ntemplate:\n{p.template}")
    return 0


def cmd_prompts_diff(args: argparse.Namespace) -> int:
    from ragops import registry

    print(registry.diff(_settings(args), args.name, args.a, args.b) or "(no difference)")
    return 0


def cmd_prompts_promote(args: argparse.Namespace) -> int:
    from ragops import registry

    r = registry.promote(_settings(args), args.name, args.version, actor="cli", reason=args.reason,
                         alias=args.alias)
    print(f"{r['name']}@{r['alias']}: " + (f"v{r['from']} -> " if r["from"] is not None else "new alias -> ") + f"v{r['to']}")
    return 0


def cmd_prompts_rollback(args: argparse.Namespace) -> int:
    from ragops import registry

    r = registry.rollback(_settings(args), args.name, actor="cli", reason=args.reason, to=args.to)
    print(f"{r['name']}@production rolled back: v{r['from']} -> v{r['to']}")
    return 0


def cmd_prompts_history(args: argparse.Namespace) -> int:
    from ragops import registry

    rows = registry.history(_settings(args), args.name)
    if args.json:
        _print_json(rows)
        return 0
    for e in rows:
        moved = f"v{e['from']} -> v{e['to']}" if e["from"] is not None else f"v{e['to']}"
        print(f"{e['at'][:19]}  {e['alias']:<10} {e['action']:<11} {moved:<10} by {e['actor']}: {e['reason']}")
    return 0


def cmd_prompts_gate(args: argparse.Namespace) -> int:
    from ragops import promotion

    s = _settings(args)
    version = promotion.choose_candidate(s, args.name, args.version)
    if version is None:
        print(f"nothing to evaluate: {args.name} has no undecided version newer than production")
        return 0
    index = args.index or s.prompts.index or s.ingest.default_index
    # as `eval run --index`: without --dataset (and prompts.dataset), the index's own golden set
    dataset = _path_arg(args.dataset) or s.prompts.dataset or s.golden_set(index)
    d = promotion.evaluate(s, args.name, version, gate=args.gate, dataset=dataset, index=index,
                           run_prefix=f"cli_gate_{args.name}_v{version}_{new_run_suffix()}", trigger="cli")
    if args.json:
        _print_json(d)
    else:
        print(f"gate {d['profile']}: {args.name}@{version} vs @{d['production_version']} on {d['questions']} questions: "
              f"{'PASSED' if d['passed'] else 'FAILED'}")
        for c in d["checks"]:
            diff = f" diff {c['difference']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}]" if c.get("ci") else ""
            v = c.get("candidate")
            cand = (f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool)
                    else c["note"] if v is None and c.get("note") else str(v))  # e.g. too few questions: not tested
            print(f"  {'ok  ' if c['passed'] else 'FAIL'} {c['kind']:<14} {c['metric']:<22} {c['rule']:<28} {cand}{diff}")
    if args.promote and d["passed"]:
        promotion.promote(s, d, "cli")
        print(f"{args.name}@production -> v{version}")
    elif args.promote:
        promotion.reject(s, d, "cli")
    return 0 if d["passed"] else 1


def new_run_suffix() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def cmd_ask(args: argparse.Namespace) -> int:
    from ragops.production.app import answer

    a = answer(args.question, index=args.index, prompt=args.prompt, settings=_settings(args), user_id=args.user,
               session_id=args.session, mode=args.retrieval)
    if args.json:
        _print_json(a.as_dict())
        return 0
    print(a.answer)
    print()
    for c in a.contexts:
        page = f", p. {c['page']}" if c.get("page") else ""
        print(f"  [{c['n']}] {c['doc_id']}{page}  ({c['score']:.3f})")
    cost = "unknown (no price)" if a.cost_usd is None else f"{a.cost_usd:.6f} USD"
    print(f"\ntrace {a.trace_id} · {a.prompt} · {a.index}@{a.index_version} · {a.served_model} · "
          f"{a.latency_ms:.0f} ms (retrieval {a.retrieval_ms:.0f}, generation {a.generation_ms:.0f}) · "
          f"tokens {a.tokens_in}/{a.tokens_out} · cost {cost}{' · cache hit' if a.cache_hit else ''}")
    print(f"feedback: ragops feedback {a.trace_id} up|down [--comment TEXT]")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from ragops.production.tracing import feedback

    fid = feedback(args.trace_id, args.score, args.comment, settings=_settings(args))
    print(f"feedback {fid} recorded for trace {args.trace_id} (loaded by the next monitor_production run)")
    return 0


def cmd_traces_load(args: argparse.Namespace) -> int:
    from ragops.production.load import load

    r = load(_settings(args)).as_dict()
    if args.json:
        _print_json(r)
        return 0
    print(f"{r['files']} file(s), {r['lines']} new line(s): {r['traces']} trace(s), {r['feedback']} feedback, "
          f"{r['duplicates']} already loaded, {r['skipped_total']} skipped in {r['seconds']}s")
    for reason, n in r["skipped"].items():
        print(f"  skipped {n} x {reason}, e.g. {r['examples'][reason][0]}")
    return 0


def cmd_monitor_run(args: argparse.Namespace) -> int:
    from ragops.production.monitor import run

    r = run(_settings(args), window=args.window, evaluate_sample=not args.no_eval, rate=args.sample_rate,
            cap=args.cap)
    if args.json:
        _print_json(r)
    else:
        print(f"monitor run {r['run_id']}: {r['status']}, {r['requests']} request(s) in the window, "
              f"{r['online_eval'].get('evaluated', 0)} evaluated now, {r['load']['traces']} trace(s) loaded")
        for name, c in r["checks"].items():
            fig = (f"{c['rate']:.3f} ({c['k']}/{c['n']}) limit {c['limit']} p={c['p_value']:.4f}" if "rate" in c
                   else c.get("reason") or f"{c.get('cost_usd')} USD")
            print(f"  {name:<18} {c['status']:<8} {fig}")
        for w in r["worst"]:
            print(f"  worst ({w['why']}): {w['trace_id']}  {w['question'][:80]}")
    return 1 if r["breaches"] else 0


def cmd_monitor_history(args: argparse.Namespace) -> int:
    from ragops.production.monitor import history

    rows = history(_settings(args), args.limit)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no monitor runs yet: run `ragops monitor run` or trigger the monitor_production DAG")
    for r in rows:
        print(f"{r['started_at'][:19]}  {r['run_id']:<56} {r['status']:<8} {r['requests'] or 0:>7} req  "
              f"{', '.join(r['breaches']) or '-'}")
    return 0


def cmd_monitor_show(args: argparse.Namespace) -> int:
    from ragops.production.monitor import show

    _print_json(show(_settings(args), args.run_id))
    return 0


def cmd_review_queue(args: argparse.Namespace) -> int:
    from ragops.production import review

    s = _settings(args)
    items = review.queue(s, args.index, args.limit)
    if args.json:
        _print_json({"pending": review.pending_count(s, args.index), "items": items})
        return 0
    if not items:
        print("nothing waiting for review" + (f" on index {args.index}" if args.index else ""))
        return 0
    for r in items:
        print(f"{r['trace_id']}  {(r['ts'] or '')[:19]}  {r['prompt'] or '-'}  index {r['index_ref'] or '-'}  "
              f"[{', '.join(r['reasons'])}]")
        print(f"  Q: {r['question']}")
        print(f"  A: {r['answer'] if r['answer'] is not None else '(no answer: ' + str(r['error']) + ')'}")
        for c in r["unsupported_claims"]:
            print(f"  unsupported: {c['claim']}" + (f" ({c['reason']})" if c["reason"] else ""))
        if r["feedback_comment"]:
            print(f"  user: {r['feedback_comment']}")
        print(f"  retrieved: {', '.join(dict.fromkeys(str(c.get('doc_id')) for c in r['contexts'])) or 'none'}")
    pending = review.pending_count(s, args.index)
    if pending > len(items):
        print(f"({len(items)} of {pending} shown; --limit shows more)")
    return 0


def cmd_review_submit(args: argparse.Namespace) -> int:
    import getpass

    from ragops.production import review

    r = review.submit(_settings(args), args.trace_id, args.verdict, reference_answer=args.answer,
                      relevant=args.relevant or (), reviewer=args.reviewer or getpass.getuser())
    if args.json:
        _print_json(r)
        return 0
    where = f": question {r['question_id']} in {r['golden_path']}" if r["question_id"] else ""
    print(f"trace {r['trace_id']} {'was already reviewed' if r['already_reviewed'] else 'reviewed'} as "
          f"{r['verdict']} by {r['reviewer']}{where}")
    return 0


def cmd_review_versions(args: argparse.Namespace) -> int:
    from ragops.production.versions import production_view

    data = production_view(_settings(args), days=args.days)
    if args.json:
        _print_json(data)
        return 0

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}%"

    def ci(iv: Any, signed: bool = False) -> str:
        return "" if not iv else " [" + ", ".join(f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}" for x in iv) + "]"

    print(f"production traffic of the last {data['days']} days, by prompt version")
    for v in data["versions"]:
        h, g = v["hallucination"], v["golden"] or {}
        gm = g.get("metrics") or {}
        print(f"  {v['prompt']}@{v['version']} {' '.join(v['aliases'])}".rstrip())
        print(f"    requests {v['requests']}, refusals {pct(v['refusal_rate'])}, negative feedback "
              f"{pct(v['negative_feedback_rate'])} of {v['feedback']}, hallucination {pct(h['rate'])}{ci(h['ci'])} "
              f"of {h['n']} evaluated, latency p95 {v['latency_p95_ms'] or '-'} ms, cost {v['cost_usd']:.4f} USD"
              + (f" (+{v['unpriced_requests']} unpriced)" if v["unpriced_requests"] else ""))
        print("    golden: " + (f"{g['run_id']} hallucination_rate {gm.get('hallucination_rate')}, faithfulness "
                                 f"{gm.get('faithfulness')}, answer_f1 {gm.get('answer_f1')}, hit_rate@5 "
                                 f"{gm.get('hit_rate@5')}" if g else "no eval run of this version"))
    print("production-alias moves older than a day (before -> after, difference with its 95% interval)")
    for e in data["promotions"]:
        print(f"  {e['at'][:19]} {e['prompt']} v{e['from_version']} -> v{e['to_version']} ({e['action']}, "
              f"{e['actor']})")
        for label, m in (("hallucination", e["hallucination"]), ("negative feedback", e["negative_feedback"])):
            diff = (f"{100 * m['difference']:+.1f} pt{ci(m['ci'], True)} {m['status']}" if m["difference"] is not None
                    else f"{m['status']} ({m['why']})")
            print(f"    {label}: {pct(m['before']['rate'])} of {m['before']['n']} -> {pct(m['after']['rate'])} of "
                  f"{m['after']['n']}: {diff}")
    if not data["promotions"]:
        print("  none")
    return 0


COST_BY = {"day": ("hour",), "hour": ("hour",), "prompt": ("prompt", "prompt_version"), "model": ("model",),
           "index": ("index", "index_version")}


def cmd_cost_report(args: argparse.Namespace) -> int:
    import datetime as dt

    from ragops.config import parse_window
    from ragops.production.aggregate import figures
    from ragops.production.load import load

    s = _settings(args)
    names = [b.strip() for b in args.by.split(",") if b.strip()]
    bad = [b for b in names if b not in COST_BY]
    if bad or not names:
        raise RagopsError(f"--by {args.by!r}: use a comma-separated list of {', '.join(COST_BY)}")
    try:
        since = dt.datetime.now(dt.UTC) - parse_window(args.since, "--since")
    except Exception as exc:  # noqa: BLE001 - ConfigError names the expected form
        raise RagopsError(str(exc)) from exc
    if not args.no_load:
        load(s)
    by = tuple(d for b in names for d in COST_BY[b])
    rows = figures(s, since, by=by, day="day" in names)
    keep = ("requests", "tokens_in", "tokens_out", "cost_usd", "unpriced_requests", "cost_known", "cache_hits",
            "saved_tokens", "saved_usd")
    label = {"hour": "day" if "day" in names else "hour"}
    by_out = tuple(label.get(d, d) for d in by)
    out = [{**{label.get(d, d): r[d] for d in by}, **{k: r[k] for k in keep}} for r in rows]
    total = {k: sum(r[k] for r in rows) for k in ("requests", "tokens_in", "tokens_out", "cost_usd",
                                                  "unpriced_requests", "cache_hits", "saved_tokens", "saved_usd")}
    if args.json:
        _print_json({"since": since.isoformat(), "by": names, "rows": out, "total": total})
        return 0
    if not out:
        print(f"no traces since {since:%Y-%m-%d %H:%M} UTC")
        return 0
    head = "  ".join(f"{d:<16}" for d in by_out)
    print(f"{head}  {'requests':>8}  {'tokens in':>10}  {'tokens out':>10}  {'cost USD':>12}  {'cache hits':>10}")
    for r in out:
        cost = f"{r['cost_usd']:.6f}" if r["cost_known"] else f"UNKNOWN({r['unpriced_requests']} unpriced)"
        if not r["cost_known"] and r["cost_usd"]:
            cost = f">= {r['cost_usd']:.6f}*"
        print("  ".join(f"{str(r[d])[:16]:<16}" for d in by_out) + f"  {r['requests']:>8}  {r['tokens_in']:>10}  "
              f"{r['tokens_out']:>10}  {cost:>12}  {r['cache_hits']:>10}")
    note = (f" ({total['unpriced_requests']} request(s) by a model without a price in eval.prices: not counted; "
            "the true cost is higher)" if total["unpriced_requests"] else "")
    print(f"total: {total['requests']} request(s), {total['cost_usd']:.6f} USD{note}; cache saved "
          f"{total['saved_tokens']} tokens, {total['saved_usd']:.6f} USD")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ragops", description="Operate the ragops RAG pipeline from a shell.")
    p.add_argument("--version", action="version", version=f"ragops {__version__}")
    p.add_argument("--config", help="settings YAML (default: $RAGOPS_CONFIG or include/config/ragops.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress and library messages to stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar (also RAGOPS_PROGRESS=off)")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="state store").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="create or migrate the state store (safe to repeat)").set_defaults(fn=cmd_db_upgrade)

    ing = sub.add_parser("ingest", help="sync a source into an index (same steps as the ingest_documents DAG)")
    ing.add_argument("source", help="directory, .jsonl/.parquet file, or fsspec URL (s3://..., file://...)")
    ing.add_argument("--index", help="index name (default: ingest.default_index)")
    ing.add_argument("--full-resync", action="store_true",
                     help="re-parse and re-chunk every document and reconcile Chroma (embeds only what is missing)")
    ing.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    ing.add_argument("--allow-mass-delete", action="store_true",
                     help="allow deleting more than quality.max_delete_share of the source's documents")
    ing.add_argument("--json", action="store_true", help="print the run report as JSON")
    ing.set_defaults(fn=cmd_ingest)

    se = sub.add_parser("search", help="top-k chunks for a query")
    se.add_argument("text")
    se.add_argument("-k", type=int, default=5, help="number of results (default 5)")
    se.add_argument("--index", help="index name (default: ingest.default_index)")
    se.add_argument("--retrieval", choices=["dense", "lexical", "hybrid"],
                    help="dense (Chroma), lexical (BM25) or hybrid (fused); default: retrieval.mode")
    se.add_argument("--json", action="store_true")
    se.set_defaults(fn=cmd_search)

    idx = sub.add_parser("index", help="index information").add_subparsers(dest="index_command", required=True)
    st = idx.add_parser("status", help="live collection, counts, last sync and self-check")
    st.add_argument("--index")
    st.add_argument("--no-check", action="store_true", help="skip the Chroma self-check")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_index_status)

    rb = idx.add_parser("rebuild", help="build a new version (vectors reused; sources re-read for another model or "
                                         "chunking), validate it against live, swap")
    rb.add_argument("--index")
    rb.add_argument("--model", help="embedding model (bundled:all-MiniLM-L6-v2 or a local sentence-transformers "
                                    "folder) to pin; 'settings' = follow embedding.model; default: keep the index's")
    rb.add_argument("--profile", help="chunking profile (chunking.profiles) to pin; 'settings' = follow "
                                      "chunking.profile; default: keep the index's")
    rb.add_argument("--backend", choices=["torch", "onnx", "openvino", "onnx-int8", "settings"],
                    help="embedding backend to pin (same model, another runtime; onnx-int8 = quantised); "
                         "'settings' = follow embedding.backend; default: keep the index's")
    rb.add_argument("--force", action="store_true", help="embed every chunk again instead of reusing stored vectors")
    rb.add_argument("--json", action="store_true")
    rb.set_defaults(fn=cmd_index_rebuild)
    tu = idx.add_parser("tune", help="choose the live version's retrieval mode and fusion weights from the index's "
                                      "golden set (retrieval only; dense unless another is significantly better)")
    tu.add_argument("--index", help="index name (default: ingest.default_index)")
    tu.add_argument("--dataset", help="golden JSONL (default: indexes.<index>.golden, or eval.default_dataset for the "
                                      "default index)")
    tu.add_argument("--dry-run", action="store_true", help="report the choice; store nothing")
    tu.add_argument("--json", action="store_true")
    tu.set_defaults(fn=cmd_index_tune)
    ro = idx.add_parser("rollback", help="serve a retained earlier version again")
    ro.add_argument("--index")
    ro.add_argument("--to", type=int, help="version number (default: the newest retired one)")
    ro.add_argument("--json", action="store_true")
    ro.set_defaults(fn=cmd_index_rollback)

    qu = sub.add_parser("quarantine", help="documents quarantined by the latest (or a given) run")
    qu.add_argument("--index")
    qu.add_argument("--run", help="a sync run id")
    qu.add_argument("--limit", type=int, default=100)
    qu.add_argument("--all", action="store_true", help="also the documents indexed after a repair or with a warning")
    qu.add_argument("--json", action="store_true")
    qu.set_defaults(fn=cmd_quarantine)
    al = sub.add_parser("alerts", help="the alert e-mail outbox").add_subparsers(dest="alerts_command", required=True)
    ls = al.add_parser("list", help="recent alerts and their delivery status")
    ls.add_argument("--status", choices=["pending", "sent", "folded", "failed", "undeliverable"])
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_alerts_list)
    al.add_parser("flush", help="re-send pending and failed alerts (SMTP Connection smtp_default)").set_defaults(
        fn=cmd_alerts_flush)

    ev = sub.add_parser("eval", help="evaluation runs and golden datasets").add_subparsers(dest="eval_command",
                                                                                          required=True)
    ib = ev.add_parser("import-beir", help="turn a BEIR folder into a golden JSONL set")
    ib.add_argument("folder", help="BEIR folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    ib.add_argument("--split", default="test")
    ib.add_argument("-o", "--output", required=True, help="golden JSONL file to write")
    ib.add_argument("--doc-prefix", default="",
                    help="prefix of index doc ids (records read from a directory source get '<file>#')")
    ib.set_defaults(fn=cmd_eval_import_beir)
    va = ev.add_parser("validate", help="check a golden JSONL set (and its doc ids against an index)")
    va.add_argument("dataset")
    va.add_argument("--index", help="also check that every relevant doc id is in this index")
    va.set_defaults(fn=cmd_eval_validate)
    er = ev.add_parser("run", help="evaluate a prompt on an index with a golden set")
    er.add_argument("--dataset", help="golden JSONL (default: eval.default_dataset)")
    er.add_argument("--prompt", help="NAME@VERSION or NAME@ALIAS (default: eval.default_prompt)")
    er.add_argument("--index", help="index name (default: ingest.default_index)")
    er.add_argument("--output", help="output folder (default: <data_dir>/eval/<run_id>)")
    er.add_argument("--sample", type=int, help="evaluate a seeded random sample of this many questions")
    er.add_argument("--baseline", action="store_true",
                    help="count this run in nightly_eval's baseline (like a nightly run)")
    er.add_argument("--retrieval", choices=["dense", "lexical", "hybrid"],
                    help="retrieval mode for this run (default: the prompt's retrieval.mode, else retrieval.mode)")
    er.add_argument("--allow-unknown-docs", action="store_true",
                    help="relevant doc ids missing from the index count as never retrieved instead of an error "
                         "(e.g. BEIR documents that failed the quality checks)")
    er.add_argument("--reuse-cache", action="store_true",
                    help="answer from the LLM response cache of earlier runs where it has the same request and the "
                         "endpoint still serves the same model (default: every run calls the model)")
    er.add_argument("--json", action="store_true", help="print metrics.json")
    er.set_defaults(fn=cmd_eval_run)
    for name, helptext in (("groundedness", "detection per error kind and false alarms of each groundedness checker "
                                             "on a labelled file"),
                           ("calibrate", "agreement of each checker with human labels (accuracy, precision, recall, "
                                         "Cohen's kappa), stored for the gates and the LLMOps page")):
        x = ev.add_parser(name, help=helptext)
        x.add_argument("file", help="JSONL of {question, contexts, answer, label: grounded|hallucinated, kind}; "
                                    "include/eval/groundedness/docs.jsonl is bundled")
        x.add_argument("--checker", action="append", choices=("deterministic", "cosine", "judge"),
                       help="run only this checker (repeatable); default: all that can run here")
        x.add_argument("--misses", action="store_true", help="list every answer a checker got wrong")
        x.add_argument("--json", action="store_true")
        x.set_defaults(fn=cmd_eval_groundedness)
    rs = ev.add_parser("runs", help="recent eval runs")
    rs.add_argument("--index")
    rs.add_argument("--limit", type=int, default=20)
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(fn=cmd_eval_runs)
    ck = ev.add_parser("check", help="compare a run with the nightly baseline (exit 1 on a regression)")
    ck.add_argument("run_id")
    ck.add_argument("--json", action="store_true")
    ck.set_defaults(fn=cmd_eval_check)
    cp = ev.add_parser("compare", help="two eval runs side by side: every metric with its difference and paired "
                                       "interval, then the questions that got worse, worst first")
    cp.add_argument("run_a", help="the run compared against (e.g. production, or last night)")
    cp.add_argument("run_b", help="the run compared (e.g. the candidate); differences are B - A")
    cp.add_argument("--limit", type=int, default=10, help="regressions listed (default 10)")
    cp.add_argument("--json", action="store_true", help="everything, every question with both answers and contexts")
    cp.set_defaults(fn=cmd_eval_compare)
    bi = ev.add_parser("bias", help="counterfactual bias test of a prompt version: each question asked as different "
                                    "people (include/eval/bias/terms.yaml), same passages; gaps per group with "
                                    "intervals (exit 1 when a gap is flagged or nothing could be tested)")
    bi.add_argument("dataset", nargs="?", help="golden JSONL (default: the index's golden set)")
    bi.add_argument("--prompt", required=True, help="NAME@VERSION or NAME@ALIAS")
    bi.add_argument("--against", help="also test this version (e.g. rag_answer@production) and apply the gate rule: "
                                      "the prompt may not introduce a gap it does not have")
    bi.add_argument("--index", help="index name (default: ingest.default_index)")
    bi.add_argument("--terms", help="term file (default: include/eval/bias/terms.yaml)")
    bi.add_argument("--attributes", help="comma-separated attributes of the term file (default: all)")
    bi.add_argument("--limit", type=int, default=20, help="answerable questions used (default 20; 0 = all)")
    bi.add_argument("-o", "--output", help="write the full result as JSON to this file")
    bi.add_argument("--html", metavar="FILE", help="write the tables per attribute (group, n, each metric's mean, "
                                                   "gap and interval, verdict) as a standalone HTML report")
    bi.add_argument("--json", action="store_true")
    bi.set_defaults(fn=cmd_eval_bias)
    tx = ev.add_parser("toxicity", help="detection per category and false alarms of the toxicity checkers on a "
                                        "labelled JSONL set (exit 1 when a checker misses the target)")
    tx.add_argument("file", help="JSONL of {text, category, label, split}, e.g. include/eval/toxicity/answers.jsonl")
    tx.add_argument("--checker", choices=["profanity", "embedding", "combined"], default=None,
                    help="only this checker (default: all three)")
    tx.add_argument("--split", choices=["heldout", "tune", "all"], default="heldout",
                    help="which half to report (default heldout: thresholds were chosen on tune)")
    tx.add_argument("--threshold", type=float, default=None, help="override every checker's tuned threshold")
    tx.add_argument("--json", action="store_true", help="every figure, the missed texts and the false alarms")
    tx.set_defaults(fn=cmd_eval_toxicity)

    pr = sub.add_parser("prompts", help="the prompt registry: versions, aliases, history, gated promotion") \
        .add_subparsers(dest="prompts_command", required=True)
    x = pr.add_parser("sync", help="register new prompt files (registered versions are immutable)")
    x.set_defaults(fn=cmd_prompts_sync)
    x = pr.add_parser("new", help="write a new version file to edit (NAME/v1.yaml, or the next free version of "
                                  "NAME), copied from another version; never overwrites")
    x.add_argument("name", help="prompt name: a-z, 0-9, '_' and '-' (the folder under the prompts directory)")
    x.add_argument("--from", dest="source", metavar="REF",
                   help="NAME, NAME@VERSION or NAME@ALIAS to copy (default: NAME's newest version, or the bundled "
                        "rag_answer for a new prompt); bundled prompts are found when the prompts directory "
                        "lacks them")
    x.add_argument("--version", type=int, help="version number to write (default: the next free one)")
    x.add_argument("--author", help="the file's author field (default: your user name)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_prompts_new)
    x = pr.add_parser("list", help="prompts, versions, aliases and whether a file was edited")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_prompts_list)
    x = pr.add_parser("show", help="one version: NAME, NAME@VERSION or NAME@ALIAS")
    x.add_argument("ref")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_prompts_show)
    x = pr.add_parser("diff", help="unified diff of two versions (numbers or aliases)")
    x.add_argument("name")
    x.add_argument("a")
    x.add_argument("b")
    x.set_defaults(fn=cmd_prompts_diff)
    x = pr.add_parser("promote", help="point an alias (default production) at a version, without a gate")
    x.add_argument("name")
    x.add_argument("version", type=int)
    x.add_argument("--alias", default="production")
    x.add_argument("--reason", default="", help="recorded in the history")
    x.set_defaults(fn=cmd_prompts_promote)
    x = pr.add_parser("rollback", help="production back to the version before its last move")
    x.add_argument("name")
    x.add_argument("--to", type=int, help="a version number instead")
    x.add_argument("--reason", default="")
    x.set_defaults(fn=cmd_prompts_rollback)
    x = pr.add_parser("history", help="who moved which alias, when, why")
    x.add_argument("name")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_prompts_history)
    x = pr.add_parser("gate", help="evaluate a candidate against production and apply a gate profile "
                                   "(exit 1 when it fails)")
    x.add_argument("name")
    x.add_argument("version", type=int, nargs="?", help="default: the oldest undecided version newer than production")
    x.add_argument("--gate", help="gates.<profile> (default: prompts.gate)")
    x.add_argument("--dataset", help="golden JSONL (default: prompts.dataset, else the index's golden set: "
                                     "indexes.<index>.golden, or eval.default_dataset for the default index)")
    x.add_argument("--index", help="index to evaluate on (default: prompts.index, else ingest.default_index)")
    x.add_argument("--promote", action="store_true", help="promote when it passes (record the rejection otherwise)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_prompts_gate)

    from ragops.config import DRIFT_CHECKS, DRIFT_METHODS

    dr = sub.add_parser("drift", help="corpus, query, document and quality drift; reference snapshots") \
        .add_subparsers(dest="drift_command", required=True)
    x = dr.add_parser("check", help="run a drift check now (exit 1 on a breach); the check_drift DAG runs the same")
    x.add_argument("--index", default=None)
    x.add_argument("--checks", nargs="+", choices=DRIFT_CHECKS, help="default: drift.checks")
    x.add_argument("--methods", nargs="+", choices=DRIFT_METHODS, help="default: drift.methods")
    x.add_argument("--reference", default="last", help="snapshot name, or 'last' (default)")
    x.add_argument("--reference-window", help="e.g. 7d (default: drift.reference_window)")
    x.add_argument("--current-window", help="e.g. 1d (default: drift.current_window)")
    x.add_argument("--sample-size", type=int)
    x.add_argument("--permutations", type=int)
    x.add_argument("--seed", type=int)
    x.add_argument("--check-id", help="re-using a finished check's id returns its stored outcome")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_drift_check)
    x = dr.add_parser("snapshot", help="take a named reference snapshot of an index's live version")
    x.add_argument("--index", default=None, help="default: ingest.default_index")
    x.add_argument("--name", required=True)
    x.add_argument("--sample-size", type=int)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_drift_snapshot)
    x = dr.add_parser("snapshots", help="reference snapshots (automatic and named)")
    x.add_argument("--index", default=None)
    x.add_argument("--delete", metavar="NAME", help="delete this snapshot (of --index, default ingest.default_index)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_drift_snapshots)
    x = dr.add_parser("history", help="recent drift checks")
    x.add_argument("--index", default=None)
    x.add_argument("--limit", type=int, default=20)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_drift_history)
    x = dr.add_parser("show", help="one check's parameters, figures and breaches (JSON)")
    x.add_argument("check_id")
    x.set_defaults(fn=cmd_drift_show)

    lm = sub.add_parser("llm", help="the bundled local chat model (SmolLM2-135M-Instruct, CPU) and its "
                                    "OpenAI-compatible server").add_subparsers(dest="llm_command", required=True)
    x = lm.add_parser("serve", help="serve the local model at http://HOST:PORT/v1 (foreground; Ctrl-C stops)")
    x.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in a container)")
    x.add_argument("--port", type=int, default=8765)
    x.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: RAGOPS_TORCH_THREADS "
                                                             "or torch's default)")
    x.add_argument("--model-file", default=None, help="another GGUF file (default: RAGOPS_LOCAL_MODEL_FILE or "
                                                      "the bundled one)")
    x.set_defaults(fn=cmd_llm_serve)
    x = lm.add_parser("info", help="the model file: path, size, sha256, served name")
    x.add_argument("--json", action="store_true")
    x.add_argument("--model-file", default=None)
    x.set_defaults(fn=cmd_llm_info)
    x = sub.add_parser("ask", help="answer a question like the live application (ragops.app.answer) and trace it")
    x.add_argument("question")
    x.add_argument("--index", default=None, help="default: ingest.default_index")
    x.add_argument("--prompt", default="rag_answer", help="NAME (its production version), NAME@VERSION or NAME@ALIAS")
    x.add_argument("--retrieval", choices=["dense", "lexical", "hybrid"], default=None)
    x.add_argument("--user", default=None, help="user id (stored hashed)")
    x.add_argument("--session", default=None, help="session id (stored hashed)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_ask)
    x = sub.add_parser("feedback", help="a user's verdict on a traced answer")
    x.add_argument("trace_id")
    x.add_argument("score", help="up, down, or a number (> 0 good, < 0 bad)")
    x.add_argument("--comment", default=None)
    x.set_defaults(fn=cmd_feedback)
    tr = sub.add_parser("traces", help="the live application's traces").add_subparsers(dest="traces_command",
                                                                                      required=True)
    x = tr.add_parser("load", help="load new trace and feedback lines into the state store (idempotent)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_traces_load)
    mo = sub.add_parser("monitor", help="production monitoring (the monitor_production DAG)").add_subparsers(
        dest="monitor_command", required=True)
    x = mo.add_parser("run", help="load traces, evaluate a sample, check (exit 1 on a breach)")
    x.add_argument("--window", default=None, help="e.g. 1d, 6h (default: production.window)")
    x.add_argument("--no-eval", action="store_true", help="skip the online evaluation")
    x.add_argument("--sample-rate", type=float, default=None)
    x.add_argument("--cap", type=int, default=None, help="evaluations per UTC day")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_monitor_run)
    x = mo.add_parser("history", help="recent monitor runs")
    x.add_argument("--limit", type=int, default=20)
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_monitor_history)
    x = mo.add_parser("show", help="one monitor run's figures (JSON; default: the latest)")
    x.add_argument("run_id", nargs="?", default=None)
    x.set_defaults(fn=cmd_monitor_show)
    co = sub.add_parser("cost", help="what the live application cost").add_subparsers(dest="cost_command",
                                                                                     required=True)
    x = co.add_parser("report", help="cost by day, prompt, model, index (unpriced models flagged, never free)")
    x.add_argument("--by", default="day,prompt,model", help="comma-separated: day, hour, prompt, model, index")
    x.add_argument("--since", default="7d", help="e.g. 7d, 24h, 2w")
    x.add_argument("--no-load", action="store_true", help="do not load new trace lines first")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_cost_report)
    rv = sub.add_parser("review", help="the review queue: production answers users disliked or that made unsupported "
                                       "claims, turned into golden questions") \
        .add_subparsers(dest="review_command", required=True)
    x = rv.add_parser("queue", help="traces waiting for review, newest first")
    x.add_argument("--index", help="only this index")
    x.add_argument("--limit", type=int, default=50, help="at most this many (1-500)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_review_queue)
    x = rv.add_parser("submit", help="record a verdict; answer and unanswerable add the question to "
                                     "<reviewed_dir>/<index>.jsonl, which nightly_eval evaluates")
    x.add_argument("trace_id")
    x.add_argument("--verdict", required=True, choices=["answer", "unanswerable", "not_a_problem"])
    x.add_argument("--answer", help="the correct answer (verdict answer)")
    x.add_argument("--relevant", nargs="+", metavar="DOC_ID", help="ids of the documents that hold the answer "
                                                                     "(verdict answer)")
    x.add_argument("--reviewer", help="who judged it (default: your login name)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_review_submit)
    x = rv.add_parser("versions", help="production figures per prompt version and the effect of promotions")
    x.add_argument("--days", type=int, default=7, help="traffic window (and before/after window of a promotion)")
    x.add_argument("--json", action="store_true")
    x.set_defaults(fn=cmd_review_versions)
    return p


NOISY_LOGGERS = ("chromadb", "httpx", "sentence_transformers", "great_expectations")


def _quiet_libraries(record: logging.LogRecord) -> bool:
    """Keep libraries' INFO records out of a non-verbose run: Great Expectations sets some of its
    loggers to INFO when it is imported, which a level on its parent logger cannot undo."""
    return record.levelno >= logging.WARNING or not record.name.startswith(NOISY_LOGGERS)


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


def hoist_global_flags(argv: list[str]) -> list[str]:
    """``-v``, ``-q`` and ``--config FILE`` work after the subcommand too (``ragops ingest SRC -v``):
    argparse only knows them before it, so they are moved to the front (not past a ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        if a in GLOBAL_FLAGS or a.startswith("--config="):
            front.append(a)
        elif a == "--config" and i + 1 < len(argv):
            front += [a, argv[i + 1]]
            i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def main(argv: list[str] | None = None) -> int:
    from ragops import progress

    args = build_parser().parse_args(hoist_global_flags(list(sys.argv[1:] if argv is None else argv)))
    progress.configure("off" if args.quiet else None)
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in root.handlers:
        if handler not in before and not args.verbose:  # only the handler this command installed
            handler.addFilter(_quiet_libraries)
    try:
        return int(args.fn(args))
    except RagopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
