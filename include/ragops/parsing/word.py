"""Word (.docx) reader: python-docx, wrapped here and nowhere else.

Paragraphs and tables are read in document order. Paragraph styles carry the structure:
"Title" and "Heading N" become Markdown headings (``#`` to ``######``), list styles become
``-`` items, and a table becomes a Markdown table, one line per row, so rows stay rows in a
chunk. An encrypted .docx is not a zip file but an OLE container, recognised by its signature.
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from ragops.parsing.base import ParsedDoc, ParseError, normalise, stem_title

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # encrypted OOXML and legacy .doc
HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)


def _open(doc_id: str, data: bytes) -> Any:
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from lxml.etree import LxmlError

    if data[:8] == OLE_MAGIC:
        raise ParseError("encrypted", f"{doc_id} is password-protected (or a legacy .doc saved as .docx): "
                                      "export an unprotected copy as .docx")
    try:
        return docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, LxmlError, OSError) as exc:
        raise ParseError("corrupt", f"{doc_id} is not a readable Word file: {exc.__class__.__name__}: {exc}. "
                                    "Re-save it from Word as .docx, or remove it") from exc


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(table: Any) -> list[str]:
    rows = []
    for row in table.rows:
        cells, last = [], None
        for cell in row.cells:
            if cell._tc is last:  # noqa: SLF001 - a merged cell repeats; keep it once
                continue
            last = cell._tc  # noqa: SLF001
            cells.append(_cell(cell.text))
        if any(cells):
            rows.append("| " + " | ".join(cells) + " |")
    if rows:
        width = rows[0].count(" | ") + 1
        rows.insert(1, "|" + " --- |" * width)
    return rows


def read_docx(doc_id: str, data: bytes) -> ParsedDoc:
    """Markdown of a .docx: headings from paragraph styles, lists, tables as Markdown tables."""
    from docx.table import Table

    document = _open(doc_id, data)
    # style id -> name once: Paragraph.style looks the style up in the styles part on every call
    names = {st.style_id: st.name or "" for st in document.styles}
    default = next((st.name for st in document.styles if getattr(st, "type", None) == 1 and
                    st.element.get("{http://schemas.openxmlformats.org/wordprocessingml/2006/main}default") == "1"),
                   "Normal")
    out: list[str] = []
    first_heading = None
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            out.extend(["", *_table(block), ""])
            continue
        text = " ".join(block.text.split())
        if not text:
            continue
        style_id = block._p.style  # noqa: SLF001 - the w:pStyle value, None for the default style
        style = names.get(style_id, "") if style_id else default
        m = HEADING_STYLE.match(style)
        level = 1 if style.lower() == "title" else int(m.group(1)) if m else 0
        if level:
            out.extend(["", "#" * min(level, 6) + " " + text, ""])
            first_heading = first_heading or text
        elif style.lower().startswith("list"):
            out.append("- " + text)
        else:
            out.extend([text, ""])
    body = normalise(re.sub(r"\n{3,}", "\n\n", "\n".join(out)))
    if not body:
        raise ParseError("empty", f"{doc_id} has no text; nothing to index")
    title = (document.core_properties.title or "").strip() or first_heading or stem_title(doc_id)
    return ParsedDoc(doc_id=doc_id, title=normalise(title), text=body, fmt="docx", metadata={})
