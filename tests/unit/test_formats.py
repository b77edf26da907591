"""PDF and Word files, written by real writers (fpdf2, python-docx) and read by the real
extractors (pypdfium2, python-docx), through the parser, the chunker, discovery and a real sync."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image
from sqlalchemy import select

from ragops import state
from ragops.chunking import Chunker
from ragops.config import ChunkingSettings, load_settings
from ragops.indexing import sync
from ragops.parsing import ParseError, parse_file
from ragops.retrieval import search
from ragops.sources import discover

BODY = ("The scheduler restarts when its heartbeat stops, and the api-server keeps serving the last "
        "state it read from the metadata database. ")


def pdf_bytes(pages: list[list[tuple[str, str]]], *, password: str | None = None) -> bytes:
    """A PDF of pages made of ("h1" | "h2" | "p" | "table" | "image", text) blocks."""
    pdf = FPDF()
    if password:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    for blocks in pages:
        pdf.add_page()
        for kind, text in blocks:
            if kind in ("h1", "h2"):
                pdf.set_font("Helvetica", "B", 20 if kind == "h1" else 15)
                pdf.cell(0, 10, text, new_x="LMARGIN", new_y="NEXT")
            elif kind == "p":
                pdf.set_font("Helvetica", "", 11)
                pdf.multi_cell(0, 6, text, new_x="LMARGIN", new_y="NEXT")
            elif kind == "table":
                pdf.set_font("Helvetica", "", 11)
                with pdf.table() as table:
                    for row in text.split("\n"):
                        cells = table.row()
                        for cell in row.split(","):
                            cells.cell(cell)
            elif kind == "image":
                pdf.image(Image.new("RGB", (300, 400), (240, 240, 230)), x=10, y=10, w=150)
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    import docx

    d = docx.Document()
    d.add_heading("Runbook", level=0)  # the Title style
    d.add_heading("Restarting the scheduler", level=1)
    d.add_paragraph(BODY)
    d.add_paragraph("check the heartbeat", style="List Bullet")
    d.add_heading("Ports", level=2)
    table = d.add_table(rows=3, cols=3)
    for r, row in enumerate([("Service", "Port", "Owner"), ("scheduler", "8793", "platform"),
                             ("api-server", "8080", "web")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_paragraph("Nightly snapshots are kept for seven days.")
    buf = io.BytesIO()
    d.save(buf)
    return buf.getvalue()


TWO_PAGES = [
    [("h1", "Operations guide"), ("h2", "Restarting the scheduler"), ("p", BODY * 3),
     ("table", "Service,Port,Owner\nscheduler,8793,platform\napi-server,8080,web")],
    [("h2", "Backups"), ("p", "Nightly snapshots of the vector store are kept for seven days. " * 4)],
]


# ---------------------------------------------------------------------------------------------- PDF


def test_pdf_headings_become_markdown_headers_and_table_rows_stay_rows() -> None:
    doc = parse_file("guides/ops.pdf", pdf_bytes(TWO_PAGES), "pdf")
    lines = doc.text.split("\n")
    assert doc.title == "Operations guide"
    assert "# Operations guide" in lines and "## Restarting the scheduler" in lines and "## Backups" in lines
    table = lines.index("| Service | Port | Owner |")  # cells far apart: a Markdown table, one row per line
    assert lines[table + 1:table + 4] == ["| --- | --- | --- |", "| scheduler | 8793 | platform |",
                                          "| api-server | 8080 | web |"]
    assert not any(ln.startswith("#") and "heartbeat" in ln for ln in lines), "body text is not a heading"
    assert doc.page_starts[0] == 0 and doc.text[doc.page_starts[1]:].startswith("## Backups")
    assert doc.warnings == ()


def test_pdf_chunks_record_their_pages(embedder) -> None:
    doc = parse_file("ops.pdf", pdf_bytes(TWO_PAGES), "pdf")
    chunker = Chunker(ChunkingSettings(chunk_tokens=64, overlap_tokens=8), embedder.tokenizer,
                      embedder.max_tokens, embedder.fingerprint)
    pieces = chunker.split(doc)
    assert {p.headings for p in pieces} >= {"Restarting the scheduler", "Backups"}  # split on the headers
    for p in pieces:
        want = 2 if "Nightly snapshots" in p.body else 1
        assert p.meta["page"] == want and p.meta["pages"] == str(want), (p.body[:60], p.meta)
    # a paragraph that runs over a page break names both pages
    long = parse_file("long.pdf", pdf_bytes([[("p", BODY * 60)]]), "pdf")
    assert long.metadata["page_count"] >= 2
    spans = {p.meta["pages"] for p in Chunker(ChunkingSettings(chunk_tokens=200, overlap_tokens=0), embedder.tokenizer,
                                               embedder.max_tokens, embedder.fingerprint).split(long)}
    assert "1-2" in spans and "1" in spans


def test_image_only_pdf_is_refused_as_no_text_layer() -> None:
    with pytest.raises(ParseError) as err:
        parse_file("scan.pdf", pdf_bytes([[("image", "")], [("image", "")]]), "pdf")
    assert err.value.reason == "no_text_layer" and "no text layer: run OCR first" in err.value.detail


def test_pdf_with_a_scanned_page_indexes_the_text_and_warns_of_the_page() -> None:
    doc = parse_file("mixed.pdf", pdf_bytes([TWO_PAGES[0], [("image", "")], TWO_PAGES[1]]), "pdf")
    assert "Restarting the scheduler" in doc.text and "Nightly snapshots" in doc.text
    assert len(doc.warnings) == 1 and "page 2 of 3" in doc.warnings[0] and "OCR" in doc.warnings[0]
    assert doc.text[doc.page_starts[2]:].startswith("## Backups")  # page 3 starts where its text does


def test_clean_pdf_has_no_warning_control() -> None:
    assert parse_file("ok.pdf", pdf_bytes(TWO_PAGES), "pdf").warnings == ()


def test_encrypted_pdf_is_refused_with_its_reason() -> None:
    with pytest.raises(ParseError) as err:
        parse_file("secret.pdf", pdf_bytes(TWO_PAGES, password="s3cret"), "pdf")
    assert err.value.reason == "encrypted" and "password-protected: export an unprotected copy" in err.value.detail


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_pdf_is_refused_with_the_library_error(damage: str) -> None:
    good = pdf_bytes(TWO_PAGES)
    data = good[: len(good) // 3] if damage == "truncated" else b"%PDF-1.7\n" + bytes(range(256)) * 20
    with pytest.raises(ParseError) as err:
        parse_file("broken.pdf", data, "pdf")
    assert err.value.reason == "corrupt" and "PDFium" in err.value.detail


# ---------------------------------------------------------------------------------------------- Word


def test_docx_headings_lists_and_table() -> None:
    doc = parse_file("runbook.docx", docx_bytes(), "docx")
    lines = doc.text.split("\n")
    assert doc.title == "Runbook"
    assert "# Runbook" in lines and "# Restarting the scheduler" in lines and "## Ports" in lines
    assert "- check the heartbeat" in lines
    assert "| Service | Port | Owner |" in lines and "| scheduler | 8793 | platform |" in lines
    assert lines.index("| Service | Port | Owner |") < lines.index("| api-server | 8080 | web |")
    assert doc.page_starts == ()  # a Word file has no fixed pages


@pytest.mark.parametrize("data, reason", [(b"PK\x03\x04 not really a zip file", "corrupt"),
                                          (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600, "encrypted")])
def test_broken_or_encrypted_docx_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_file("bad.docx", data, "docx")
    assert err.value.reason == reason


def test_docx_truncated_is_corrupt() -> None:
    data = docx_bytes()
    with pytest.raises(ParseError) as err:
        parse_file("cut.docx", data[: len(data) // 2], "docx")
    assert err.value.reason == "corrupt" and "BadZipFile" in err.value.detail


# ---------------------------------------------------------------------------------------------- discovery


def mixed_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "guide.pdf").write_bytes(pdf_bytes(TWO_PAGES))
    (root / "runbook.docx").write_bytes(docx_bytes())
    (root / "notes.md").write_text("# Notes\n\nThe dashboards live in Grafana.\n")
    img = io.BytesIO()
    Image.new("RGB", (4, 4)).save(img, format="PNG")
    (root / "diagram.png").write_bytes(img.getvalue())
    return root


def test_directory_discovers_pdf_docx_md_and_lists_the_unknown_type(tmp_path: Path) -> None:
    settings = load_settings()
    disc = discover(str(mixed_dir(tmp_path / "src")), settings)
    assert sorted((d.doc_id, d.fmt) for d in disc.docs) == [("guide.pdf", "pdf"), ("notes.md", "md"),
                                                            ("runbook.docx", "docx")]
    assert [(s.path, s.reason) for s in disc.skipped] == [("diagram.png", "unsupported type .png")]
    assert not disc.problems


def test_fsspec_source_reads_pdf_and_docx_and_lists_the_rest() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/fmt/a.pdf": pdf_bytes(TWO_PAGES), "/fmt/b.docx": docx_bytes(), "/fmt/c.zip": b"PK\x05\x06" + b"\0" * 18})
    settings = load_settings()
    disc = discover("memory://fmt", settings)
    assert sorted(d.fmt for d in disc.docs) == ["docx", "pdf"]
    assert [s.path for s in disc.skipped] == ["c.zip"]


def test_ingest_pdf_end_to_end(settings, tmp_path: Path, embedder) -> None:
    """The real ingest path: discovery, parse, chunk, embed, Chroma and the state store."""
    src = mixed_dir(tmp_path / "docs")
    (src / "scan.pdf").write_bytes(pdf_bytes([[("image", "")]]))
    for name in ("alerts", "deploys"):  # one scan among six documents stays under quality.max_failed_share
        (src / f"{name}.md").write_text(f"# {name.title()}\n\nHow {name} are handled by the platform team.\n")
    report = sync(settings, str(src), "docs", embedder=embedder)
    assert report["counts"]["discovered"] == 6 and report["counts"]["skipped"] == 1
    assert report["skipped"] == ["diagram.png (unsupported type .png)"]
    assert report["quarantine"]["reasons"] == {"no_text_layer": 1}
    assert report["counts"]["indexed"] == 5
    with state.session_scope(settings.state_db_url) as s:
        metas = [m for (m,) in s.execute(select(state.Chunk.meta).where(state.Chunk.doc_id == "guide.pdf"))]
    assert metas and {m["page"] for m in metas} == {1, 2} and all(m["format"] == "pdf" for m in metas)
    hits = search(settings, "how long are nightly snapshots kept", k=3, embedder=embedder, mode="dense")
    assert hits[0].doc_id in ("guide.pdf", "runbook.docx")
    pdf_hit = next(h for h in hits if h.doc_id == "guide.pdf")
    assert pdf_hit.page == "2" and "Nightly snapshots" in pdf_hit.snippet
    again = sync(settings, str(src), "docs", embedder=embedder)  # incremental: nothing changed
    assert again["counts"]["unchanged"] == 5 and again["chunks"]["embedded"] == 0
