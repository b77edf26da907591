"""Build the labelled groundedness set from the demo corpus and its golden questions.

For every answerable golden question: the contexts are five chunks of the demo corpus as the
ragops chunker cuts them (the three chunks of the relevant documents closest to the reference
answer, and the two closest chunks of other documents as distractors, in a fixed shuffled
order); the grounded answer is the reference answer; then the same answer with exactly one
injected error of each kind that applies:

- ``negation``: the first verb phrase negated, or an existing negation removed;
- ``number``: a number, date or quantity changed (a frequency word swapped for another);
- ``name``: an identifier or proper name replaced by another one of the corpus;
- ``appended``: a plausible sentence appended that no context passage supports.

Each row is ``{id, question, contexts, answer, label, kind, source}`` with ``label`` one of
``grounded`` / ``hallucinated``. Rows with ``source: manual`` (answers of the local model,
labelled by hand) are kept when the file is rebuilt. Run:

    .venv/bin/python scripts/make_groundedness_set.py [-o include/eval/groundedness/docs.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 7
# Sentences that sound like the docs but that the docs never say (the "appended" error).
FABRICATED = [
    "This behaviour was introduced in ragops 0.9 and is enabled for every index.",
    "The same setting also encrypts every vector at rest with AES-256.",
    "A nightly job in Kubernetes deletes anything older than 30 days.",
    "Each retry waits exactly 45 seconds and the task gives up after 12 attempts.",
    "ragops sends a Slack message to the on-call channel whenever this happens.",
    "The vectors are compressed to 8 bits, which halves the size of the index.",
    "This is why the scheduler restarts every worker once an hour.",
    "The feature requires a GPU and the enterprise licence.",
    "Microsoft Azure Cognitive Search is used as the fallback store.",
    "Older versions are copied to S3 Glacier for seven years.",
]
NAME_POOL = ["rebuild_index", "ingest_documents", "nightly_eval", "check_drift", "promote_prompt", "sync_prompts",
             "Chroma", "PostgreSQL", "SQLite", "Redis", "Airflow", "Celery", "MiniLM", "Great Expectations",
             "LangChain", "ragops_chroma_writer", "hit_rate@5", "ndcg@10", "Kubernetes", "Docker", "MLflow",
             "Pinecone", "pytest", "RAGOPS_DATA_DIR", "RAGOPS_STATE_DB_URL", "chroma.mode", "eval.ks"]
FREQ_SWAP = {"daily": "weekly", "nightly": "weekly", "weekly": "daily", "hourly": "daily", "monthly": "weekly",
             "immediately": "after a week", "always": "sometimes", "never": "always"}
NUM_WORDS = {"one": "three", "two": "four", "three": "five", "four": "six", "five": "seven", "six": "eight",
             "seven": "nine", "eight": "ten", "ten": "twelve", "twice": "three times", "once": "twice"}
AUX = re.compile(r"\b(is|are|was|were|can|will|must|should|does|do|has|have|may|could|would)\b(?! not\b|n't)")
NEG = re.compile(r"\b(is|are|was|were|can|will|must|should|does|do|has|have|could|would) not\b|\b(?:never|cannot)\b"
                 r"|\b(\w+)n't\b")


def negate(text: str) -> str | None:
    """Flip the polarity of the first main clause after an answer word."""
    head, body = "", text
    m0 = re.match(r"^\s*(No|Yes)[,.:;]?\s+", text)
    if m0:
        head, body = text[:m0.end()], text[m0.end():]
    m = NEG.search(body)
    if m and m.start() < 120:
        span = m.group(0)
        if span == "cannot":
            repl = "can"
        elif span == "never":
            repl = "always"
        elif span.endswith(" not"):
            repl = span[:-4]
        else:
            repl = {"don't": "do", "doesn't": "does", "isn't": "is", "aren't": "are", "can't": "can",
                    "won't": "will", "didn't": "did", "hasn't": "has", "haven't": "have"}.get(span.lower(), None)
            if repl is None:
                return None
        return head + body[:m.start()] + repl + body[m.end():]
    m = AUX.search(body)
    if m and m.start() < 150 and re.match(r"\s+(no|none|nothing|never)\b", body[m.end():]):
        return None  # "there is no X": negating it again reads as nonsense, not as an error
    if m and m.start() < 150:
        return head + body[:m.end()] + " not" + body[m.end():]
    # a plain verb in the third person: "ragops keeps" -> "ragops does not keep"
    m = re.search(r"\b([a-z]+[^s\s])s\b(?= (?:the|a|an|its|every|each|one|all|it|them|\w+ing|\d))", body)
    if m and m.start() < 150 and m.group(1) not in ("it", "thi", "ha", "i", "wa", "doe"):
        return head + body[:m.start()] + f"does not {m.group(1)}" + body[m.end():]
    return None


def change_number(text: str, rng: random.Random) -> str | None:
    nums = list(re.finditer(r"(?<![\w.])\d+(?:[.:]\d+)?(?![\w.]*[a-f0-9]{6})", text))
    if nums:
        m = rng.choice(nums)
        raw = m.group(0)
        if ":" in raw:
            h, mi = raw.split(":")
            new = f"{(int(h) + 3) % 24:0{len(h)}d}:{mi}"
        elif "." in raw:
            new = f"{float(raw) * 2:g}"
        else:
            v = int(raw)
            new = str(v * 2 if v not in (0, 1) else v + 4)
        return text[:m.start()] + new + text[m.end():]
    for w, new in {**NUM_WORDS, **FREQ_SWAP}.items():
        m = re.search(rf"\b{w}\b", text, flags=re.I)
        if m:
            return text[:m.start()] + new + text[m.end():]
    return None


def swap_name(text: str, rng: random.Random) -> str | None:
    present = [n for n in NAME_POOL if re.search(rf"(?<![\w@]){re.escape(n)}(?![\w@])", text)]
    if present:
        old = rng.choice(present)
        new = rng.choice([n for n in NAME_POOL if n != old and n.lower() not in text.lower()])
        return re.sub(rf"(?<![\w@]){re.escape(old)}(?![\w@])", new, text, count=1)
    ident = [m for m in re.finditer(r"\b[a-z]+(?:_[a-z0-9]+)+\b|\b[a-z]+\.[a-z_]+\b|\b[A-Z][a-zA-Z]+[A-Z]\w*\b", text)]
    if ident:
        m = rng.choice(ident)
        new = rng.choice([n for n in NAME_POOL if n.lower() not in text.lower()])
        return text[:m.start()] + new + text[m.end():]
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default=str(ROOT / "include/eval/groundedness/docs.jsonl"))
    args = ap.parse_args()
    import numpy as np

    from ragops.chunking import Chunker
    from ragops.config import EmbeddingSettings, load_settings
    from ragops.embedding import Embedder
    from ragops.parsing import parse_file
    from ragops.sources import discover

    settings = load_settings()
    emb = Embedder(EmbeddingSettings())
    chunker = Chunker(settings.chunking, emb.tokenizer, emb.max_tokens, emb.fingerprint)
    disc = discover(str(ROOT / "include/corpus"), settings)
    chunks: list[tuple[str, str]] = []  # (doc_id, body)
    for d in disc.docs:
        data = (ROOT / "include/corpus" / d.doc_id).read_bytes()
        parsed = parse_file(d.doc_id, data, d.fmt)
        for piece in chunker.split(parsed):
            chunks.append((d.doc_id, piece.body.strip()))
    vecs = emb.model.encode([c[1] for c in chunks], normalize_embeddings=True, batch_size=64)
    golden = [json.loads(line) for line in (ROOT / "include/eval/golden/docs.jsonl").read_text().splitlines() if line]
    out_path = Path(args.output)
    manual = []
    if out_path.exists():
        manual = [r for r in (json.loads(x) for x in out_path.read_text().splitlines() if x) if r["source"] == "manual"]
    rows = []
    rng = random.Random(SEED)
    for q in golden:
        if not q.get("answerable") or not q.get("reference_answer"):
            continue
        ref = q["reference_answer"]
        av, qv = emb.model.encode([ref, q["question"]], normalize_embeddings=True)
        rel = set(q["relevant_doc_ids"])
        # per claim of the reference, the relevant chunk closest to it, then the closest to the whole answer
        from ragops.grounding.claims import split_claims

        claims = [c.text for c in split_claims(ref)]
        cvecs = emb.model.encode(claims, normalize_embeddings=True) if claims else np.zeros((0, vecs.shape[1]))
        own: list[int] = []
        for cv in [*cvecs, av]:
            for i in np.argsort(-(vecs @ cv)):
                if chunks[i][0] in rel:
                    if i not in own:
                        own.append(int(i))
                    break
        for i in np.argsort(-(vecs @ av)):
            if len(own) >= 3:
                break
            if chunks[i][0] in rel and i not in own:
                own.append(int(i))
        own = own[:4]
        qs = vecs @ qv
        other = [int(i) for i in np.argsort(-qs) if chunks[i][0] not in rel][:5 - len(own)]
        idx = own + other
        rng.shuffle(idx)
        contexts = [chunks[i][1] for i in idx]
        base = {"question": q["question"], "contexts": contexts, "source": "golden"}
        rows.append({"id": f"{q['id']}-grounded", **base, "answer": ref, "label": "grounded", "kind": "grounded"})
        variants = {"negation": negate(ref), "number": change_number(ref, rng), "name": swap_name(ref, rng),
                    "appended": f"{ref} {rng.choice(FABRICATED)}"}
        for kind, ans in variants.items():
            if ans and ans != ref:
                rows.append({"id": f"{q['id']}-{kind}", **base, "answer": ans, "label": "hallucinated", "kind": kind})
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for r in rows + manual:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    kinds: dict[str, int] = {}
    for r in rows + manual:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(f"wrote {len(rows) + len(manual)} rows to {out_path}: {kinds}")


if __name__ == "__main__":
    main()
