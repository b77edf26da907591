"""The repair step on BEIR SciFact as shipped: quarantine count and cost, before and after.

Reads every record of ``corpus.jsonl`` the way ``ragops ingest`` does (``ragops.sources`` record
mapping, ``ragops.parsing.parse_record``), then runs the document stage twice on the same texts:

* before: the old rule, one C0/C1 control or U+FFFD anywhere quarantines the document;
* after: ``ragops.repair`` (timed on its own) and the document suite of ``ragops.quality`` in
  batches of ``ingest.batch_documents`` (timed), which quarantines only dangerous or mostly broken
  text.

The repair cost is compared with the full SciFact ingest recorded by ``bench/ingest_scifact.py``
(``bench/results/ingest_scifact.json``: the target is under 2% of it). Embedding is not run here:
the document stage is where SciFact's documents used to be quarantined.

    .venv/bin/python bench/repair_scifact.py [--dataset DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness as H  # noqa: E402

SCRIPT = Path(__file__).resolve()
OLD_PATTERN = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufffd]")  # the rule before ragops.repair


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    H.add_common_args(ap, keep_tmp=False, verbose=False)
    args = H.check_common_args(ap, ap.parse_args())
    dataset = H.dataset_or_skip(args.dataset)
    if dataset is None:
        return 0
    from ragops.config import RecordSettings, load_settings
    from ragops.parsing import parse_record
    from ragops.quality import validate
    from ragops.repair import repair_text

    settings = load_settings()
    rs: RecordSettings = settings.ingest.records
    records = [json.loads(line) for line in H.iter_lines(dataset / "corpus.jsonl", args.limit)]

    t = time.perf_counter()
    docs = []
    for rec in records:
        rid = str(next(rec[k] for k in rs.id_field if k in rec))
        docs.append(parse_record(f"corpus.jsonl#{rid}", rec))
    parse_s = time.perf_counter() - t

    before = [d.doc_id for d in docs if OLD_PATTERN.search(d.text)]  # the old suite read the text column only

    t = time.perf_counter()
    reps = [(repair_text(d.title or ""), repair_text(d.text)) for d in docs]
    repair_s = time.perf_counter() - t

    rows = []
    for d, (rt, rx) in zip(docs, reps, strict=True):
        rows.append({"doc_id": d.doc_id, "title": rt.text, "uri": d.doc_id, "text": rx.text,
                     "bad_char_share": rx.bad_share(), "n_repairs": sum(rx.repairs.values()) + sum(rt.repairs.values())})
    batch = settings.ingest.batch_documents
    t = time.perf_counter()
    failed: dict[str, list[str]] = {}
    warned: dict[str, list[str]] = {}
    for i in range(0, len(rows), batch):
        part = rows[i:i + batch]
        res = validate("documents", part, settings.quality)
        failed.update({part[j]["doc_id"]: r for j, r in res.failed_rows.items()})
        warned.update({part[j]["doc_id"]: r for j, r in res.warned_rows.items()})
    quality_s = time.perf_counter() - t
    dangerous = [d.doc_id for d, (rt, rx) in zip(docs, reps, strict=True) if rt.dangerous or rx.dangerous]
    kinds: Counter[str] = Counter()
    changed = []
    for d, (rt, rx) in zip(docs, reps, strict=True):
        for r in (rt, rx):
            for k, n in r.repairs.items():
                kinds[f"repaired:{k}"] += n
            for k, n in r.warnings.items():
                kinds[f"warning:{k}"] += n
        if rt.findings() or rx.findings():
            changed.append({"doc_id": d.doc_id, "title": rt.findings(), "text": rx.findings()})

    ingest_file = H.RESULTS_DIR / "ingest_scifact.json"
    ingest_s = None
    if ingest_file.exists():
        ingest_s = json.loads(ingest_file.read_text())["figures"]["ingest"]["seconds"]
    share = repair_s / ingest_s if ingest_s else None
    targets = [
        H.Target("quarantined after repair (document stage)", len(failed), "== 0", len(failed) == 0),
        H.Target("repair cost / full ingest", round(share, 5) if share is not None else "no ingest figure",
                 "< 0.02", share < 0.02 if share is not None else None),
    ]
    result = {
        "benchmark": "repair_scifact", "command": H.command_line(SCRIPT), "date": H.iso(H.utc_now()),
        "dataset": str(dataset), "documents": len(docs), "machine": H.basic_machine(),
        "quarantined_before": len(before), "quarantined_before_ids": before,
        "quarantined_after": len(failed), "quarantined_after_ids": sorted(failed), "dangerous": dangerous,
        "warned_documents": len(warned), "repaired_or_warned_documents": changed,
        "kinds": dict(sorted(kinds.items())),
        "seconds": {"parse": round(parse_s, 3), "repair": round(repair_s, 3), "quality_suite": round(quality_s, 3)},
        "full_ingest_s": ingest_s, "full_ingest_source": str(ingest_file.relative_to(H.PROJECT_ROOT)),
        "repair_share_of_ingest": share,
        "targets": [t.__dict__ for t in targets], "all_passed": H.all_passed(targets),
    }
    md = [
        "# Repair step on BEIR SciFact as shipped", "",
        f"{result['date']}, `{result['command']}`, {len(docs)} documents.", "",
        "| | before (one bad character quarantines) | after (ragops.repair) |", "|---|---|---|",
        f"| quarantined at the document stage | {len(before)} ({', '.join(before)}) | {len(failed)} |",
        f"| indexed with a repair or a warning | - | {len(changed)} |", "",
        f"Repairs and warnings: {', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or 'none'}.", "",
        f"Time: parse {parse_s:.2f} s, repair {repair_s:.3f} s, document quality suite {quality_s:.2f} s. Full "
        f"SciFact ingest ({result['full_ingest_source']}): {ingest_s} s, so the repair step is "
        f"{100 * share:.3f}% of it." if share is not None else "No full-ingest figure to compare with.", "",
        "| target | value | wanted | verdict |", "|---|---|---|---|",
    ]
    md += [f"| {t.name} | {H.fmt(t.value)} | {t.target} | {H.verdict(t.passed)} |" for t in targets]
    H.write_results(args.results_dir, "repair_scifact" + (".smoke" if args.limit else ""), result, "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
