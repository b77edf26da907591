"""What every reader shares: the parsed document, the parse error, UTF-8 decoding and the
normalisation applied to the text of every format."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

BIDI_RE = re.compile("[\u202a-\u202e\u2066-\u2069]")  # embeddings, overrides, isolates (not LRM/RLM)
# elements whose content is never shown as text: removed with their content, from HTML and Markdown alike
DROP_TAGS = ("script", "style", "noscript", "template", "iframe", "svg", "canvas", "object", "embed", "head")
# byte order marks of the encodings that are not UTF-8 (UTF-32 first: its LE mark starts like UTF-16's)
BOMS = ((b"\x00\x00\xfe\xff", "UTF-32BE"), (b"\xff\xfe\x00\x00", "UTF-32LE"), (b"\xfe\xff", "UTF-16BE"),
        (b"\xff\xfe", "UTF-16LE"))


class ParseError(Exception):
    """A document that cannot be parsed; ``reason`` is the quarantine reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ParsedDoc:
    """A document as text. ``page_starts`` (paged formats: PDF) holds the offset in ``text`` at
    which each page begins, page 1 first, so that chunks can name their pages; ``warnings`` are
    what the reader noticed without refusing the document (pages without text...)."""

    doc_id: str
    title: str
    text: str
    fmt: str
    metadata: dict[str, Any]
    page_starts: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()


def decode(data: bytes, name: str) -> str:
    """Strict UTF-8 (BOM tolerated). Binary and invalid UTF-8 are refused with the fix.

    UTF-16 and UTF-32 are text in the wrong encoding, not binary files, although they are full of
    NUL bytes: their byte order mark (or, without one, the NUL in every other byte of ASCII
    text) is checked first so that the message says how to re-encode them."""
    if not data.strip():
        raise ParseError("empty", f"{name} is empty; remove it or add content")
    encoding = next((enc for bom, enc in BOMS if data.startswith(bom) and _decodes(data[len(bom):], enc)), None)
    if encoding:
        raise ParseError("invalid_utf8", f"{name} is {encoding} text (it starts with a {encoding} byte order mark), "
                                         f"not UTF-8; re-encode it as UTF-8 (e.g. iconv -f {encoding[:6]} -t UTF-8)")
    encoding = _bomless_utf16(data[:8192])
    if encoding:
        raise ParseError("invalid_utf8", f"{name} looks like {encoding} text without a byte order mark (every "
                                         f"other byte is NUL), not UTF-8; re-encode it as UTF-8 "
                                         f"(e.g. iconv -f {encoding} -t UTF-8)")
    if b"\x00" in data[:8192]:
        raise ParseError("binary", f"{name} looks binary (NUL bytes); only text formats are indexed")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError("invalid_utf8", f"{name}: invalid UTF-8 at byte {exc.start}; re-encode it as UTF-8 "
                                         "(e.g. iconv -f latin1 -t utf-8)") from exc
    return normalise(text)


def _decodes(data: bytes, encoding: str) -> bool:
    """A byte order mark followed by bytes that are not that encoding is just binary."""
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _bomless_utf16(head: bytes) -> str | None:
    """UTF-16 of mostly ASCII text: NUL in (nearly) every odd byte (LE) or every even byte (BE)."""
    head = head[:len(head) // 2 * 2]
    if len(head) < 16:
        return None
    even, odd = head[0::2], head[1::2]
    share = len(even) * 0.9
    if odd.count(0) >= share and even.count(0) <= len(even) * 0.1:
        encoding = "UTF-16LE"
    elif even.count(0) >= share and odd.count(0) <= len(odd) * 0.1:
        encoding = "UTF-16BE"
    else:
        return None
    return encoding if _decodes(head, encoding) else None


def normalise(text: str) -> str:
    """Unix newlines, form feeds as paragraph breaks, no trailing spaces, no bidi controls.

    Bidi embedding, override and isolate controls only change the order in which text is shown:
    removed, what is indexed reads as it is stored (a right-to-left override cannot make
    ``user\u202e nimda`` look like ``user admin`` in a chunk, a prompt or a page)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n").replace("\u00a0", " ")
    text = BIDI_RE.sub("", text)
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def stem_title(name: str) -> str:
    """A title from a file name when the document has none: ``ops-guide.pdf`` -> ``Ops guide``."""
    stem = posixpath.splitext(posixpath.basename(name))[0]
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or name
