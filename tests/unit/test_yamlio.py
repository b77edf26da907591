"""The shared YAML loader: line marks, duplicate keys, nesting and alias limits, bad bytes."""

from __future__ import annotations

import pytest

from ragops.errors import ConfigError, brief
from ragops.yamlio import YamlDoc, dotted, load_yaml

TEXT = """\
# a comment
quality:
  min_chars: 10
  max_chars: lots
alerts:
  recipients:
    default: [a@x.org, b@x.org]
template: |-
  line one
  Question: {question.__class__}
"""


def test_plain_data_and_the_line_of_every_key() -> None:
    doc = load_yaml(TEXT.encode(), "s.yaml", ConfigError)
    assert doc.data["quality"] == {"min_chars": 10, "max_chars": "lots"}
    assert type(doc.data) is dict and type(doc.data["alerts"]["recipients"]["default"]) is list
    assert doc.line("quality") == 2 and doc.line("quality", "max_chars") == 4
    assert doc.line("alerts", "recipients", "default") == 7 and doc.line("alerts", "recipients", "default", 1) == 7
    assert doc.at("quality", "max_chars") == "s.yaml:4"


def test_a_missing_key_falls_back_to_its_parent_and_the_root_has_no_line() -> None:
    doc = load_yaml(TEXT, "s.yaml", ConfigError)
    assert doc.line("quality", "not_there") == 2
    assert doc.line("nowhere") is None and doc.at("nowhere") == "s.yaml"


def test_a_needle_finds_its_line_inside_a_block_scalar() -> None:
    doc = load_yaml(TEXT, "s.yaml", ConfigError)
    assert doc.line("template") == 8
    assert doc.line("template", needle="{question.") == 10
    assert doc.line("template", needle="{absent") == 8


def test_empty_document() -> None:
    assert load_yaml(b"# nothing\n", "e.yaml", ConfigError) == YamlDoc(None, "e.yaml", "# nothing\n")


@pytest.mark.parametrize(("text", "line", "needles"), [
    ("a:\n  b: 1\n  b: 2\n", 3, ["duplicate key 'b'", "first on line 2"]),
    ("a: 1\nb: {c: 1, c: 2}\n", 2, ["duplicate key 'c'"]),
    ("a: [" * 1 + "[" * 100 + "]" * 101 + "\n", 1, ["nested more than 64 levels"]),
    ("a:\n  b: x\x00y\n", 2, ["control character 0x0000"]),
    ("a: [1,\n", 2, ["invalid YAML"]),
])
def test_bad_files_name_the_file_and_the_line(text: str, line: int, needles: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_yaml(text.encode(), "bad.yaml", ConfigError)
    msg = str(err.value)
    assert msg.startswith(f"bad.yaml:{line}:"), msg
    for needle in needles:
        assert needle in msg, msg


def test_invalid_utf8_names_line_and_column() -> None:
    with pytest.raises(ConfigError, match=r"^bad.yaml:3: not valid UTF-8 \(byte 0xe9 at column 6\)"):
        load_yaml(b"a: 1\nb: 2\nc: ca\xe9\n", "bad.yaml", ConfigError)


def test_merge_keys_are_not_duplicates() -> None:
    doc = load_yaml("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "m.yaml", ConfigError)
    assert doc.data["use"] == {"x": 1, "y": 3}


def test_an_alias_bomb_is_refused_at_the_key_that_explodes() -> None:
    levels = ["&a0 [" + ", ".join(["lol"] * 10) + "]"]
    levels += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 6)]
    with pytest.raises(ConfigError) as err:
        load_yaml(f"ok: 1\nouter:\n  bomb: [{', '.join(levels)}]\n", "b.yaml", ConfigError)
    msg = str(err.value)
    assert msg.startswith("b.yaml:3: outer.bomb: aliases expand to more than 100,000 values") and len(msg) < 300


def test_a_few_aliases_are_fine_and_marks_do_not_follow_them() -> None:
    doc = load_yaml("a: &x {k: 1}\nb: *x\n", "a.yaml", ConfigError)
    assert doc.data == {"a": {"k": 1}, "b": {"k": 1}}
    assert doc.line("a", "k") == 1 and doc.line("b", "k") == 2  # the alias: its key's line


def test_a_huge_integer_is_an_error_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_yaml("n: " + "9" * 5000 + "\n", "n.yaml", ConfigError)


def test_dotted_and_brief() -> None:
    assert dotted(("alerts", "recipients", "default", 2)) == "alerts.recipients.default[2]"
    assert brief("x" * 10_000).startswith("'xxx") and len(brief("x" * 10_000)) <= 80
    assert len(brief([list(range(1000))] * 1000)) <= 80
    assert brief(10 ** 5000) == "<int too large to show>"
    assert brief("0.8.1") == "'0.8.1'"
