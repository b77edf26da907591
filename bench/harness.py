"""What every benchmark in bench/ needs besides the thing it measures.

Machine facts, load averages, timers (wall, CPU, peak RSS), percentiles, the BEIR SciFact files
(and skipping when they are absent), an isolated ragops data directory, child processes that
report JSON, the common command-line options, and the results written as JSON and Markdown under
``bench/results/`` (or ``--results-dir``). Each script keeps only what it measures and how it
reports it.

Nothing here imports ragops, torch or numpy at module level: a script imports this module before
it decides what to load (``ingest_scifact.py`` starts its memory children before torch is loaded).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ragops.config import Settings
    from ragops.embedding import Embedder
    from ragops.vectorstore import VectorStore

log = logging.getLogger("bench.harness")

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATASET = PROJECT_ROOT.parent / "shared" / "datasets" / "scifact"
SCIFACT_FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv")
MB = 1_000_000

# Libraries whose INFO logs drown the benchmark's own progress.
NOISY_LOGGERS = ("chromadb", "httpx", "sentence_transformers", "great_expectations", "alembic", "bm25s")
# Variables that could point a benchmark at a real state store or Chroma server.
ISOLATED_ENV = ("RAGOPS_STATE_DB_URL", "RAGOPS_CHROMA_MODE", "RAGOPS_CHROMA_URL", "RAGOPS_CHROMA_TOKEN")


# ----------------------------------------------------------------------------------------------
# logging and load average


def setup_logging(verbose: bool, *loggers: logging.Logger, quiet: Iterable[str] = NOISY_LOGGERS) -> None:
    """Root at INFO with ``verbose`` (ragops' own logs), else WARNING; the given script loggers
    always at INFO (a benchmark's progress is always shown); chatty libraries at WARNING."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for lg in loggers:
        lg.setLevel(logging.INFO)
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded for the results."""
    return [round(x, 2) for x in os.getloadavg()]


def load_at_start(logger: logging.Logger, consequence: str = "the timings will be noisy") -> list[float]:
    """The load averages now, with a warning when the 1-minute one exceeds half the CPUs: every
    figure is wall-clock and other processes on the CPUs move it."""
    load = loadavg()
    cpus = os.cpu_count() or 1
    if load[0] > 0.5 * cpus:
        logger.warning("load average is %.2f on %d CPUs: other processes compete for the CPU and %s",
                       load[0], cpus, consequence)
    return load


# ----------------------------------------------------------------------------------------------
# machine facts


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def package_versions(dists: Iterable[str]) -> dict[str, str | None]:
    return {d: package_version(d) for d in dists}


def cpu_model() -> str | None:
    try:
        return next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), None)
    except OSError:
        return None


def git(*args: str) -> str:
    """Output of a git command in the project (empty when git fails: the results still get written)."""
    out = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, check=False)
    return out.stdout if out.returncode == 0 else ""


def git_commit() -> str:
    return git("rev-parse", "--short", "HEAD").strip()


def machine_facts(load_start: Sequence[float]) -> dict[str, Any]:
    """CPU, memory, platform, the versions that set the speed, the git commit and the load
    averages at start and now."""
    mem_total = proc_kib("/proc/meminfo", "MemTotal")
    torch_threads = int(sys.modules["torch"].get_num_threads()) if "torch" in sys.modules else None
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": cpu_model(),
            "mem_total_mb": round(mem_total * 1024 / MB) if mem_total else None,
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": package_version("torch"), "torch_threads": torch_threads,
            "sentence_transformers": package_version("sentence-transformers"),
            "transformers": package_version("transformers"), "chromadb": package_version("chromadb"),
            "ragops": package_version("ragops"), "git_commit": git_commit() or None,
            "loadavg_at_start": [round(x, 2) for x in load_start], "loadavg_at_end": loadavg()}


def basic_machine(load_start: Sequence[float] | None = None) -> dict[str, Any]:
    """The short machine record of the scripts that report one figure table (with the load
    averages at start and now when ``load_start`` is given)."""
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "git_commit": git_commit() or None}
    if load_start is not None:
        out.update(loadavg_at_start=[round(x, 2) for x in load_start], loadavg_at_end=loadavg())
    return out


# ----------------------------------------------------------------------------------------------
# memory and timers


def proc_kib(path: str, field: str) -> int | None:
    """A figure in KiB from a /proc file (``/proc/self/status`` VmHWM: peak RSS of the current
    address space; ``/proc/meminfo``: machine memory)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def proc_status_kib(field: str) -> int | None:
    return proc_kib("/proc/self/status", field)


def vm_hwm_kib() -> int | None:
    """Peak RSS of this process's own address space. Unlike ``ru_maxrss`` it is not inherited
    from the parent through fork + exec, so it is the figure for a child process."""
    return proc_status_kib("VmHWM")


def maxrss_kib() -> int:
    """Peak RSS of this process in KiB (Linux). Note: a child inherits its parent's peak."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (moves less with other load than wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Timer:
    """``with Timer() as t: ...`` then ``t.wall`` and ``t.cpu`` (seconds); while the block runs,
    ``t.elapsed()`` is the wall time so far."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self._t0 = self._c0 = 0.0

    def __enter__(self) -> Timer:
        self._t0, self._c0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.cpu = cpu_seconds() - self._c0

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0


@contextmanager
def timed_calls(wrapped: list[tuple[Any, str, str]], nested: bool = False) -> Iterator[dict[str, float]]:
    """Wall-clock seconds spent in each ``(owner, attribute, label)`` callable while the block runs,
    found by wrapping them (the library itself is not changed).

    The owner may be a module, a class or a dict (``stats.TESTS``), and the attribute a
    ``functools.cached_property`` (``Embedder.model``). With ``nested`` a call made inside another
    timed call is recorded under its path (``gaps/encode/model load``); without, under its label.
    """
    spent: dict[str, float] = {}
    stack: list[str] = []

    def timed(fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            key = "/".join([*stack, label]) if nested else label
            stack.append(label)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stack.pop()
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0

        return wrapper

    originals: list[tuple[Any, str, Any, bool]] = []
    try:
        for owner, attr, label in wrapped:
            if isinstance(owner, dict):
                orig, own = owner[attr], True
                owner[attr] = timed(orig, label)
            else:
                own = not isinstance(owner, type) or attr in owner.__dict__
                orig = owner.__dict__[attr] if isinstance(owner, type) and own else getattr(owner, attr)
                if isinstance(orig, functools.cached_property):
                    new = functools.cached_property(timed(orig.func, label))
                    new.__set_name__(owner, attr)
                    setattr(owner, attr, new)
                else:
                    setattr(owner, attr, timed(getattr(owner, attr), label))
            originals.append((owner, attr, orig, own))
        yield spent
    finally:
        for owner, attr, orig, own in reversed(originals):
            if isinstance(owner, dict):
                owner[attr] = orig
            elif own:
                setattr(owner, attr, orig)
            else:  # inherited: drop the wrapper from the subclass again
                delattr(owner, attr)


# ----------------------------------------------------------------------------------------------
# statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks: numpy's
    default method, without importing numpy."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def latency_summary(ms: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p95, mean and max of latencies in milliseconds."""
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), digits), "p95_ms": round(percentile(ms, 95), digits),
            "mean_ms": round(sum(ms) / len(ms), digits), "max_ms": round(max(ms), digits)}


# ----------------------------------------------------------------------------------------------
# BEIR SciFact files


def dataset_or_skip(dataset: Path | None, files: Sequence[str] = SCIFACT_FILES) -> Path | None:
    """The dataset folder (``--dataset`` or the default), or None after printing why the
    benchmark is skipped: a benchmark without its dataset exits 0."""
    root = dataset.resolve() if dataset else DEFAULT_DATASET
    missing = [str(root / f) for f in files if not (root / f).is_file()]
    if missing:
        print(f"SKIP: BEIR SciFact not found ({', '.join(missing)} missing). Put the dataset at "
              f"{DEFAULT_DATASET} or pass --dataset DIR.")
        return None
    return root


def iter_lines(path: Path, limit: int | None = None) -> Iterator[str]:
    """Non-empty lines of a JSONL file (without line ends), at most ``limit`` of them."""
    n = 0
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if limit is not None and n >= limit:
                return
            n += 1
            yield line


def replace_file(path: Path, lines: Iterable[str]) -> None:
    """Write lines to ``path`` atomically (same path, so the same ragops source id)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")
    os.replace(tmp, path)


def write_copy(corpus: Path, dst: Path, limit: int | None) -> list[str]:
    """Copy the (first ``limit``) records of the corpus; return their ids in file order."""
    ids: list[str] = []

    def lines() -> Iterator[str]:
        for line in iter_lines(corpus, limit):
            ids.append(str(json.loads(line)["_id"]))
            yield line

    replace_file(dst, lines())
    return ids


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """query id -> {corpus id: score}; tolerates the header row and CRLF line ends."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            continue  # header row ("query-id corpus-id score") or a blank line
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels


def load_queries(path: Path, wanted: set[str] | None = None) -> dict[str, str]:
    """query id -> text, of the ``wanted`` ids (all with None)."""
    out: dict[str, str] = {}
    for line in iter_lines(path):
        record = json.loads(line)
        if wanted is None or str(record["_id"]) in wanted:
            out[str(record["_id"])] = str(record["text"])
    return out


def test_queries(dataset: Path, keep_docs: set[str] | None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The test split's queries and qrels; with ``keep_docs`` (a corpus slice) only the queries
    whose relevant documents are all in it."""
    qrels = {q: r for q, r in load_qrels(dataset / "qrels" / "test.tsv").items()
             if keep_docs is None or set(r) <= keep_docs}
    queries = load_queries(dataset / "queries.jsonl", set(qrels))
    return queries, {q: qrels[q] for q in queries}


def golden_set(dataset: Path, out: Path, keep_docs: set[str] | None) -> dict[str, Any]:
    """The BEIR test split as a ragops golden set (``ragops eval import-beir``); with ``keep_docs``
    only the questions whose relevant documents are all in the slice."""
    from ragops.evaluation.datasets import import_beir

    imported = import_beir(dataset, "test", out)
    lines = [ln for ln in out.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if keep_docs is not None:
        lines = [ln for ln in lines if set(json.loads(ln)["relevant_doc_ids"]) <= keep_docs]
        out.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return {"path": str(out), "imported": imported.get("questions"), "questions": len(lines)}


# ----------------------------------------------------------------------------------------------
# ragops on an isolated data directory (ragops is imported when these are called)


def isolated_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that must only touch ``data_dir``: no real state store,
    no Chroma server, no network for the models."""
    env = dict(os.environ, RAGOPS_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", ANONYMIZED_TELEMETRY="False", **extra)
    for name in (*ISOLATED_ENV, "RAGOPS_LOCAL_MODEL_FILE"):
        env.pop(name, None)
    return env


def open_settings(data_dir: Path) -> Settings:
    """Settings for a data dir of its own: project YAML (or RAGOPS_CONFIG), embedded Chroma,
    migrated state store. ``RAGOPS_STATE_DB_URL`` and ``RAGOPS_CHROMA_*`` are dropped first."""
    for name in ISOLATED_ENV:
        if os.environ.pop(name, None) is not None:
            log.warning("ignoring %s: the benchmark always uses its own temporary embedded store", name)
    os.environ["RAGOPS_DATA_DIR"] = str(data_dir)  # before load_settings, which reads it
    from ragops import state
    from ragops.config import load_settings

    settings = load_settings()
    if settings.chroma.mode != "embedded":
        settings = settings.replace(chroma=dataclasses.replace(settings.chroma, mode="embedded"))
    state.upgrade(settings.state_db_url)
    return settings


def warm_embedder(settings: Settings) -> tuple[Embedder, float]:
    """Load the tokenizer and the model and encode one string, so no timing includes loading."""
    from ragops.embedding import Embedder

    t0 = time.perf_counter()
    embedder = Embedder(settings.embedding)
    _ = embedder.tokenizer  # the chunker's tokenizer: loaded lazily by the first batch otherwise
    embedder.model.encode(["warm-up"], batch_size=1, normalize_embeddings=True, show_progress_bar=False)
    return embedder, time.perf_counter() - t0


def settings_facts(settings: Settings) -> dict[str, Any]:
    """The settings that move the figures, recorded with them."""
    return {"config_file": str(settings.source_file) if settings.source_file else None,
            "chunk_tokens": settings.chunking.chunk_tokens, "overlap_tokens": settings.chunking.overlap_tokens,
            "batch_documents": settings.ingest.batch_documents, "embedding_batch_size": settings.embedding.batch_size,
            "embedding_backend": settings.embedding.backend
            + ("" if settings.embedding.quantize == "none" else "-" + settings.embedding.quantize),
            "embedding_model": settings.embedding.model, "device": settings.embedding.device,
            "normalize": settings.embedding.normalize, "chroma_mode": settings.chroma.mode,
            "chroma_upsert_batch_size": settings.chroma.upsert_batch_size}


def live_collection(settings: Settings, index: str) -> str | None:
    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        live = state.live_version(s, index)
        return live.collection if live else None


def index_counts(settings: Settings, index: str) -> dict[str, int]:
    """Documents and chunks of an index in the state store."""
    from sqlalchemy import func, select

    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        docs = s.execute(select(func.count()).select_from(state.Document)
                         .where(state.Document.index_name == index)).scalar_one()
        chunks = s.execute(select(func.count()).select_from(state.Chunk)
                           .where(state.Chunk.index_name == index)).scalar_one()
    return {"documents": int(docs), "chunks": int(chunks)}


def all_vectors(store: VectorStore, collection: str,
                page_size: int = 5000) -> tuple[list[str], np.ndarray, list[str], list[dict[str, Any]]]:
    """Every id, vector, text and metadata of a collection, sorted by id."""
    import numpy as np

    col = store.collection(collection)
    ids: list[str] = []
    vecs: list[Any] = []
    docs: list[str] = []
    metas: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = col.get(include=["embeddings", "documents", "metadatas"], limit=page_size, offset=offset)
        ids += page["ids"]
        vecs += list(page["embeddings"])
        docs += [d or "" for d in page["documents"]]
        metas += [dict(m or {}) for m in page["metadatas"]]
        if len(page["ids"]) < page_size:
            break
        offset += page_size
    order = sorted(range(len(ids)), key=ids.__getitem__)
    return ([ids[i] for i in order], np.asarray([vecs[i] for i in order], dtype=np.float32),
            [docs[i] for i in order], [metas[i] for i in order])


def noisy_copies(base: np.ndarray, target: int, sigma: float,
                 seed: int) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """A synthetic collection's vectors, as ``(copy, vectors, cosines)`` until ``target`` rows:
    the base rows once as they are (copy 0, cosines None), then copies with Gaussian noise of
    ``sigma`` per dimension, re-normalised to unit length, with each row's cosine to its original."""
    import numpy as np

    rng = np.random.default_rng(seed)
    total, copy = 0, 0
    while total < target:
        take = min(len(base), target - total)
        vecs, cosines = base[:take], None
        if copy:
            noisy = vecs + rng.normal(0.0, sigma, vecs.shape).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            cosines = np.sum(noisy * vecs, axis=1) / np.linalg.norm(vecs, axis=1)
            vecs = noisy
        yield copy, vecs, cosines
        total += take
        copy += 1


def cosine_stats(cosines: list[np.ndarray]) -> dict[str, float]:
    """Mean and min cosine of the noisy copies to their originals (1 when there are none)."""
    import numpy as np

    cos = np.concatenate(cosines) if cosines else np.ones(1)
    return {"mean": round(float(cos.mean()), 4), "min": round(float(cos.min()), 4)}


# ----------------------------------------------------------------------------------------------
# work directories and child processes


@contextmanager
def workspace(prefix: str, keep: bool, logger: logging.Logger = log) -> Iterator[Path]:
    """A fresh temporary directory, removed at the end unless ``keep`` (``--keep-tmp``)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield tmp
    finally:
        if keep:
            logger.info("kept %s", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_child(cmd: list[str], out: Path, env: dict[str, str] | None = None,
              logger: logging.Logger = log) -> dict[str, Any]:
    """Run a child process that writes its figures as JSON to ``out``; the figures plus
    ``process_wall_s``, or ``{"error": ..., "command": ...}`` when it failed (recorded, so the
    other figures are still written)."""
    logger.info("child process: %s", shlex.join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env)
    if proc.returncode != 0 or not out.exists():
        logger.error("the child exited with code %d", proc.returncode)
        return {"error": f"child exited with code {proc.returncode}", "command": shlex.join(cmd)}
    data: dict[str, Any] = json.loads(out.read_text())
    data["process_wall_s"] = round(time.perf_counter() - t0, 3)
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    """A child's figures, for the parent's ``run_child``."""
    path.write_text(json.dumps(data, indent=2, default=str))


# ----------------------------------------------------------------------------------------------
# command line


def add_common_args(p: argparse.ArgumentParser, *, dataset: bool = True, limit: bool = True,
                    data_dir: bool = False, keep_tmp: bool = True, verbose: bool = True,
                    render: bool = False) -> argparse.ArgumentParser:
    """The options the benchmarks share; ``--results-dir`` always (a smoke run can write
    elsewhere than ``bench/results``). ``--repeat`` stays with each script (its help says what
    is repeated); ``check_common_args`` checks it."""
    if dataset:
        p.add_argument("--dataset", type=Path, default=None, help=f"BEIR SciFact folder (default: {DEFAULT_DATASET})")
    if data_dir:
        p.add_argument("--data-dir", type=Path, default=None,
                       help="data directory to use (and keep); an index 'scifact' in it is reused instead of ingesting")
    if limit:
        p.add_argument("--limit", type=int, default=None, metavar="N",
                       help="smoke run: first N documents only, results go to *.smoke.json / *.smoke.md")
    if keep_tmp:
        p.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (data dir included)")
    if verbose:
        p.add_argument("-v", "--verbose", action="store_true", help="show ragops' own INFO logs")
    if render:
        p.add_argument("--render", type=Path, metavar="FILE.json",
                       help="write the .md of an earlier results .json again and exit")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, metavar="DIR",
                   help=f"where the .json and .md results go (default: {RESULTS_DIR.relative_to(PROJECT_ROOT)})")
    return p


def check_common_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject what the shared options cannot mean (a ``--data-dir`` inside the project's own
    ``.ragops`` is never written to)."""
    if getattr(args, "limit", None) is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if getattr(args, "repeat", None) is not None and args.repeat < 1:
        p.error("--repeat must be at least 1")
    if getattr(args, "data_dir", None) is not None:
        d = args.data_dir.resolve()
        own = (PROJECT_ROOT / ".ragops").resolve()
        if d == own or own in d.parents:
            p.error(f"--data-dir {d} is the project's own data directory: the benchmark never writes there")
    return args


def command_line(script: str | Path) -> str:
    """How this run was started, as one copies it from the project root."""
    name = Path(script).resolve()
    rel = name.relative_to(PROJECT_ROOT) if name.is_relative_to(PROJECT_ROOT) else name
    return shlex.join([".venv/bin/python", str(rel), *sys.argv[1:]])


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(when: dt.datetime) -> str:
    return when.isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# results: targets, tables, the report, the files


@dataclasses.dataclass
class Target:
    name: str
    value: float | int | str | None
    target: str
    passed: bool | None  # None: not measured


def all_passed(targets: Iterable[Target]) -> bool:
    return all(t.passed for t in targets if t.passed is not None)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[passed]


def cpus_python_torch(m: dict[str, Any]) -> str:
    """The machine in a report's facts line, from ``machine_facts``."""
    return (f"{m['nproc']} CPUs ({m['cpu_model']}); Python {m['python']}; torch {m['torch']} "
            f"({m['torch_threads']} threads)")


def load_averages(m: dict[str, Any]) -> str:
    """The load averages in a report's facts line, from ``machine_facts``."""
    return f"load average at start {m['loadavg_at_start']}, at end {m['loadavg_at_end']}"


def target_rows(targets: Iterable[dict[str, Any]]) -> list[list[str]]:
    """Rows of a target table from the results' ``asdict`` targets: name, value, target, verdict."""
    return [[t["name"], fmt(t["value"]), t["target"], verdict(t["passed"])] for t in targets]


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line, *body])


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def md_cell(text: str | None) -> str:
    """Free text in one Markdown table cell: one line, pipes escaped."""
    return " ".join((text or "").split()).replace("|", "\\|")


def render_report(results: dict[str, Any], title: str, facts: str, tables: list[tuple[list[str], list[list[str]]]],
                  markdown: bool, notes: Sequence[str] = ()) -> str:
    """The report of a benchmark with targets: title (marked when a smoke run), the command, one
    line of facts, the tables, notes, and whether every target was met; as Markdown (the .md
    file) or as aligned text (the console)."""
    table = md_table if markdown else text_table
    head = (f"{'# ' if markdown else ''}{title}"
            f"{' (SMOKE RUN: --limit, figures not meaningful)' if results['smoke'] else ''}")
    cmd = f"`{results['command']}`" if markdown else results["command"]
    parts = [head, "", f"command: {cmd}", "", facts, ""]
    for headers, rows in tables:
        parts += [table(headers, rows), ""]
    if notes:
        parts += [*notes, ""]
    parts.append(f"all targets met: {results['all_passed']}")
    return "\n".join(parts) + "\n"


def result_stem(name: str, smoke: bool | str) -> str:
    """``name``, ``name.smoke`` for a smoke run, or ``name.<tag>`` for another variant."""
    if isinstance(smoke, str):
        return f"{name}.{smoke}" if smoke else name
    return f"{name}.smoke" if smoke else name


def write_results(results_dir: Path, stem: str, results: dict[str, Any], markdown: str,
                  indent: int = 2) -> tuple[Path, Path]:
    """``<stem>.json`` (every figure) and ``<stem>.md`` (the report) in ``results_dir``."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = results_dir / f"{stem}.json", results_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=indent, default=str) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def run_record(benchmark: str, script: str | Path, started: dt.datetime, limit: int | None, dataset: dict[str, Any],
               load_start: Sequence[float], targets: list[Target], figures: dict[str, Any],
               **extra: Any) -> dict[str, Any]:
    """A run with targets as its results file holds it: which benchmark, smoke or not, the
    command, when and how long, the dataset, the machine, ``extra`` sections, the targets and
    whether all were met, and the figures."""
    return {"benchmark": benchmark, "smoke": limit is not None, "limit": limit, "command": command_line(script),
            "cwd": str(Path.cwd()), "date": iso(started), "duration_s": round((utc_now() - started).total_seconds(), 1),
            "dataset": dataset, "machine": machine_facts(load_start), **extra,
            "targets": [dataclasses.asdict(t) for t in targets], "all_passed": all_passed(targets),
            "figures": figures}


def publish(results_dir: Path, results: dict[str, Any], render: Callable[[dict[str, Any], bool], str]) -> None:
    """Write a run with targets (``<benchmark>[.smoke].json`` and ``.md``) and print its report."""
    paths = write_results(results_dir, result_stem(results["benchmark"], results["smoke"]), results,
                          render(results, True))
    print(render(results, False))
    print(f"results: {paths[0]} and {paths[1]}")


def dataset_main(p: argparse.ArgumentParser, argv: list[str], *, benchmark: str, script: str | Path,
                 logger: logging.Logger, tmp_prefix: str,
                 measure: Callable[[Path, argparse.Namespace, Path], dict[str, Any]],
                 evaluate: Callable[[dict[str, Any]], list[Target]],
                 render: Callable[[dict[str, Any], bool], str]) -> int:
    """The main of a benchmark on the dataset with targets (``p`` has the common args, render on):
    ``--render FILE`` rewrites a report; else the dataset (or exit 0 when absent), a workspace,
    ``measure(dataset, args, tmp)``, the targets, and the results written and printed."""
    args = check_common_args(p, p.parse_args(argv))
    if args.render:
        results = json.loads(args.render.read_text())
        write_results(args.render.parent, args.render.stem, results, render(results, True))
        return 0
    setup_logging(args.verbose, logger)
    dataset = dataset_or_skip(args.dataset)
    if dataset is None:
        return 0
    started = utc_now()
    load_start = load_at_start(logger)
    with workspace(tmp_prefix, args.keep_tmp, logger) as tmp:
        figures = measure(dataset, args, tmp)
    publish(args.results_dir, run_record(benchmark, script, started, args.limit, {"path": str(dataset)}, load_start,
                                         evaluate(figures), figures), render)
    return 0


def forget_eval_caches(data_dir: str | Path, fingerprint: str, disk: bool) -> None:
    """Before a timed eval run: drop the in-process caches (toxicity scores, claim facts, passage
    splits), as a new process has none, and with ``disk`` the embedder's vector cache file too (a
    cold run, the first on an index)."""
    from ragops.grounding import checker, claims
    from ragops.safety import toxicity
    from ragops.vectorcache import path_for

    toxicity.clear_cache()
    claims.facts.cache_clear()
    checker._parts.cache_clear()
    if disk:
        cache_file = path_for(data_dir, fingerprint)
        for f in cache_file.parent.glob(cache_file.name + "*"):
            f.unlink()


def rewrite_markdown(json_path: Path, render: Callable[[dict[str, Any]], str]) -> Path:
    """``--render FILE.json``: write the .md of an earlier results file again."""
    md_path = json_path.with_suffix(".md")
    md_path.write_text(render(json.loads(json_path.read_text(encoding="utf-8"))), encoding="utf-8")
    return md_path
