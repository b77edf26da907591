from __future__ import annotations

import pytest

from ragops.parsing import ParseError, parse_file


def test_html_drops_scripts_styles_and_keeps_headings() -> None:
    html = (b"<html><head><title>T</title><style>.x{}</style><script>var secret=1</script></head>"
            b"<body onload='evil()'><h1>Main</h1><p>Hello <b>world</b></p><h2>Sub</h2><ul><li>one</li></ul>"
            b"<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table></body></html>")
    d = parse_file("x.html", html, "html")
    assert d.title == "T"
    assert "# Main" in d.text and "## Sub" in d.text and "- one" in d.text and "a | 1" in d.text
    assert "secret" not in d.text and ".x" not in d.text and "evil" not in d.text


def test_markdown_title_and_text() -> None:
    d = parse_file("guide.md", b"intro\n\n# The Guide\n\nbody\r\n", "md")
    assert d.title == "The Guide" and "\r" not in d.text


def test_rst_sections_become_markdown_headings() -> None:
    rst = "Title\n=====\n\nIntro.\n\nSection\n-------\n\nText.\n"
    d = parse_file("a.rst", rst.encode(), "rst")
    assert d.title == "Title"
    assert "# Title" in d.text and "## Section" in d.text


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"), (b"   \n\n", "empty"), (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "binary"),
    ("caf\u00e9".encode("latin-1") + b" menu", "invalid_utf8"),
    (b"<html><script>only()</script></html>", "empty"),
])
def test_unusable_files_raise_with_reason(data: bytes, reason: str) -> None:
    fmt = "html" if data.startswith(b"<html") else "txt"
    with pytest.raises(ParseError) as err:
        parse_file("f", data, fmt)
    assert err.value.reason == reason
    assert "f" in err.value.detail


@pytest.mark.parametrize(("md", "title"), [
    (b"#\n\nIntro paragraph here\n", "Readme"),  # an empty heading is no title, the next line is not one
    (b"#   \n## Real\n\ntext\n", "Readme"),
    (b"# Closed heading ##\n\ntext\n", "Closed heading"),
    (b"#\tTabbed title\n\ntext\n", "Tabbed title"),
])
def test_markdown_title_never_spans_lines(md: bytes, title: str) -> None:
    assert parse_file("readme.md", md, "md").title == title


def test_markdown_raw_html_is_stripped_but_code_and_placeholders_are_kept() -> None:
    md = (b"# Doc\n\nSee <project>/include and <b onclick=\"x()\">bold</b> text.\n\n"
          b"<script>alert(1)</script>\n\nInline `<script>shown()</script>` code.\n\n"
          b"```html\n<img src=x onerror=alert(2)>\n```\n\n[link](javascript:alert(3)) end.\n")
    text = parse_file("doc.md", md, "md").text
    assert "<project>/include" in text and "bold" in text and "onclick" not in text
    assert "alert(1)" not in text and "javascript:" not in text and "link" in text
    assert "`<script>shown()</script>`" in text  # a code span is shown as text
    assert "<img src=x onerror=alert(2)>" in text  # so is fenced code


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_are_an_encoding_problem_with_the_fix(encoding: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_file("notes.txt", ("Plain notes in the wrong encoding. " * 4).encode(encoding), "txt")
    assert err.value.reason == "invalid_utf8"
    assert "re-encode" in err.value.detail and "iconv" in err.value.detail and "notes.txt" in err.value.detail
