"""Data quality with Great Expectations 1.x: suites on documents and on chunks.

Row-level expectations (non-empty text, length bounds, unique ids, required metadata, no terminal
controls, not mostly broken) quarantine the failing documents with a reason; expectations of
severity *warning* (text was repaired, U+FFFD kept) list the document without quarantining it
(``ragops.repair`` does the repairs before this suite runs); dataset-level ones (duplicate-text
share) raise a data incident. The suites are built in code from ``QualitySettings`` so the
thresholds live in one YAML file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ragops.config import QualitySettings

log = logging.getLogger(__name__)
# C0 controls but tab/newline/FF/CR, DEL and the C1 controls (U+0080-U+009F): after ragops.repair only the
# dangerous ones (ESC, NUL, 8-bit CSI/OSC/DCS terminal escapes) are left, in the documents it refused to repair
CONTROL_PATTERN = r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]"
REPLACEMENT_PATTERN = "\ufffd"


@dataclass
class QualityResult:
    failed_rows: dict[int, list[str]] = field(default_factory=dict)  # row -> reasons (quarantine)
    warned_rows: dict[int, list[str]] = field(default_factory=dict)  # row -> warnings (indexed, listed)
    incidents: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)


@lru_cache(maxsize=1)
def _context() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # noqa: BLE001 - progress bars are cosmetic; GX moved this class before
        log.debug("could not disable GX progress bars")
    ctx.data_sources.add_pandas("ragops")
    return ctx


def _suite(kind: str, q: QualitySettings, max_tokens: int) -> tuple[Any, dict[str, tuple[str, str]]]:
    """Build the expectation suite and a map (type, column) -> (reason code, human text)."""
    import great_expectations as gx

    E = gx.expectations
    if kind == "documents":
        items = [
            (E.ExpectColumnValuesToNotBeNull(column="doc_id"), "missing_id", "document id is missing"),
            (E.ExpectColumnValuesToBeUnique(column="doc_id"), "duplicate_id", "document id is not unique"),
            (E.ExpectColumnValuesToNotBeNull(column="title"), "missing_metadata", "title is missing"),
            (E.ExpectColumnValuesToNotBeNull(column="uri"), "missing_metadata", "uri is missing"),
            (E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=q.min_chars, max_value=q.max_chars),
             "length_out_of_bounds", f"text length outside [{q.min_chars}, {q.max_chars}] characters "
             "(quality.min_chars / quality.max_chars)"),
            (E.ExpectColumnValuesToNotMatchRegex(column="text", regex=CONTROL_PATTERN), "invalid_characters",
             "text contains control characters that are terminal escapes (ESC, NUL, 8-bit CSI/OSC/DCS); strip "
             "them at the source or re-export the text"),
            (E.ExpectColumnValuesToBeBetween(column="bad_char_share", max_value=q.max_bad_char_share),
             "mostly_broken", f"more than {q.max_bad_char_share:.1%} of the characters were lost upstream (U+FFFD) "
             "or are controls with no meaning (quality.max_bad_char_share); re-export the document from its "
             "original"),
            (E.ExpectColumnValuesToBeBetween(column="n_repairs", max_value=0, severity="warning"), "repaired",
             "broken characters were repaired (Windows-1252 punctuation read as C1 controls, mojibake, stray "
             "controls); the repaired text is indexed"),
            (E.ExpectColumnValuesToNotMatchRegex(column="text", regex=REPLACEMENT_PATTERN, severity="warning"),
             "replacement_chars", "text holds U+FFFD where an earlier export lost characters; kept "
             "(quality.replacement_chars: remove drops them)"),
        ]
    elif kind == "chunks":
        items = [
            (E.ExpectColumnValuesToNotBeNull(column="chunk_id"), "missing_id", "chunk id is missing"),
            (E.ExpectColumnValuesToBeUnique(column="chunk_id"), "duplicate_id", "chunk id is not unique"),
            (E.ExpectColumnValuesToNotBeNull(column="doc_id"), "missing_metadata", "chunk without document id"),
            (E.ExpectColumnValueLengthsToBeBetween(column="body", min_value=1), "chunk_empty", "empty chunk"),
            (E.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, max_value=max_tokens),
             "chunk_too_long", f"chunk longer than the model's {max_tokens} word pieces"),
        ]
    elif kind == "chunk_set":  # dataset-level, over every new chunk of a run (not per batch)
        items = [
            (E.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column="text_hash", min_value=1.0 - q.max_duplicate_text_share, max_value=1.0),
             "duplicate_text_share", f"more than {q.max_duplicate_text_share:.0%} of chunks repeat another chunk's "
             "text (quality.max_duplicate_text_share)"),
        ]
    else:
        raise ValueError(f"unknown suite {kind!r}")
    suite = gx.ExpectationSuite(name=f"ragops_{kind}")
    reasons: dict[str, tuple[str, str]] = {}
    for exp, code, text in items:
        suite.add_expectation(exp)
        reasons[_key(exp.expectation_type, exp.column, getattr(exp, "regex", None))] = (code, text)
    return suite, reasons


def _key(expectation_type: str, column: str | None, regex: str | None = None) -> str:
    return f"{expectation_type}:{column}:{regex or ''}"  # unique within each suite


def validate(kind: str, rows: list[dict[str, Any]], q: QualitySettings, max_tokens: int = 254) -> QualityResult:
    """Validate ``rows`` (documents or chunks) and say which rows fail and why."""
    import pandas as pd

    result = QualityResult()
    if not rows:
        return result
    if kind == "documents":
        rows = [_with_repair_columns(r) for r in rows]
    ctx = _context()
    suite, reasons = _suite(kind, q, max_tokens)
    name = f"{kind}_{id(rows)}"
    ds = ctx.data_sources.get("ragops")
    asset = ds.add_dataframe_asset(name)
    try:
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": pd.DataFrame(rows)})
        res = batch.validate(suite, result_format={"result_format": "COMPLETE"})
    finally:
        ds.delete_asset(name)
    for r in res.results:
        cfg = r.expectation_config
        code, text = reasons[_key(cfg.type, cfg.kwargs.get("column"), cfg.kwargs.get("regex"))]
        result.checks[_key(code, cfg.kwargs.get("column"))] = bool(r.success)
        if r.success:
            continue
        if r.exception_info and r.exception_info.get("raised_exception"):
            raise RuntimeError(f"Great Expectations failed to evaluate {code}: {r.exception_info.get('exception_message')}")
        rows_failed = r.result.get("unexpected_index_list")
        if rows_failed is None:  # dataset-level expectation
            observed = r.result.get("observed_value")
            result.incidents.append(f"{text} (observed unique share {observed})")
            continue
        severity = str(getattr(cfg, "severity", "critical")).rsplit(".", 1)[-1].lower()
        target = result.warned_rows if severity == "warning" else result.failed_rows
        for idx in rows_failed:
            target.setdefault(int(idx), []).append(f"{code}: {text}")
    return result


def _with_repair_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The document suite reads how broken a text was and whether it was repaired; computed when not given."""
    if "bad_char_share" in row and "n_repairs" in row:
        return row
    from ragops.repair import repair_text

    rep = repair_text(row.get("text") or "")
    return {**row, "bad_char_share": row.get("bad_char_share", rep.bad_share()),
            "n_repairs": row.get("n_repairs", sum(rep.repairs.values()))}
