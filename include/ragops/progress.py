"""Progress of long loops: a bar on a terminal, a log line every few seconds elsewhere.

A full ingest or evaluation runs for minutes; a person at a terminal gets a tqdm bar on stderr
(documents, chunks, rate, time left), an Airflow task log gets one INFO line at most every
``log_every`` seconds with the same figures, and ``--quiet`` (or ``RAGOPS_PROGRESS=off``) turns
both off. stdout is never written, so ``--json`` output stays clean.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

log = logging.getLogger("ragops.progress")

_MODE = {"value": None}  # None: from RAGOPS_PROGRESS (auto, bar, log, off)


def configure(mode: str | None) -> None:
    """``auto`` (bar on a terminal, else log lines), ``bar``, ``log`` or ``off``; None = the environment."""
    if mode not in (None, "auto", "bar", "log", "off"):
        raise ValueError(f"progress mode must be auto, bar, log or off, not {mode!r}")
    _MODE["value"] = mode


def mode() -> str:
    m = _MODE["value"] or os.environ.get("RAGOPS_PROGRESS", "auto").strip().lower() or "auto"
    if m not in ("auto", "bar", "log", "off"):
        m = "auto"
    if m == "auto":
        return "bar" if sys.stderr.isatty() else "log"
    return m


class Progress:
    """``with Progress(total, "documents", "ingest") as p: p.update(n, chunks=...)``."""

    def __init__(self, total: int, unit: str, desc: str, *, log_every: float = 5.0) -> None:
        self.total, self.unit, self.desc, self.log_every = int(total), unit, desc, log_every
        self.done = 0
        self.extra: dict[str, Any] = {}
        self.t0 = self.last = time.perf_counter()
        self.mode = mode() if total > 0 else "off"
        self.bar: Any = None
        if self.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit=f" {unit}", desc=desc, file=sys.stderr, dynamic_ncols=True,
                            leave=True, mininterval=0.5)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, **counts: int) -> None:
        """``n`` more units done; ``counts`` are running totals of other figures (chunks=...)."""
        self.done += n
        for k, v in counts.items():
            self.extra[k] = self.extra.get(k, 0) + int(v)
        if self.bar is not None:
            if self.extra:
                self.bar.set_postfix(self.extra, refresh=False)
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.mode == "log" and (now - self.last >= self.log_every or self.done >= self.total):
            self.last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.t0
        rate = self.done / max(elapsed, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        extra = "".join(f", {v} {k}" for k, v in self.extra.items())
        return (f"{self.desc}: {self.done}/{self.total} {self.unit}{extra} ({rate:.1f} {self.unit}/s, "
                f"{elapsed:.0f}s elapsed, ~{left:.0f}s left)")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
