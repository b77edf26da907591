"""PDF reader: PDFium (the engine of Chrome's PDF viewer) through pypdfium2, wrapped here and
nowhere else (docs/formats.md compares it with pypdf, pdfplumber and markitdown).

A PDF has no headings, only glyphs of some size: a line set in a font clearly larger than the
document's body text becomes a Markdown heading, one level per distinct size, largest first, so
the header-aware chunker splits on it. Table rows stay one row per line (PDFium joins the cells
of a row); where PDFium had to invent the space between two cells because they are far apart,
the cells are kept apart, and two or more such lines in a row with the same number of cells
become a Markdown table. Pages are read one at a time and closed before the next: a 500-page file never holds
more than one page's objects, only the text extracted so far. A page without text but with an
image is a scan: a file made only of such pages is refused (``no_text_layer``), never indexed
empty; a file with some is indexed and warns which pages were left out.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from ragops.parsing.base import ParsedDoc, ParseError, normalise, stem_title

log = logging.getLogger(__name__)

HEADING_RATIO = 1.15  # a line at least this much larger than the body text is a heading
MAX_HEADING_CHARS = 150  # longer lines are emphasised prose, not headings
MAX_LEVELS = 6
CELL_GAP = 2.0  # a generated space wider than this many font sizes separates two table cells
Line = tuple[list[str], float]  # (cells: one unless the line is a table row, font size)


def _fmt_pages(pages: list[int]) -> str:
    shown = ", ".join(str(p) for p in pages[:20])
    return shown + (f" and {len(pages) - 20} more" if len(pages) > 20 else "")


def _open(doc_id: str, data: bytes) -> Any:
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if exc.err_code in (raw.FPDF_ERR_PASSWORD, raw.FPDF_ERR_SECURITY):
            raise ParseError("encrypted", f"{doc_id} is password-protected: export an unprotected copy "
                                          f"(PDFium: {exc})") from exc
        raise ParseError("corrupt", f"{doc_id} is not a readable PDF: {exc} Re-export or repair the file "
                                    "(e.g. qpdf --repair), or remove it") from exc


def _page_lines(page: Any, raw: Any) -> list[Line]:
    """(cells, font size) for every non-blank line of one page, in PDFium's reading order.

    A line's size is the smaller of the sizes of its first and middle glyph (a heading is large
    throughout, a body line with one large glyph is not); characters PDFium generated (spaces,
    line breaks) have no font and are never sampled. A generated space over a wide gap splits
    the line into cells."""
    textpage = page.get_textpage()
    try:
        n = textpage.count_chars()
        text = textpage.get_text_range() if n else ""
        out: list[tuple[str, float]] = []
        pos = 0
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
            start, pos = pos, pos + len(line) + (2 if text[pos + len(line):pos + len(line) + 2] == "\r\n" else 1)
            stripped = line.strip()
            if not stripped:
                continue
            first = start + len(line) - len(line.lstrip())
            sizes = []
            for idx in (first, first + len(stripped) // 2):
                if idx < n and not raw.FPDFText_IsGenerated(textpage, idx):
                    sizes.append(raw.FPDFText_GetFontSize(textpage, idx))
            size = round(min(sizes), 1) if sizes else 0.0
            out.append((_cells(textpage, raw, line, start, size) if size else [stripped], size))
        return out
    finally:
        textpage.close()


def _cells(textpage: Any, raw: Any, line: str, start: int, size: float) -> list[str]:
    """The line's cells: split at generated spaces over a gap wider than CELL_GAP font sizes.
    PDFium covers a line whose glyphs run on with one rectangle; only a line of several
    (separate text runs: cells, or a font change) has its spaces looked at."""
    if raw.FPDFText_CountRects(textpage, start, len(line)) <= 1:
        return [line.strip()]
    cuts = []
    pos = line.find(" ")
    while pos > 0:
        idx = start + pos
        if raw.FPDFText_IsGenerated(textpage, idx) == 1 and pos + 1 < len(line) and line[pos + 1] != " ":
            gap = textpage.get_charbox(idx + 1)[0] - textpage.get_charbox(idx - 1)[2]
            if gap > CELL_GAP * size:
                cuts.append(pos)
        pos = line.find(" ", pos + 1)
    if not cuts:
        return [line.strip()]
    bounds = [-1, *cuts, len(line)]
    return [c for c in (line[a + 1:b].strip() for a, b in zip(bounds, bounds[1:], strict=False)) if c]


def _has_image(page: Any, raw: Any) -> bool:
    return next(iter(page.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE])), None) is not None


def read_pdf(doc_id: str, data: bytes) -> ParsedDoc:
    """Text of every page with headings as Markdown, page offsets, and warnings for scanned pages."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as raw

    pdf = _open(doc_id, data)
    pages: list[list[Line]] = []
    scanned: list[int] = []
    try:
        n_pages = len(pdf)
        meta_title = (pdf.get_metadata_dict().get("Title") or "").strip()
        for i in range(n_pages):
            try:
                page = pdf[i]
            except pdfium.PdfiumError as exc:
                raise ParseError("corrupt", f"{doc_id}: page {i + 1} of {n_pages} cannot be read: {exc} "
                                            "Re-export or repair the file") from exc
            try:
                lines = _page_lines(page, raw)
                if not lines and _has_image(page, raw):
                    scanned.append(i + 1)
            finally:
                page.close()
            pages.append(lines)
    finally:
        pdf.close()
    if not any(pages):
        if scanned:
            which = "its only page is an image" if n_pages == 1 else f"all {n_pages} pages are images"
            raise ParseError("no_text_layer", f"{doc_id}: no text layer: run OCR first ({which}, e.g. a scan; "
                                              "ocrmypdf adds the text layer)")
        raise ParseError("empty", f"{doc_id} has no text ({n_pages} blank pages); nothing to index")
    text, starts, headings = _markdown(pages)
    title = meta_title or next((h for lvl, h in headings if lvl == 1), None) or \
        (headings[0][1] if headings else stem_title(doc_id))
    warnings = ()
    if scanned:
        which = f"page {scanned[0]} of {n_pages} has" if len(scanned) == 1 else \
            f"pages {_fmt_pages(scanned)} of {n_pages} have"
        warnings = (f"{which} no text layer (images only), not indexed: run OCR on the file to index it",)
        log.warning("%s: %s", doc_id, warnings[0])
    return ParsedDoc(doc_id=doc_id, title=normalise(title), text=text, fmt="pdf", metadata={"page_count": n_pages},
                     page_starts=starts, warnings=warnings)


def _markdown(pages: list[list[Line]]) -> tuple[str, tuple[int, ...], list[tuple[int, str]]]:
    """Join pages into Markdown; returns the text, each page's start offset and the headings."""
    weights: Counter[float] = Counter()
    for lines in pages:
        for cells, size in lines:
            weights[size] += sum(map(len, cells))
    body = weights.most_common(1)[0][0] if weights else 0.0
    big = sorted({s for lines in pages for c, s in lines if len(c) == 1 and _is_heading(c[0], s, body)}, reverse=True)
    level = {s: min(i + 1, MAX_LEVELS) for i, s in enumerate(big)}
    parts: list[str] = []
    starts: list[int] = []
    headings: list[tuple[int, str]] = []
    length = 0
    for lines in pages:
        out: list[str] = []
        prev_size = None
        for i, (cells, size) in enumerate(lines):
            line = " ".join(cells)
            if len(cells) > 1 and _in_table(lines, i):
                if out and not out[-1].startswith("|"):
                    out.append("")
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
                if not _in_table(lines, i - 1):  # the first row is the header row
                    out.append("|" + " --- |" * len(cells))
                if not _in_table(lines, i + 1):
                    out.append("")
                prev_size = None
            elif _is_heading(line, size, body) and len(cells) == 1:
                if prev_size == size and out and out[-1].startswith("#"):  # a heading wrapped over two lines
                    out[-1] += " " + line
                    headings[-1] = (headings[-1][0], headings[-1][1] + " " + line)
                else:
                    out.extend(["", "#" * level[size] + " " + line, ""])
                    headings.append((level[size], line))
                prev_size = size
            else:
                out.append(line)
                prev_size = None
        page_text = normalise(re.sub(r"\n{3,}", "\n\n", "\n".join(out)))
        if parts and page_text:
            length += 2  # the blank line between pages
        starts.append(length)
        if page_text:
            parts.append(page_text)
            length += len(page_text)
    return "\n\n".join(parts), tuple(starts), headings


def _in_table(lines: list[Line], i: int) -> bool:
    """Line i is a row of a table: it has cells, and so has a neighbour with as many."""
    if not 0 <= i < len(lines) or len(lines[i][0]) < 2:
        return False
    n = len(lines[i][0])
    return any(0 <= j < len(lines) and len(lines[j][0]) == n for j in (i - 1, i + 1))


def _is_heading(line: str, size: float, body: float) -> bool:
    return (body > 0 and size >= body * HEADING_RATIO and len(line) <= MAX_HEADING_CHARS
            and any(c.isalpha() for c in line))
