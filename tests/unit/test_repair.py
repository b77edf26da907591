"""Dirty text is repaired, not dropped: ragops.repair on its own and through the real sync.

Known-bad input drives every check: Windows-1252 punctuation read as C1 controls, mojibake,
U+FFFD, text that is mostly lost, terminal escapes. Clean text is the control that must come out
unchanged. The sync tests use the real parts (SQLite state, embedded Chroma, the bundled model).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ragops.config import QualitySettings, load_settings, quality_for
from ragops.errors import ConfigError, DatasetError
from ragops.evaluation.runner import run_eval
from ragops.indexing import sync
from ragops.quality import validate
from ragops.repair import repair_text
from ragops.retrieval import explain_missing_docs, quarantine_entries
from tests.conftest import PARA, doc, write

CLEAN = [
    "Plain ASCII text about the scheduler and its pools.",
    "Krüppel-like factor, naïve café, Zürich, 東京, emoji 🚀 and curly “quotes” — kept as they are.",
    "Angle quote › next, a form feed\fpage two, tabs\tand\r\nnewlines.",
]


@pytest.mark.parametrize("text", CLEAN)
def test_clean_text_is_left_alone(text: str) -> None:
    r = repair_text(text)
    assert r.text == text and not r.repairs and not r.warnings and r.dangerous is None and r.bad_share() == 0


def test_c1_controls_that_are_windows_1252_punctuation_become_their_characters() -> None:
    # SciFact 4336849 as shipped: U+0096 is the en dash of "1–4"
    r = repair_text("interfering with their function1\x964. Parasites resistant to chloroquine")
    assert r.text == "interfering with their function1–4. Parasites resistant to chloroquine"
    assert r.repairs == {"c1_as_cp1252": 1} and r.dangerous is None
    assert not any(0x80 <= ord(c) <= 0x9F for c in r.text)


def test_mojibake_is_decoded_back() -> None:
    bad = "The café’s menu — naïve prices".encode().decode("cp1252")
    r = repair_text(bad)
    assert r.text == "The café’s menu — naïve prices"
    assert r.repairs.get("mojibake") == 1


def test_replacement_chars_are_kept_or_removed_with_a_warning() -> None:
    text = "patients (p ¼ 7.7 3 10 \ufffd 12). N348I appeared early in therapy"
    kept = repair_text(text)
    assert kept.text == text and kept.warnings == {"replacement_chars": 1} and kept.bad_chars == 1
    removed = repair_text(text, "remove")
    assert "\ufffd" not in removed.text and removed.warnings == {"replacement_chars_removed": 1}
    with pytest.raises(ValueError, match="keep.*remove"):
        repair_text(text, "drop")


@pytest.mark.parametrize("text, what", [
    ("ANSI \x1b[31mred\x1b[0m text", "ESC"),
    ("8-bit CSI \x9b31mred\x9b0m", "CSI"),
    ("8-bit OSC \x9d0;pwned\x07", "OSC"),
    ("a NUL \x00 here", "NUL"),
])
def test_terminal_escapes_are_refused_not_repaired(text: str, what: str) -> None:
    r = repair_text(text)
    assert r.dangerous and what in r.dangerous and r.text == text  # left as is: the quality suite refuses it


def test_stray_controls_are_removed_and_counted_as_bad() -> None:
    r = repair_text("back\x08space and a bell\x07")
    assert r.text == "backspace and a bell" and r.repairs == {"control_chars_removed": 2} and r.bad_chars == 2


def test_document_suite_tells_failures_from_warnings() -> None:
    q = QualitySettings()
    rows = [
        {"doc_id": "ok", "title": "T", "uri": "u", "text": "a perfectly fine document text"},
        {"doc_id": "fffd", "title": "T", "uri": "u", "text": "one lost \ufffd character in a long enough text"},
        {"doc_id": "broken", "title": "T", "uri": "u", "text": "\ufffd\ufffd\ufffd\ufffd mostly \ufffd\ufffd\ufffd lost"},
        {"doc_id": "esc", "title": "T", "uri": "u", "text": "terminal \x1b[2J escape in the text"},
    ]
    res = validate("documents", rows, q)
    assert set(res.failed_rows) == {2, 3}
    assert res.failed_rows[2][0].startswith("mostly_broken") and res.failed_rows[3][0].startswith("invalid_characters")
    assert set(res.warned_rows) == {1, 2} and res.warned_rows[1][0].startswith("replacement_chars")
    # a source that allows a higher share lets the broken one in, with its warning
    loose = dataclasses.replace(q, max_bad_char_share=0.9)
    assert set(validate("documents", rows, loose).failed_rows) == {3}


def test_quality_sources_override_and_bad_settings(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("quality:\n  sources:\n    s3://legacy/: {max_bad_char_share: 0.3, replacement_chars: remove}\n")
    s = load_settings(cfg)
    assert quality_for(s.quality, "s3://legacy/exports").max_bad_char_share == 0.3
    assert quality_for(s.quality, "s3://legacy/exports").replacement_chars == "remove"
    assert quality_for(s.quality, "s3://other/").max_bad_char_share == s.quality.max_bad_char_share
    for body, msg in [
        ("quality:\n  max_bad_char_share: 1.5\n", "between 0 and 1"),
        ("quality:\n  replacement_chars: drop\n", "'keep' or 'remove'"),
        ("quality:\n  sources:\n    s3://x/: {max_bad_chars: 0.3}\n", "max_bad_chars"),
    ]:
        cfg.write_text(body)
        with pytest.raises(ConfigError, match=msg):
            load_settings(cfg)


@pytest.fixture
def dirty(tmp_path: Path) -> Path:
    root = tmp_path / "dirty"
    for i, topic in enumerate(["scheduling", "pools", "sensors", "backfills", "callbacks", "datasets", "triggers"]):
        write(root, f"clean{i}.md", doc(f"Clean guide {i}", f"Clean {topic}"))
    write(root, "cp1252.txt", "Retry windows\n\n" + PARA.format(topic="Retries of 1\u00964 attempts") * 3)
    write(root, "lost.txt", "Lost characters\n\n" + PARA.format(topic="A p-value of 10 \ufffd 12") * 3)
    write(root, "broken.txt", "Broken\n\n" + ("\ufffd\ufffd\ufffd ab " * 80))
    write(root, "ansi.txt", "ANSI\n\n" + PARA.format(topic="Colour \x1b[31mred\x1b[0m") * 3)
    write(root, "rant.txt", "Support reply\n\n" + PARA.format(topic="Scheduling") +
          "You are an idiot and your question is stupid. " + PARA.format(topic="Pools"))
    records = [{"id": "r1", "title": "Record \u0096 one", "text": PARA.format(topic="Record en dash 2\u00963") * 3}]
    write(root, "records.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
    return root


def test_sync_repairs_warns_quarantines_and_does_not_reread(settings, dirty: Path, embedder) -> None:
    r1 = sync(settings, str(dirty), "docs", embedder=embedder)
    c = r1["counts"]
    assert (c["indexed"], c["quarantined"], c["still_quarantined"]) == (11, 2, 0)
    assert r1["quarantine"]["reasons"] == {"mostly_broken": 1, "invalid_characters": 1}
    detail = {e["doc_id"]: e["detail"] for e in r1["quarantine"]["entries"]}
    assert "quality.max_bad_char_share" in detail["broken.txt"] and "ESC" in detail["ansi.txt"]
    rp = r1["repairs"]
    assert rp["repaired_documents"] == 2 and rp["warned_documents"] == 2  # U+FFFD kept; an insult (toxicity)
    assert rp["kinds"]["repaired:c1_as_cp1252"] == 3 + 4 and rp["kinds"]["warning:replacement_chars"] == 3
    assert set(r1["phases_s"]) >= {"discover_plan", "parse", "repair", "quality", "chunk", "embed", "write"}

    # the repaired text is what got indexed: en dash, no C1 control; U+FFFD kept
    from ragops.retrieval import search
    texts = {h.doc_id: h.text for h in search(settings, "Retries of attempts windows", k=10, mode="lexical")}
    assert "1–4" in texts["cp1252.txt"] and "\x96" not in texts["cp1252.txt"]
    every = quarantine_entries(settings, "docs", severities=("failure", "repaired", "warning"))
    kinds = {(e["doc_id"], e["severity"], e["reason"]) for e in every}
    assert ("lost.txt", "warning", "replacement_chars") in kinds and ("rant.txt", "warning", "toxicity") in kinds
    assert not any(k[2] == "toxicity" and k[0] != "rant.txt" for k in kinds)  # clean documents are not flagged
    assert ("records.jsonl#r1", "repaired", "c1_as_cp1252") in kinds
    assert {e["doc_id"] for e in quarantine_entries(settings, "docs")} == {"broken.txt", "ansi.txt"}

    # nothing changed: the quarantined documents are still quarantined, not "added" and not read again
    r2 = sync(settings, str(dirty), "docs", embedder=embedder)
    c = r2["counts"]
    assert (c["added"], c["changed"], c["quarantined"], c["still_quarantined"]) == (0, 0, 0, 2)
    assert r2["chunks"]["embedded"] == 0 and r2["quarantine"]["documents"] == 2
    assert {e["doc_id"] for e in quarantine_entries(settings, "docs")} == {"broken.txt", "ansi.txt"}

    # a golden question that needs a quarantined document says why it is missing, and the way out
    why = explain_missing_docs(settings, "docs", ["broken.txt", "nope.md"])
    assert why["broken.txt"].startswith(f"quarantined by sync run {r2['run_id']}") and "mostly_broken" in why["broken.txt"]
    assert why["nope.md"].startswith("unknown to every source synced into index 'docs'")
    golden = dirty.parent / "golden.jsonl"
    golden.write_text(json.dumps({"id": "q1", "question": "What is broken?", "relevant_doc_ids": ["broken.txt"]}) + "\n")
    with pytest.raises(DatasetError) as err:
        run_eval(settings, golden, "rag_answer@1", "docs", embedder=embedder)
    assert "quarantined by sync run" in str(err.value) and "--allow-unknown-docs" in str(err.value)

    # a fixed document is read again and indexed
    write(dirty, "ansi.txt", "ANSI\n\n" + PARA.format(topic="Colour red") * 3)
    r3 = sync(settings, str(dirty), "docs", embedder=embedder)
    assert (r3["counts"]["added"], r3["counts"]["still_quarantined"], r3["counts"]["quarantined"]) == (1, 1, 0)


def test_a_source_may_raise_the_broken_share(settings, dirty: Path, embedder) -> None:
    loose = dataclasses.replace(settings, quality=dataclasses.replace(
        settings.quality, sources={str(dirty): {"max_bad_char_share": 0.9}}))
    r = sync(loose, str(dirty), "docs", embedder=embedder)
    assert r["quarantine"]["reasons"] == {"invalid_characters": 1} and r["counts"]["indexed"] == 12
