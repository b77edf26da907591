"""Turn raw bytes or records into (title, Markdown-ish text): one small reader per format behind
one interface, :func:`parse_file`.

Text formats (Markdown, text, reStructuredText, HTML) are strict UTF-8 and live in
:mod:`ragops.parsing.text`; binary formats have a reader each that wraps its extraction library
(:mod:`ragops.parsing.pdf`, :mod:`ragops.parsing.word`), imported only when such a file is read.
Headings survive as Markdown headings whatever the format, so the chunker keeps them as context.
Bidi override and isolate controls are removed from every format ("Trojan Source" reordering);
other control characters are left for the quality suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ragops.parsing.base import BIDI_RE, BOMS, DROP_TAGS, ParsedDoc, ParseError, decode, normalise, stem_title
from ragops.parsing.text import (
    BLOCK_TAGS,
    HTML_ELEMENTS,
    PARSERS,
    RST_UNDERLINE,
    parse_html,
    parse_markdown,
    parse_rst,
    parse_text,
    strip_markdown_html,
)

__all__ = ["BIDI_RE", "BINARY_FORMATS", "BLOCK_TAGS", "BOMS", "DROP_TAGS", "HTML_ELEMENTS", "PARSERS", "READERS",
           "RST_UNDERLINE", "ParseError", "ParsedDoc", "decode", "normalise", "parse_file", "parse_html",
           "parse_markdown", "parse_record", "parse_rst", "parse_text", "stem_title", "strip_markdown_html"]


def _read_pdf(doc_id: str, data: bytes) -> ParsedDoc:
    from ragops.parsing.pdf import read_pdf

    return read_pdf(doc_id, data)


def _read_docx(doc_id: str, data: bytes) -> ParsedDoc:
    from ragops.parsing.word import read_docx

    return read_docx(doc_id, data)


# formats read from bytes by an extraction library (the others are decoded as UTF-8 text)
READERS: dict[str, Callable[[str, bytes], ParsedDoc]] = {"pdf": _read_pdf, "docx": _read_docx}
BINARY_FORMATS = frozenset(READERS)


def parse_file(doc_id: str, data: bytes, fmt: str) -> ParsedDoc:
    """The one entry point: bytes of a file of format ``fmt`` -> a ParsedDoc, or ParseError."""
    if fmt in READERS:
        if not data.strip():
            raise ParseError("empty", f"{doc_id} is empty; remove it or add content")
        return READERS[fmt](doc_id, data)
    text = decode(data, doc_id)
    title, body = PARSERS.get(fmt, parse_text)(text, doc_id)
    if not body.strip():
        raise ParseError("empty", f"{doc_id} has no text after parsing ({fmt}); nothing to index")
    return ParsedDoc(doc_id=doc_id, title=title, text=body, fmt=fmt, metadata={})


def parse_record(doc_id: str, record: dict[str, Any]) -> ParsedDoc:
    text = normalise(record["text"])
    title = normalise(record.get("title") or "") or doc_id
    return ParsedDoc(doc_id=doc_id, title=title, text=text, fmt="record", metadata=dict(record.get("metadata") or {}))
