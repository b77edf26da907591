#!/usr/bin/env python
"""Embedding backends on BEIR SciFact: speed, query latency, fidelity to torch and retrieval quality.

For each backend of ``embedding.backend`` (torch, onnx, openvino, and onnx with int8 dynamic
quantisation), in one run on the same texts:

- export time (the first load writes the export once; later processes reuse it);
- corpus encode throughput (title + abstract of every document, the embedder's own batching);
- query embedding latency, one query at a time as an application embeds (p50/p95);
- cosine of every corpus vector to torch's (min / mean);
- dense nDCG@10 and Recall@10 on the 300 test queries (exact cosine search over whole
  documents, the model truncating at its 256 word pieces: the published reference setting).

Targets: the default backend (onnx) keeps nDCG@10 within 0.005 of torch's and every vector at
cosine >= 0.9999, embeds a query in <= 8 ms (p50), and is the fastest backend that meets these.

Usage (from the project root)::

    .venv/bin/python bench/embedding_backends.py               # writes bench/results/embedding_backends.{json,md}
    .venv/bin/python bench/embedding_backends.py --limit 300   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import harness as H

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "embedding_backends"
K = 10
BACKENDS = [("torch", "none"), ("onnx", "none"), ("openvino", "none"), ("onnx", "int8")]
DEFAULT = ("onnx", "none")
NDCG_TOLERANCE = 0.005
MIN_COSINE = 0.9999
QUERY_P50_MS = 8.0
SLICE = 256  # documents per interleaved step
log = logging.getLogger("bench.embedding_backends")


def ndcg(ranked: list[str], rels: dict[str, int]) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:K]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(rels.values(), reverse=True)[:K]))
    return dcg / ideal if ideal else 0.0


def measure(dataset: Path, limit: int | None, tmp: Path) -> dict[str, Any]:
    import numpy as np

    from ragops.config import EmbeddingSettings
    from ragops.embedding import Embedder

    docs = [json.loads(line) for line in H.iter_lines(dataset / "corpus.jsonl", limit)]
    ids = [str(d["_id"]) for d in docs]
    texts = [(d.get("title", "") + "\n" + d.get("text", "")).strip() for d in docs]
    queries, qrels = H.test_queries(dataset, set(ids) if limit is not None else None)
    qids = [q for q in queries if q in qrels]
    out: dict[str, Any] = {"documents": len(texts), "queries": len(qids), "backends": {}}
    embedders: dict[str, Any] = {}
    for backend, quant in BACKENDS:
        name = backend + ("" if quant == "none" else f"-{quant}")
        log.info("%s: export/load", name)
        emb = Embedder(EmbeddingSettings(backend=backend, quantize=quant, cache_dir=str(tmp / "models")))
        t0 = time.perf_counter()
        emb.encode(["warm-up"], log_every=1e9)
        embedders[name] = emb
        out["backends"][name] = {"load_or_export_s": round(time.perf_counter() - t0, 2),
                                 "fingerprint": emb.fingerprint}
    # Interleaved, so that every backend meets the same machine: slice by slice (the embedder's
    # own length-sorted batching inside a slice), then query by query. A machine whose speed
    # drifts during the run would otherwise favour whichever backend ran first.
    enc_s = dict.fromkeys(embedders, 0.0)
    parts: dict[str, list[Any]] = {n: [] for n in embedders}
    for start in range(0, len(texts), SLICE):
        for n, emb in embedders.items():
            t0 = time.perf_counter()
            parts[n].append(emb.encode(texts[start:start + SLICE], log_every=1e9))
            enc_s[n] += time.perf_counter() - t0
        log.info("encoded %d/%d documents with every backend", min(start + SLICE, len(texts)), len(texts))
    lat: dict[str, list[float]] = {n: [] for n in embedders}
    qvecs: dict[str, list[Any]] = {n: [] for n in embedders}
    for q in qids:
        for n, emb in embedders.items():
            t = time.perf_counter()
            qvecs[n].append(emb.encode([queries[q]], log_every=1e9)[0])
            lat[n].append((time.perf_counter() - t) * 1000)
    reference = np.concatenate(parts["torch"])
    for n, emb in embedders.items():
        vecs = np.concatenate(parts[n])
        scores = np.asarray(qvecs[n]) @ vecs.T
        nd, rc = [], []
        for row, q in zip(scores, qids, strict=True):
            top = np.lexsort((np.arange(len(ids)), -row))[:K]
            ranked = [ids[i] for i in top]
            rels = {d: g for d, g in qrels[q].items() if g > 0}
            nd.append(ndcg(ranked, rels))
            rc.append(len(set(ranked) & set(rels)) / len(rels))
        cos = np.sum(vecs * reference, axis=1)
        fig = out["backends"][n]
        fig.update({"encode_s": round(enc_s[n], 2), "texts_per_s": round(len(texts) / enc_s[n], 2),
                    "query_ms": H.latency_summary(lat[n]), "ndcg_at_10": round(sum(nd) / len(nd), 4),
                    "recall_at_10": round(sum(rc) / len(rc), 4),
                    "cosine_to_torch": {"min": round(float(cos.min()), 6), "mean": round(float(cos.mean()), 6)}})
        manifest = Path(emb.model.folder, "manifest.json") if hasattr(emb.model, "folder") else None
        if manifest and manifest.exists():
            fig["export"] = json.loads(manifest.read_text())
        log.info("%s: %.1f texts/s, query p50 %.2f ms, nDCG@10 %.4f, min cos %.6f", n, fig["texts_per_s"],
                 fig["query_ms"]["p50_ms"], fig["ndcg_at_10"], fig["cosine_to_torch"]["min"])
    torch_fig = out["backends"]["torch"]
    for fig in out["backends"].values():
        fig["speedup_vs_torch"] = round(fig["texts_per_s"] / torch_fig["texts_per_s"], 2)
        fig["ndcg_delta_vs_torch"] = round(fig["ndcg_at_10"] - torch_fig["ndcg_at_10"], 4)
    return out


def evaluate(fig: dict[str, Any]) -> list[H.Target]:
    b = fig["backends"]
    name = DEFAULT[0]
    d = b[name]
    eligible = [n for n, f in b.items() if abs(f["ndcg_delta_vs_torch"]) <= NDCG_TOLERANCE
                and f["cosine_to_torch"]["min"] >= MIN_COSINE]
    fastest = max(eligible, key=lambda n: b[n]["texts_per_s"])
    return [
        H.Target(f"{name}: nDCG@10 minus torch's", d["ndcg_delta_vs_torch"], f"within ±{NDCG_TOLERANCE}",
                 abs(d["ndcg_delta_vs_torch"]) <= NDCG_TOLERANCE),
        H.Target(f"{name}: min cosine of a vector to torch's", d["cosine_to_torch"]["min"], f">= {MIN_COSINE}",
                 d["cosine_to_torch"]["min"] >= MIN_COSINE),
        H.Target(f"{name}: query embedding p50 (ms)", d["query_ms"]["p50_ms"], f"<= {QUERY_P50_MS}",
                 d["query_ms"]["p50_ms"] <= QUERY_P50_MS),
        H.Target("fastest backend within the quality bounds", fastest, f"== {name} (the default)", fastest == name),
    ]


def render(results: dict[str, Any], markdown: bool) -> str:
    m, f = results["machine"], results["figures"]
    facts = (f"date {results['date']}; {H.cpus_python_torch(m)}; {f['documents']} documents, {f['queries']} test "
             f"queries; {H.load_averages(m)}")
    rows = []
    for name, b in f["backends"].items():
        rows.append([name, H.fmt(b["texts_per_s"]), f"{b['speedup_vs_torch']:.2f}x",
                     f"{b['query_ms']['p50_ms']:.2f} / {b['query_ms']['p95_ms']:.2f}",
                     f"{b['cosine_to_torch']['min']:.6f} / {b['cosine_to_torch']['mean']:.6f}",
                     f"{b['ndcg_at_10']:.4f} ({b['ndcg_delta_vs_torch']:+.4f})", f"{b['recall_at_10']:.4f}",
                     H.fmt(b["load_or_export_s"])])
    tables = [(["check", "value", "target", "result"], H.target_rows(results["targets"])),
              (["backend", "corpus texts/s", "vs torch", "query embed p50 / p95 (ms)", "cosine to torch min / mean",
                "nDCG@10 (vs torch)", "Recall@10", "first load incl. export (s)"], rows)]
    notes = ["Throughput: every document (title + abstract) through `Embedder.encode` (length-sorted batches of "
             "`embedding.batch_size` 8), the backends interleaved slice by slice (256 documents) so that each meets "
             "the same machine. Query latency: the test queries one at a time, interleaved the same way. nDCG@10: "
             "exact cosine search over whole documents. The export is written once per machine (first load)."]
    return H.render_report(results, "ragops embedding backends, BEIR SciFact", facts, tables, markdown, notes)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="embedding backends on BEIR SciFact (see bench/README.md)")
    H.add_common_args(p, render=True)
    return H.dataset_main(p, argv, benchmark=RESULT_STEM, script=SCRIPT, logger=log,
                          tmp_prefix="ragops-bench-backends-",
                          measure=lambda dataset, args, tmp: measure(dataset, args.limit, tmp),
                          evaluate=evaluate, render=render)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
