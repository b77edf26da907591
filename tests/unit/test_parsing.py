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
