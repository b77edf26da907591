"""Token-aware, Markdown-header-aware chunking with langchain-text-splitters.

Sizes are measured in the embedding model's own word pieces. The text that gets embedded is
``<title > heading path>`` + blank line + body, and it never exceeds the model's maximum
sequence length: all-MiniLM-L6-v2 silently truncates after 256 word pieces, so a piece that
would be longer is split again on token boundaries instead of losing its tail.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ragops.config import ChunkingSettings, settings_fingerprint
from ragops.parsing import ParsedDoc

log = logging.getLogger(__name__)
HEADER_FORMATS = {"md", "rst", "html", "pdf", "docx"}
MAX_CONTEXT_TOKENS = 64
# Every whitespace character but the newline and the plain space (tab, no-break, ideographic, em
# and other Unicode spaces, vertical tab, line and paragraph separators...). The Markdown header
# splitter deletes non-printable characters, which glues the words such a space separates.
ODD_SPACE_RE = re.compile(r"[^\S\n ]")
# The recursive splitter's separators, coarsest first. No "" (cut anywhere): its pieces are
# measured one character at a time, so a run without separators was cut every ``size``
# characters however few word pieces it has; such a run is cut on token boundaries instead.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " "]


@dataclass(frozen=True)
class ChunkPiece:
    position: int
    text: str  # what is embedded: context line + body
    body: str
    context: str
    headings: str
    n_tokens: int
    meta: dict[str, Any] = field(default_factory=dict)


def chunk_id(source_id: str, doc_id: str, position: int, text: str, fingerprint: str) -> str:
    """Stable id: document identity + position + hash(text, chunker and model settings)."""
    doc_key = hashlib.sha256(f"{source_id}\0{doc_id}".encode()).hexdigest()[:16]
    content = hashlib.sha256(f"{fingerprint}\0{text}".encode()).hexdigest()[:16]
    return f"{doc_key}-{position:05d}-{content}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Chunker:
    """Splits parsed documents into chunks that fit the embedding model."""

    def __init__(self, settings: ChunkingSettings, tokenizer: Any, max_tokens: int, model_fingerprint: str) -> None:
        if max_tokens < 32:
            raise ValueError(f"max_tokens must be at least 32, got {max_tokens}")
        self.settings = settings
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.fingerprint = settings_fingerprint(
            "chunker-v1", settings.chunk_tokens, settings.overlap_tokens, list(settings.markdown_headers),
            max_tokens, model_fingerprint,
        )
        self._splitters: dict[int, Any] = {}

    def count(self, text: str) -> int:
        # verbose=False: counting a whole section longer than the model takes is intended, not
        # the "sequence length is longer than the specified maximum" mistake transformers warns of
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    @cached_property
    def _header_splitter(self) -> Any:
        from langchain_text_splitters import MarkdownHeaderTextSplitter

        heads = [(h, f"h{len(h)}") for h in self.settings.markdown_headers]
        return MarkdownHeaderTextSplitter(headers_to_split_on=heads, strip_headers=True)

    def _splitter(self, size: int) -> Any:
        if size not in self._splitters:
            from langchain_text_splitters import RecursiveCharacterTextSplitter

            overlap = min(self.settings.overlap_tokens, max(size // 4, 0))
            self._splitters[size] = RecursiveCharacterTextSplitter(
                chunk_size=size, chunk_overlap=overlap, length_function=self.count,
                separators=SEPARATORS, keep_separator="end",
            )
        return self._splitters[size]

    def sections(self, doc: ParsedDoc) -> list[tuple[str, str]]:
        """(heading path, section text) pairs; one section for formats without headings.

        The header splitter drops every non-printable character, so whitespace other than
        newlines becomes a plain space first: a tab or an ideographic space between two words
        must keep them two words. Zero-width joiners and other format characters are still
        dropped: they sit inside a word, never between two, and the model's tokenizer ignores
        them anyway.
        """
        if doc.fmt not in HEADER_FORMATS:
            return [("", doc.text)]
        out = []
        for part in self._header_splitter.split_text(ODD_SPACE_RE.sub(" ", doc.text)):
            heads = [part.metadata[k] for k in sorted(part.metadata) if k.startswith("h")]
            if heads and heads[0] == doc.title:
                heads = heads[1:]  # the title is already the first element of the context
            out.append((" > ".join(heads), part.page_content))
        return out or [("", doc.text)]

    def _context(self, title: str, headings: str) -> str:
        ctx = " > ".join(p for p in (title.strip(), headings) if p)
        ids = self.tokenizer(ctx, add_special_tokens=False, return_offsets_mapping=True)
        if len(ids["input_ids"]) > MAX_CONTEXT_TOKENS:  # context is a hint, the body is never cut
            ctx = ctx[: ids["offset_mapping"][MAX_CONTEXT_TOKENS - 1][1]] + "…"
        return ctx

    def hard_split(self, body: str, budget: int) -> list[str]:
        """Cut on token boundaries into pieces of at most ``budget`` tokens; no character lost.

        A piece that starts inside a word is tokenized afresh and may need more word pieces
        than it had in place, so every piece is counted again and shortened until it fits.
        """
        enc = self.tokenizer(body, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = enc["offset_mapping"]
        if len(offsets) <= budget:
            return [body]
        # cut points: the start of every token but the first, so text between tokens stays
        cuts = [0] + [start for start, _ in offsets[1:]] + [len(body)]
        pieces: list[str] = []
        start_tok = 0
        while start_tok < len(offsets):
            end_tok = min(start_tok + budget, len(offsets))
            piece = body[cuts[start_tok]:cuts[end_tok]].strip()
            excess = self.count(piece) - budget
            while excess > 0 and end_tok - start_tok > 1:
                end_tok = max(end_tok - excess, start_tok + 1)
                piece = body[cuts[start_tok]:cuts[end_tok]].strip()
                excess = self.count(piece) - budget
            pieces.extend([piece] if excess <= 0 else self._cut_chars(piece, budget))
            start_tok = end_tok
        return [p for p in pieces if p]

    def _cut_chars(self, text: str, budget: int) -> list[str]:
        """Last resort for one token whose text alone needs more than ``budget`` word pieces:
        the longest prefixes that fit, at least one character each."""
        pieces: list[str] = []
        while text:
            end = len(text)
            while end > 1 and self.count(text[:end]) > budget:
                end -= 1
            pieces.append(text[:end].strip())
            text = text[end:].strip()
        return pieces

    def split(self, doc: ParsedDoc) -> list[ChunkPiece]:
        pieces: list[ChunkPiece] = []
        for headings, section in self.sections(doc):
            context = self._context(doc.title, headings)
            ctx_tokens = self.count(context) + 1 if context else 0
            budget = max(self.max_tokens - ctx_tokens, 16)
            size = min(self.settings.chunk_tokens, budget)
            for body in self._bodies(section, size):
                for part in self._fit(context, body, budget):
                    text = f"{context}\n\n{part}" if context else part
                    pieces.append(ChunkPiece(
                        position=len(pieces), text=text, body=part, context=context, headings=headings,
                        n_tokens=self.count(text),
                    ))
        return _with_pages(doc, pieces) if doc.page_starts else pieces

    def _bodies(self, section: str, size: int) -> list[str]:
        """Stripped, non-empty pieces of ``section`` of at most ``size`` tokens: the section
        itself when it fits, else the recursive splitter's pieces, and a run without any
        separator that is still too long cut on token boundaries."""
        section = section.strip()
        if not section:
            return []
        if self.count(section) <= size:
            return [section]
        out: list[str] = []
        for body in self._splitter(size).split_text(section):
            body = body.strip()
            if body:
                out.extend(self.hard_split(body, size) if self.count(body) > size else [body])
        return out

    def _fit(self, context: str, body: str, budget: int) -> list[str]:
        """Pieces of ``body`` whose embedded text fits the model; re-split with a smaller budget
        where word pieces at a cut merge differently."""
        def full(part: str) -> str:
            return f"{context}\n\n{part}" if context else part

        if self.count(full(body)) <= self.max_tokens:
            return [body]
        out: list[str] = []
        for part in self.hard_split(body, budget):
            if self.count(full(part)) <= self.max_tokens:
                out.append(part)
            else:
                out.extend(self._fit(context, part, max(budget - 8, 8)))
        return out


def _squash(text: str) -> str:
    """Text as the header splitter leaves it, whitespace collapsed: what a chunk body and the
    document it came from have in common, however lines were re-joined."""
    return " ".join("".join(c for c in text if c.isprintable() or c.isspace()).split())


def _with_pages(doc: ParsedDoc, pieces: list[ChunkPiece]) -> list[ChunkPiece]:
    """Record in each piece's meta the page (``page``: the first, an int) and page range
    (``pages``: "3" or "3-4") its body comes from, by finding the body in the document text.

    Bodies follow the text in order: each search starts where the body must begin, inside the
    previous body when the two overlap, else after it (so repeated boilerplate is not matched at
    its first occurrence). A body that cannot be found (never expected) gets no page rather than
    a wrong one."""
    bounds = [*doc.page_starts, len(doc.text)]
    parts, starts, total = [], [], 0
    for i in range(len(doc.page_starts)):
        part = _squash(doc.text[bounds[i]:bounds[i + 1]])
        starts.append(total)
        if part:
            parts.append(part)
            total += len(part) + 1
    norm = " ".join(parts)
    out, cursor, prev, prev_start = [], 0, "", 0
    for p in pieces:
        body = _squash(p.body)
        head = body[:80]
        if prev:
            overlap = prev.rfind(head, 1)
            cursor = prev_start + overlap if overlap > 0 else max(prev_start + len(prev) - 2, prev_start + 1)
        pos = norm.find(head, cursor)
        if pos < 0:
            pos = norm.find(head)
        if not body or pos < 0:
            log.warning("%s: chunk %d not found in the document text; it gets no page number", doc.doc_id, p.position)
            out.append(p)
            continue
        tail = body[-80:]
        end = norm.find(tail, max(pos, pos + len(body) - len(tail) - 8))
        last = end + len(tail) - 1 if end >= 0 else min(pos + len(body) - 1, len(norm) - 1)
        first_page = bisect.bisect_right(starts, pos)
        last_page = max(bisect.bisect_right(starts, last), first_page)
        prev, prev_start = body, pos
        pages = str(first_page) if last_page == first_page else f"{first_page}-{last_page}"
        out.append(dataclasses.replace(p, meta={**p.meta, "page": first_page, "pages": pages}))
    return out
