#!/usr/bin/env python
"""LangChain's indexing API next to ragops' ingest, on the same BEIR SciFact slice, in one run.

Three systems, each with its own store in a fresh temporary directory, fed the same source file:

- ``ragops``: ``ragops.indexing.sync`` (what ``ragops ingest`` runs; the calls of
  bench/ingest_scifact.py), state store SQLite + embedded Chroma;
- ``langchain incremental`` and ``langchain full``: ``langchain_core.indexing.index`` with a
  ``SQLRecordManager`` (SQLite file), a ``langchain_chroma.Chroma`` store (embedded, its own
  directory), ``source_id_key="doc_id"`` and ``cleanup="incremental"`` / ``cleanup="full"``.

Same model, same code path: LangChain embeds through ``RagopsEmbeddings``, a
``langchain_core.embeddings.Embeddings`` wrapping the very ``ragops.embedding.Embedder`` instance
ragops uses. Same chunks: LangChain's documents are ragops' own ``Chunker`` pieces (title line +
body, the text ragops embeds), one LangChain document per chunk with metadata ``doc_id`` and
``position``.

Scenarios, run for the three systems one after the other (interleaved per scenario): full ingest;
re-sync with no change; a change (1% of the documents edited, some deleted, as many added).
Per scenario and system: wall time, texts embedded (counted in ``Embedder.encode``, which every
system goes through), the minimum that had to be embedded, and whether the final store equals the
source (chunk texts per document and position in Chroma against what the chunker makes of the
current source: nothing missing, nothing stale).

Usage (from the project root)::

    .venv/bin/python bench/langchain_peer.py               # 1,000 abstracts: bench/results/langchain_peer.{json,md}
    .venv/bin/python bench/langchain_peer.py --smoke       # 100 abstracts: *.smoke.json / *.smoke.md
    .venv/bin/python bench/langchain_peer.py --docs 5183   # the whole corpus

Needs the LangChain packages of bench/requirements.txt (not project dependencies)::

    .venv/bin/pip install -r bench/requirements.txt -c constraints.txt

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness as H

if TYPE_CHECKING:
    from ragops.chunking import Chunker
    from ragops.config import Settings
    from ragops.embedding import Embedder

log = logging.getLogger("bench.langchain_peer")

SCRIPT = Path(__file__).resolve()
RESULT_STEM = "langchain_peer"
INSTALL = ".venv/bin/pip install -r bench/requirements.txt -c constraints.txt"
LANGCHAIN_DISTS = ("langchain-core", "langchain-classic", "langchain-chroma", "langchain-text-splitters",
                   "chromadb", "sqlalchemy")

INDEX = "scifact"
DEFAULT_DOCS = 1000
SMOKE_DOCS = 100
CHANGE_SHARE = 0.01  # documents edited in the change scenario
DELETE_SHARE = 0.005  # documents deleted, and as many added (the records after the slice)
MIN_CHANGED, MIN_DELETED = 3, 2  # so that a smoke run exercises every kind of edit
APPEND = " This sentence was appended by the LangChain peer benchmark."
PREPEND = "This sentence was prepended by the LangChain peer benchmark. "
LC_BATCH_SIZE = 100  # index()'s default
KEY_ENCODER = "sha256"  # index()'s default sha1 warns about collisions; the choice moves no figure
SYSTEMS = ("ragops", "langchain incremental", "langchain full")
SCENARIOS = ("full ingest", "re-sync, no change", "change: edit 1%, delete, add")

Triple = tuple[str, int, str]  # (doc_id, position, embedded text)

# ----------------------------------------------------------------------------------------------
# the optional LangChain packages


def langchain_or_exit() -> None:
    """Import the LangChain packages the bench needs, or exit 2 naming the install command: they
    are not project dependencies (bench/requirements.txt)."""
    try:
        import langchain_chroma  # noqa: F401
        import langchain_classic.indexes  # noqa: F401
        import langchain_core.indexing  # noqa: F401
    except ImportError as exc:
        print(f"ERROR: the LangChain packages this benchmark compares against are missing ({exc}).\n"
              f"Install them (pinned, without changing any project package) with:\n    {INSTALL}",
              file=sys.stderr)
        sys.exit(2)


def make_embeddings(embedder: Embedder) -> Any:
    """A LangChain ``Embeddings`` that embeds with ragops' own ``Embedder`` (same model object,
    same batching and normalisation) and counts what it is asked to embed."""
    from langchain_core.embeddings import Embeddings

    class RagopsEmbeddings(Embeddings):
        def __init__(self, inner: Embedder) -> None:
            self.inner = inner
            self.calls = 0
            self.texts = 0

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            self.calls += 1
            self.texts += len(texts)
            return self.inner.encode(list(texts)).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.inner.encode([text], batch_size=1)[0].tolist()

    return RagopsEmbeddings(embedder)


class LangChainSystem:
    """One LangChain indexing setup: SQLite record manager + embedded Chroma, own directory."""

    def __init__(self, name: str, cleanup: str, root: Path, embeddings: Any) -> None:
        from langchain_chroma import Chroma
        from langchain_classic.indexes import SQLRecordManager

        self.name, self.cleanup = name, cleanup
        root.mkdir(parents=True, exist_ok=True)
        self.record_manager = SQLRecordManager(f"chroma/{INDEX}", db_url=f"sqlite:///{root / 'record_manager.sqlite'}")
        self.record_manager.create_schema()
        self.store = Chroma(collection_name=INDEX, embedding_function=embeddings,
                            persist_directory=str(root / "chroma"),
                            collection_configuration={"hnsw": {"space": "cosine"}})  # as ragops' collections

    def run(self, source: Path, chunker: Chunker) -> dict[str, Any]:
        """Read, chunk and ``index()`` the whole source: LangChain hashes chunks, so every sync
        chunks every document before it can tell what changed."""
        from langchain_core.documents import Document
        from langchain_core.indexing import index

        def docs() -> Iterator[Document]:
            for doc_id, record in read_source(source):
                for p in chunk_record(chunker, doc_id, record):
                    yield Document(page_content=p.text, metadata={"doc_id": doc_id, "position": p.position})

        return dict(index(docs(), self.record_manager, self.store, cleanup=self.cleanup, source_id_key="doc_id",
                          batch_size=LC_BATCH_SIZE, key_encoder=KEY_ENCODER))

    def triples(self) -> Counter[Triple]:
        return store_triples(self.store.get, "doc_id")


# ----------------------------------------------------------------------------------------------
# source, chunks and the expected store


def read_source(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for line in H.iter_lines(path):
        record = json.loads(line)
        yield str(record["_id"]), record


def chunk_record(chunker: Chunker, doc_id: str, record: dict[str, Any]) -> list[Any]:
    """ragops' chunks of one SciFact record, exactly as ``process_batch`` makes them: parsed, then
    repaired (ragops.repair: e.g. a Windows-1252 dash read as the C1 control U+0096 becomes "–"),
    then split. Both systems are fed these chunks, and the stores are checked against them."""
    from ragops.indexing import _repair
    from ragops.parsing import parse_record

    doc, _ = _repair(parse_record(doc_id, {"title": record.get("title"), "text": record["text"]}), "keep")
    return chunker.split(doc)


def expected_triples(source: Path, chunker: Chunker) -> Counter[Triple]:
    """What a store in step with the source holds: every chunk of every current document."""
    return Counter((doc_id, p.position, p.text) for doc_id, record in read_source(source)
                   for p in chunk_record(chunker, doc_id, record))


def store_triples(get: Callable[..., dict[str, Any]], doc_key: str, page: int = 5000) -> Counter[Triple]:
    """(doc_id, position, text) of every vector in a Chroma collection, through its ``get``."""
    out: Counter[Triple] = Counter()
    offset = 0
    while True:
        got = get(include=["documents", "metadatas"], limit=page, offset=offset)
        for text, meta in zip(got["documents"], got["metadatas"], strict=True):
            meta = meta or {}
            out[(str(meta.get(doc_key)), int(meta.get("position", -1)), text or "")] += 1
        if len(got["ids"]) < page:
            return out
        offset += page


def compare(expected: Counter[Triple], actual: Counter[Triple], source_ids: set[str]) -> dict[str, Any]:
    """Missing and stale vectors (a duplicate counts as stale), and the documents behind them."""
    missing, stale = expected - actual, actual - expected
    stale_docs = {d for d, _, _ in stale}
    return {"expected": sum(expected.values()), "in_store": sum(actual.values()),
            "missing": sum(missing.values()), "stale": sum(stale.values()),
            "stale_of_deleted_docs": sum(n for (d, _, _), n in stale.items() if d not in source_ids),
            "missing_docs": sorted({d for d, _, _ in missing})[:10], "stale_docs": sorted(stale_docs)[:10],
            "equal": not missing and not stale}


def needed_embeddings(before: Counter[Triple], after: Counter[Triple]) -> dict[str, int]:
    """The least a sync from ``before`` to ``after`` must embed: chunks whose text the same
    document did not have before (a vector of the same text of the same document can be reused,
    as ragops does for a moved chunk); and, stricter identity, chunks whose (document, position,
    text) is new (what a store keyed on position must embed)."""
    old_texts: dict[str, set[str]] = {}
    for d, _, t in before:
        old_texts.setdefault(d, set()).add(t)
    return {"new_texts": sum(n for (d, _, t), n in after.items() if t not in old_texts.get(d, ())),
            "new_positions": sum(n for k, n in after.items() if k not in before)}


def split_by_batches(expected: Counter[Triple], batch: int = LC_BATCH_SIZE) -> dict[str, int]:
    """Documents whose chunks ``index()`` sees in more than one batch (the source order, ``batch``
    chunks a batch), and their chunks after the first of those batches. With
    ``cleanup="incremental"`` each batch deletes the older records of its source ids, so those
    later chunks are deleted and then embedded again on every sync, changed or not."""
    first: dict[str, int] = {}
    docs: set[str] = set()
    later = 0
    for i, (d, _, _) in enumerate(expected.elements()):
        b = i // batch
        first.setdefault(d, b)
        if b != first[d]:
            docs.add(d)
            later += 1
    return {"documents": len(docs), "later_chunks": later}


# ----------------------------------------------------------------------------------------------
# the change scenario


def edit(text: str, kind: str) -> str:
    if kind == "append":
        return text + APPEND
    if kind == "prepend":
        return PREPEND + text
    words = text.split(" ")  # "edit": one word in the middle replaced
    words[len(words) // 2] = "REVISED"
    return " ".join(words)


def write_change(source: Path, corpus: Path, n: int) -> dict[str, Any]:
    """Rewrite ``source`` in place (same path: the same ragops source id): 1% of its documents
    edited (append a sentence, replace a word in the middle, prepend a sentence, in turn), 0.5%
    deleted, and as many new records (the ones following the slice in ``corpus``) added."""
    records = [json.loads(line) for line in H.iter_lines(source)]
    n_changed = max(MIN_CHANGED, round(n * CHANGE_SHARE))
    n_deleted = max(MIN_DELETED, round(n * DELETE_SHARE))
    step = max(len(records) // n_changed, 1)
    changed_at = list(range(0, len(records), step))[:n_changed]
    deleted_at: list[int] = []
    for i in range(step // 2, len(records), max(len(records) // n_deleted, 1)):
        while i in changed_at or i in deleted_at:  # an edited document is not deleted too
            i += 1
        if i < len(records) and len(deleted_at) < n_deleted:
            deleted_at.append(i)
    kinds = ("append", "edit", "prepend")
    changed: dict[str, str] = {}
    for k, i in enumerate(changed_at):
        kind = kinds[k % len(kinds)]
        records[i]["text"] = edit(records[i]["text"], kind)
        changed[str(records[i]["_id"])] = kind
    deleted = [str(records[i]["_id"]) for i in deleted_at]
    keep = [r for i, r in enumerate(records) if i not in set(deleted_at)]
    added = [json.loads(line) for line in list(H.iter_lines(corpus, n + n_deleted))[n:]]
    H.replace_file(source, (json.dumps(r, ensure_ascii=False) for r in keep + added))
    return {"changed": changed, "deleted": deleted, "added": [str(r["_id"]) for r in added],
            "documents_after": len(keep) + len(added)}


# ----------------------------------------------------------------------------------------------
# timing one sync of each system


@contextmanager
def counted() -> Iterator[dict[str, float]]:
    """Texts and calls through ``Embedder.encode`` (every system embeds through it) and the wall
    seconds inside the chunker, the embedder and ragops' own steps, while the block runs."""
    from ragops import chunking, embedding, indexing

    orig = embedding.Embedder.encode
    tally: dict[str, float] = {"texts": 0, "calls": 0}

    def encode(self: Embedder, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        tally["texts"] += len(texts)
        tally["calls"] += 1
        return orig(self, texts, *args, **kwargs)

    wrapped = [(chunking.Chunker, "split", "chunking"), (embedding.Embedder, "encode", "embedding"),
               (indexing, "plan_sync", "ragops.plan"), (indexing, "process_batch", "ragops.process"),
               (indexing, "validate", "ragops.quality"), (indexing, "commit_sync", "ragops.commit"),
               (indexing, "_refresh_lexical", "ragops.commit.bm25")]
    embedding.Embedder.encode = encode  # type: ignore[method-assign]
    try:
        with H.timed_calls(wrapped) as spent:
            yield tally
            tally.update({f"{k}_s": round(v, 3) for k, v in spent.items()})
    finally:
        embedding.Embedder.encode = orig  # type: ignore[method-assign]


def run_ragops(settings: Settings, source: Path, embedder: Embedder) -> dict[str, Any]:
    from ragops.indexing import new_run_id, sync

    with counted() as tally, H.Timer() as t:
        report = sync(settings, str(source), INDEX, run_id=new_run_id("bench"), trigger="bench", embedder=embedder)
    return {"seconds": round(t.wall, 3), "cpu_seconds": round(t.cpu, 3), "embedded": int(tally["texts"]), "encode_calls": int(tally["calls"]),
            "spent_s": {k: v for k, v in tally.items() if k.endswith("_s")},
            "counts": report["counts"], "chunks": report["chunks"], "self_check_ok": report["self_check"]["ok"],
            "quarantined": report["quarantine"]["documents"]}


def run_langchain(system: LangChainSystem, source: Path, chunker: Chunker) -> dict[str, Any]:
    with counted() as tally, H.Timer() as t:
        result = system.run(source, chunker)
    return {"seconds": round(t.wall, 3), "cpu_seconds": round(t.cpu, 3), "embedded": int(tally["texts"]), "encode_calls": int(tally["calls"]),
            "spent_s": {k: v for k, v in tally.items() if k.endswith("_s")}, "index_result": result}


def ragops_triples(settings: Settings) -> Counter[Triple]:
    from ragops.vectorstore import VectorStore

    collection = H.live_collection(settings, INDEX)
    if collection is None:
        return Counter()
    return store_triples(VectorStore(settings).collection(collection).get, "doc_id")


# ----------------------------------------------------------------------------------------------
# the run


def warm_up(tmp: Path, corpus: Path, embedder: Embedder, chunker: Chunker) -> None:
    """One two-document sync of each system in throw-away stores, untimed, so no timing below
    includes first imports (chromadb, pyarrow, Great Expectations, LangChain) or their set-up."""
    source = tmp / "warm" / "corpus.jsonl"
    H.write_copy(corpus, source, 2)
    settings = H.open_settings(tmp / "warm" / "ragops")
    run_ragops(settings, source, embedder)
    run_langchain(LangChainSystem("warm", "full", tmp / "warm" / "langchain", make_embeddings(embedder)),
                  source, chunker)


def run_all(corpus: Path, tmp: Path, n: int) -> dict[str, Any]:
    from ragops.chunking import Chunker

    source = tmp / "source" / "corpus.jsonl"  # a copy: the change scenario rewrites it in place
    doc_ids = H.write_copy(corpus, source, n)
    # the ragops data dir last: open_settings points RAGOPS_DATA_DIR at it
    probe = H.open_settings(tmp / "ragops")
    embedder, load_s = H.warm_embedder(probe)
    chunker = Chunker(probe.chunking, embedder.tokenizer, embedder.max_tokens, embedder.fingerprint)
    warm_up(tmp, corpus, embedder, chunker)
    settings = H.open_settings(tmp / "ragops")
    log.info("%d documents; model loaded in %.1fs; all systems warmed up", len(doc_ids), load_s)

    embeddings = make_embeddings(embedder)
    lc = {"langchain incremental": LangChainSystem("langchain incremental", "incremental",
                                                   tmp / "langchain-incremental", embeddings),
          "langchain full": LangChainSystem("langchain full", "full", tmp / "langchain-full", embeddings)}
    emb = settings.embedding
    backend = {k: getattr(emb, k, None) for k in ("backend", "quantize", "threads")}  # None: settings without them
    figures: dict[str, Any] = {"settings": H.settings_facts(settings), "embedding_backend": backend,
                               "model_load_s": round(load_s, 3),
                               "langchain": {"batch_size": LC_BATCH_SIZE, "source_id_key": "doc_id",
                                             "key_encoder": KEY_ENCODER,
                                             "record_manager": "langchain_classic.indexes.SQLRecordManager (SQLite)",
                                             "vector_store": "langchain_chroma.Chroma (embedded, hnsw cosine)"},
                               "scenarios": []}
    before: Counter[Triple] = Counter()
    for scenario in SCENARIOS:
        change = None
        if scenario.startswith("change"):
            change = write_change(source, corpus, n)
            log.info("%s: %d edited %s, %d deleted, %d added", scenario, len(change["changed"]),
                     dict(Counter(change["changed"].values())), len(change["deleted"]), len(change["added"]))
        expected = expected_triples(source, chunker)
        source_ids = {d for d, _ in read_source(source)}
        need = needed_embeddings(before, expected)
        entry: dict[str, Any] = {"scenario": scenario, "documents": len(source_ids), "expected_chunks":
                                 sum(expected.values()), "needed": need, "change": change,
                                 "split_by_index_batches": split_by_batches(expected), "systems": {}}
        for name in SYSTEMS:
            if name == "ragops":
                out = run_ragops(settings, source, embedder)
                actual = ragops_triples(settings)
            else:
                out = run_langchain(lc[name], source, chunker)
                actual = lc[name].triples()
            out["store"] = compare(expected, actual, source_ids)
            out["excess_embedded"] = max(out["embedded"] - need["new_texts"], 0)
            entry["systems"][name] = out
            log.info("  %-22s %-30s %8.2fs  embedded %5d (needed %d)  store %s", name, scenario, out["seconds"],
                     out["embedded"], need["new_texts"],
                     "equals source" if out["store"]["equal"] else
                     f"{out['store']['missing']} missing / {out['store']['stale']} stale")
        r = entry["systems"]["ragops"]["seconds"]
        entry["ratio_ragops_over"] = {name: round(r / entry["systems"][name]["seconds"], 4)
                                      for name in SYSTEMS if name != "ragops"}
        figures["scenarios"].append(entry)
        before = expected
    return figures


# ----------------------------------------------------------------------------------------------
# report


def evaluate(figures: dict[str, Any]) -> list[H.Target]:
    out: list[H.Target] = []
    for sc in figures["scenarios"]:
        need = sc["needed"]["new_texts"]
        for name, s in sc["systems"].items():
            st = s["store"]
            out.append(H.Target(f"{name}, {sc['scenario']}: store equals source",
                                f"{st['missing']} missing / {st['stale']} stale", "0 missing / 0 stale", st["equal"]))
            out.append(H.Target(f"{name}, {sc['scenario']}: texts embedded", s["embedded"],
                                f"<= {need} (new chunk texts)", s["embedded"] <= need))
    return out


def scenario_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    for sc in figures["scenarios"]:
        s = sc["systems"]
        rows.append([sc["scenario"], f"{sc['documents']} / {sc['expected_chunks']}",
                     *(H.fmt(s[n]["seconds"]) for n in SYSTEMS),
                     *(H.fmt(sc["ratio_ragops_over"][n]) for n in SYSTEMS[1:]),
                     " / ".join(H.fmt(s[n]["cpu_seconds"]) for n in SYSTEMS),
                     " / ".join(str(s[n]["embedded"]) for n in SYSTEMS),
                     f"{sc['needed']['new_texts']} / {sc['needed']['new_positions']}",
                     "{documents} / {later_chunks}".format(**sc["split_by_index_batches"])])
    return rows


def detail_rows(figures: dict[str, Any]) -> list[list[str]]:
    rows = []
    for sc in figures["scenarios"]:
        for name in SYSTEMS:
            s = sc["systems"][name]
            sp = s["spent_s"]
            other = s["seconds"] - sp.get("chunking_s", 0.0) - sp.get("embedding_s", 0.0)
            if name == "ragops":
                c, ch = s["counts"], s["chunks"]
                counts = (f"docs added {c['added']} changed {c['changed']} deleted {c['deleted']} unchanged "
                          f"{c['unchanged']} quarantined {c['quarantined']}; chunks embedded {ch['embedded']} "
                          f"copied {ch['copied']} deleted {ch['deleted']}; plan {H.fmt(sp.get('ragops.plan_s', 0.0))} s, "
                          f"quality checks {H.fmt(sp.get('ragops.quality_s', 0.0))} s, commit "
                          f"{H.fmt(sp.get('ragops.commit_s', 0.0))} s (BM25 {H.fmt(sp.get('ragops.commit.bm25_s', 0.0))} s)")
            else:
                r = s["index_result"]
                counts = (f"index(): added {r.get('num_added')} updated {r.get('num_updated')} skipped "
                          f"{r.get('num_skipped')} deleted {r.get('num_deleted')}")
            rows.append([sc["scenario"], name, H.fmt(sp.get("chunking_s", 0.0)), H.fmt(sp.get("embedding_s", 0.0)),
                         H.fmt(other), str(s["store"]["in_store"]), counts])
    return rows


def findings(figures: dict[str, Any]) -> list[str]:
    """Plain sentences for every excess embedding and every store that is not the source."""
    out = []
    for sc in figures["scenarios"]:
        for name, s in sc["systems"].items():
            if s["excess_embedded"]:
                why = ""
                if name == "langchain incremental" and sc["split_by_index_batches"]["documents"]:
                    split = sc["split_by_index_batches"]
                    why = (f" {split['documents']} documents have chunks in two index() batches of "
                           f"{LC_BATCH_SIZE}: cleanup='incremental' deletes, after each batch, the older records of "
                           f"the batch's source ids, including the same document's chunks still to come in the "
                           f"next batch ({split['later_chunks']} chunks here), which are then embedded again "
                           "(and missing from the store in between).")
                out.append(f"- {name}, {sc['scenario']}: embedded {s['embedded']} texts where "
                           f"{sc['needed']['new_texts']} were new ({s['excess_embedded']} more than needed).{why}")
            st = s["store"]
            if st["stale"]:
                why = (f", {st['stale_of_deleted_docs']} of them of documents deleted from the source"
                       if st["stale_of_deleted_docs"] else "")
                if name == "langchain incremental" and st["stale_of_deleted_docs"]:
                    why += (" (cleanup='incremental' only removes old versions of the source ids it is given; "
                            "a deleted document's id never comes again, so only cleanup='full' removes it)")
                out.append(f"- {name}, {sc['scenario']}: {st['stale']} stale vectors kept{why} "
                           f"(e.g. {', '.join(st['stale_docs'][:5])}).")
            if st["missing"]:
                out.append(f"- {name}, {sc['scenario']}: {st['missing']} chunks of the source missing "
                           f"(e.g. documents {', '.join(st['missing_docs'][:5])}).")
    return out or ["- none: every system embedded only new chunk texts and every store equals its source."]


def render(results: dict[str, Any], markdown: bool) -> str:
    m, f = results["machine"], results["figures"]
    s = f["settings"]
    facts = (f"date {results['date']}; {H.cpus_python_torch(m)}; {results['dataset']['documents']} SciFact "
             f"abstracts; embedding backend {(f.get('embedding_backend') or {}).get('backend') or 'torch'} (both systems, "
             f"one Embedder); chunk_tokens {s['chunk_tokens']}, overlap_tokens {s['overlap_tokens']}, embedding "
             f"batch_size {s['embedding_batch_size']}, ragops batch_documents {s['batch_documents']}, LangChain "
             f"index() batch_size {f['langchain']['batch_size']}; "
             + ", ".join(f"{k} {v}" for k, v in results["packages"].items()) + f"; {H.load_averages(m)}")
    tables = [(["check", "value", "target", "result"], H.target_rows(results["targets"])),
              (["scenario", "docs / chunks", "ragops (s)", "LC incremental (s)", "LC full (s)",
                "ragops / LC incr", "ragops / LC full", "CPU s ragops / LC incr / LC full", "embedded ragops / LC incr / LC full",
                "needed: new texts / new positions", "docs / chunks split by index() batches"],
               scenario_rows(f)),
              (["scenario", "system", "chunking (s)", "embedding (s)", "other (s)", "vectors in store", "counts"],
               detail_rows(f))]
    change = next((sc["change"] for sc in f["scenarios"] if sc["change"]), None)
    notes = ["Wall time is the figure compared (ratio = ragops seconds / LangChain seconds); CPU seconds of this "
             "process are shown beside it because they move less with other load on the machine. The three "
             "systems run one after the other in each scenario (ragops first), so a change of load between "
             "them moves the ratios.", "", "Findings:", *findings(f)]
    if change:
        notes += ["", f"Change scenario: edited {len(change['changed'])} ({dict(Counter(change['changed'].values()))}), "
                  f"deleted {len(change['deleted'])} ({', '.join(change['deleted'])}), added "
                  f"{len(change['added'])} ({', '.join(change['added'])})."]
    text = H.render_report(results, "LangChain indexing API vs ragops ingest, BEIR SciFact", facts, tables,
                           markdown, notes)
    return text.replace("(SMOKE RUN: --limit,", "(SMOKE RUN: --smoke,")


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="LangChain indexing API vs ragops ingest on BEIR SciFact "
                                            "(see bench/README.md)")
    p.add_argument("--docs", type=int, default=None, metavar="N",
                   help=f"the first N abstracts (default {DEFAULT_DOCS}; {SMOKE_DOCS} with --smoke)")
    p.add_argument("--smoke", action="store_true",
                   help=f"smoke run ({SMOKE_DOCS} abstracts unless --docs): results go to *.smoke.json / *.smoke.md")
    H.add_common_args(p, limit=False, render=True)
    args = H.check_common_args(p, p.parse_args(argv))
    if args.docs is not None and args.docs < 10:
        p.error("--docs must be at least 10")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        print(f"wrote {H.rewrite_markdown(args.render, lambda r: render(r, True))}")
        return 0
    H.setup_logging(args.verbose, log)
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    langchain_or_exit()
    dataset = H.dataset_or_skip(args.dataset, ("corpus.jsonl",))
    if dataset is None:
        return 0
    n = args.docs or (SMOKE_DOCS if args.smoke else DEFAULT_DOCS)
    corpus = dataset / "corpus.jsonl"
    total = sum(1 for _ in H.iter_lines(corpus))
    if n + max(MIN_DELETED, round(n * DELETE_SHARE)) > total:
        print(f"ERROR: --docs {n} leaves no records after the slice to add ({total} in {corpus})", file=sys.stderr)
        return 2

    started = H.utc_now()
    load_start = H.load_at_start(log, "the ratios will be noisy")
    with H.workspace("ragops-bench-lcpeer-", args.keep_tmp, log) as tmp:
        log.info("working in %s", tmp)
        figures = run_all(corpus, tmp, n)

    targets = evaluate(figures)
    results = H.run_record(RESULT_STEM, SCRIPT, started, n if args.smoke else None,
                           {"path": str(dataset), "documents": n}, load_start, targets, figures,
                           packages=H.package_versions(LANGCHAIN_DISTS))
    H.publish(args.results_dir, results, render)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
