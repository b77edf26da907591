"""Readers of the text formats: Markdown, plain text, reStructuredText and HTML.

Headings survive parsing as Markdown headings (``#``, ``##``...) whatever the input format,
so the chunker can keep them as context. HTML loses scripts, styles and markup, keeps text; so
does raw HTML inside Markdown (code excepted: there it is text).
"""

from __future__ import annotations

import re

from ragops.parsing.base import DROP_TAGS, stem_title

# Raw HTML in Markdown, as CommonMark defines it (tag, attribute and comment syntax), outside code
_ATTR = r"""\s+[A-Za-z_:][-A-Za-z0-9_.:]*(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+))?"""
_TAG_RE = re.compile(rf"<(?P<close>/)?(?P<name>[A-Za-z][A-Za-z0-9-]*)(?P<attrs>(?:{_ATTR})*)\s*/?>")
# as lenient as a browser for these (``<script/x>`` is a script too)
_DROP_OPEN_RE = re.compile(rf"""<(?P<name>{'|'.join(DROP_TAGS)})(?=[\s/>])(?:[^>"']|"[^"]*"|'[^']*')*?(?P<selfclose>/?)>""",
                           re.I)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\n[ \t]*\n|\Z)", re.S)  # unclosed: to the end of the paragraph
_PARAGRAPH_END_RE = re.compile(r"\n[ \t]*\n|\Z")
_SCRIPT_URL = r"(?:javascript|vbscript)\s*:"
_SCRIPT_LINK_RE = re.compile(rf"(!?)\[((?:[^\[\]\n]|\[[^\[\]\n]*\])*)\]\(\s*<?\s*{_SCRIPT_URL}(?:[^()\n]|\([^()\n]*\))*\)",
                             re.I)
_SCRIPT_AUTOLINK_RE = re.compile(rf"<\s*{_SCRIPT_URL}[^<>\s]*>", re.I)
_SCRIPT_REFDEF_RE = re.compile(rf"^[ ]{{0,3}}\[[^\]\n]+\]:[ \t]*<?{_SCRIPT_URL}.*$", re.I | re.M)
# fenced code blocks and code spans: raw HTML there is shown as text, so it is kept
_CODE_RE = re.compile(r"(?:^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}(?P=fence)[`~]*[ \t]*$|\Z))"
                      r"|(?P<ticks>`+)(?:(?!(?P=ticks))(?!\n[ \t]*\n).)+?(?P=ticks)(?!`)", re.M | re.S)
# bare tags (no attributes) are markup only for real elements: `<project>/include` is a placeholder
HTML_ELEMENTS = frozenset(
    "a abbr address article aside audio b bdi bdo big blink blockquote body br button caption center cite code col "
    "colgroup dd del details dfn dialog div dl dt em fieldset figcaption figure font form frame frameset h1 h2 h3 "
    "h4 h5 h6 hgroup hr html i img ins kbd li marquee nav noembed noframes ol p picture plaintext pre q rp rt ruby "
    "s samp section small span strike strong sub summary sup table tbody td textarea tfoot th thead tr tt u ul "
    "video wbr xmp".split()) | frozenset(DROP_TAGS)


def _strip_raw_html(text: str) -> str:
    """Remove from the raw HTML in a piece of Markdown prose what parse_html removes from HTML:
    elements whose content is not shown (DROP_TAGS, with it), comments, and the markup of tags
    (every tag with attributes, so event handlers and javascript: URLs, and the bare tags of
    HTML elements); the text between tags stays. Links to javascript: and vbscript: URLs keep
    only their text."""
    out, pos = [], 0
    while (m := _DROP_OPEN_RE.search(text, pos)) is not None:
        out.append(text[pos:m.start()])
        end = m.end()
        name = m.group("name").lower()
        if not m.group("selfclose") and name != "embed":  # embed is a void element
            close = re.compile(rf"</{name}\s*>", re.I).search(text, end)
            if close:
                end = close.end()
            elif name in ("script", "style"):  # unclosed: its code runs to the end of the paragraph
                end = _PARAGRAPH_END_RE.search(text, end).start()  # type: ignore[union-attr]
        pos = end
    text = "".join(out) + text[pos:]
    text = _COMMENT_RE.sub(lambda c: "\n\n" if not c.group().endswith("-->") else "", text)

    def tag(m: re.Match[str]) -> str:
        keep = not m.group("attrs") and m.group("name").lower() not in HTML_ELEMENTS
        return m.group() if keep else ""

    text = _TAG_RE.sub(tag, text)
    text = _SCRIPT_LINK_RE.sub(lambda m: m.group(2), text)
    text = _SCRIPT_AUTOLINK_RE.sub("", text)
    return _SCRIPT_REFDEF_RE.sub("", text)


def strip_markdown_html(text: str) -> str:
    """Markdown without dangerous raw HTML (see :func:`_strip_raw_html`); code is left alone.
    Markdown without raw HTML comes back unchanged."""
    if "<" not in text and ":" not in text:
        return text
    out, pos, changed = [], 0, False
    for m in [*_CODE_RE.finditer(text), None]:
        prose = text[pos:m.start() if m else len(text)]
        clean = _strip_raw_html(prose)
        if clean != prose:
            changed = True
            clean = re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", clean))  # what removal left behind
        out.append(clean)
        if m:
            out.append(m.group())
            pos = m.end()
    return "".join(out).strip() if changed else text


def parse_markdown(text: str, name: str) -> tuple[str, str]:
    """Title from the first ``#`` heading; raw HTML loses what parse_html removes from HTML files."""
    text = strip_markdown_html(text)
    # [ \t], not \s: a heading never continues on the next line ("#\n\ntext" has no title)
    m = re.search(r"^#[ \t]+(.*?\S.*?)[ \t]*#*[ \t]*$", text, flags=re.M)
    return (m.group(1).strip() if m else stem_title(name)), text


def parse_text(text: str, name: str) -> tuple[str, str]:
    first = next((ln.strip() for ln in text.split("\n") if ln.strip()), "")
    return (first if 0 < len(first) <= 100 else stem_title(name)), text


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
        m = re.search(r"^#[ \t]+(.*\S.*)$", body, flags=re.M)
        title = m.group(1).strip() if m else stem_title(name)
    return title, body


PARSERS = {"md": parse_markdown, "txt": parse_text, "rst": parse_rst, "html": parse_html}
