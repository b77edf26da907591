"""Turn raw bytes or records into (title, Markdown-ish text).

Headings survive parsing as Markdown headings (``#``, ``##``...) whatever the input format,
so the chunker can keep them as context. HTML loses scripts, styles and markup, keeps text.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "canvas", "object", "embed", "head")


class ParseError(Exception):
    """A document that cannot be parsed; ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParsedDoc:
    doc_id: str
    title: str
    text: str
    fmt: str
    metadata: dict[str, Any]


def decode(data: bytes, name: str) -> str:
    """Strict UTF-8 (BOM tolerated). Binary and invalid UTF-8 are refused with the fix."""
    if not data.strip():
        raise ParseError("empty", f"{name} is empty; remove it or add content")
    if b"\x00" in data[:8192]:
        raise ParseError("binary", f"{name} looks binary (NUL bytes); only text formats are indexed")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError("invalid_utf8", f"{name}: invalid UTF-8 at byte {exc.start}; re-encode it as UTF-8 "
                                         "(e.g. iconv -f latin1 -t utf-8)") from exc
    return normalise(text)


def normalise(text: str) -> str:
    """Unix newlines, form feeds as paragraph breaks, no trailing spaces."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n").replace("\u00a0", " ")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def _stem_title(name: str) -> str:
    stem = posixpath.splitext(posixpath.basename(name))[0]
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or name


def parse_markdown(text: str, name: str) -> tuple[str, str]:
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, flags=re.M)
    return (m.group(1).strip() if m else _stem_title(name)), text


def parse_text(text: str, name: str) -> tuple[str, str]:
    first = next((ln.strip() for ln in text.split("\n") if ln.strip()), "")
    return (first if 0 < len(first) <= 100 else _stem_title(name)), text


RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")


def parse_rst(text: str, name: str) -> tuple[str, str]:
    """Section titles (underlined) become Markdown headings in order of first appearance."""
    lines, out, levels = text.split("\n"), [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and RST_UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()):
            ch = nxt.strip()[0]
            if ch not in levels:
                levels.append(ch)
            out.append("#" * min(levels.index(ch) + 1, 6) + " " + line.strip())
            i += 2
            continue
        if RST_UNDERLINE.match(line) and nxt.strip() and i + 2 < len(lines) and RST_UNDERLINE.match(lines[i + 2]):
            i += 1  # overline: the title follows, handled next iteration
            continue
        out.append(line)
        i += 1
    md = "\n".join(out)
    return parse_markdown(md, name)


BLOCK_TAGS = ("p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "blockquote", "pre",
              "ul", "ol", "dl", "dt", "dd", "table", "figure", "figcaption", "form", "address", "body")


def parse_html(text: str, name: str) -> tuple[str, str]:
    """Visible text with headings as Markdown; scripts, styles and event handlers are gone.

    HTML whitespace rules apply (a newline in a paragraph is a space); block elements, list
    items and table rows become lines."""
    from bs4 import BeautifulSoup, NavigableString

    soup = BeautifulSoup(text, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    for tag in soup(list(DROP_TAGS)):
        tag.decompose()
    for node in soup.find_all(string=True):
        if isinstance(node, NavigableString) and not node.find_parent("pre"):
            node.replace_with(re.sub(r"\s+", " ", str(node)))
    for level in range(1, 7):
        for h in soup.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * level} {' '.join(h.get_text(' ').split())}\n\n")
    for tr in soup.find_all("tr"):
        cells = [" ".join(c.get_text(" ").split()) for c in tr.find_all(["td", "th"])]
        tr.replace_with("\n" + " | ".join(cells) + "\n")
    for li in soup.find_all("li"):
        li.insert(0, "\n- ")
        li.append("\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for block in soup.find_all(BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    body = soup.get_text("")
    body = "\n".join(" ".join(ln.split()) if not ln.startswith("    ") else ln.rstrip() for ln in body.split("\n"))
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    if not title:
        m = re.search(r"^#\s+(.+)$", body, flags=re.M)
        title = m.group(1).strip() if m else _stem_title(name)
    return title, body


PARSERS = {"md": parse_markdown, "txt": parse_text, "rst": parse_rst, "html": parse_html}


def parse_file(doc_id: str, data: bytes, fmt: str) -> ParsedDoc:
    text = decode(data, doc_id)
    title, body = PARSERS.get(fmt, parse_text)(text, doc_id)
    if not body.strip():
        raise ParseError("empty", f"{doc_id} has no text after parsing ({fmt}); nothing to index")
    return ParsedDoc(doc_id=doc_id, title=title, text=body, fmt=fmt, metadata={})


def parse_record(doc_id: str, record: dict[str, Any]) -> ParsedDoc:
    text = normalise(record["text"])
    title = normalise(record.get("title") or "") or doc_id
    return ParsedDoc(doc_id=doc_id, title=title, text=text, fmt="record", metadata=dict(record.get("metadata") or {}))
