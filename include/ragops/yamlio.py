"""One YAML loader for the files people edit by hand (settings, prompt versions).

``yaml.safe_load`` is not enough for them: it keeps the last of duplicate keys without a word,
drops the line of every value (so a bad value cannot be pointed at), recurses once per nesting
level (5,000 ``[`` end in RecursionError) and lets a few hundred bytes of anchors and aliases
expand to millions of values. :func:`load_yaml` refuses all of these with the caller's error
type, names the file and the line, and returns plain Python data together with the line of
every key (:class:`YamlDoc`) so that later validation can name the line too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ragops.errors import RagopsError, brief

MAX_DEPTH = 64  # nesting levels; the settings file needs 5
MAX_VALUES = 100_000  # values after alias expansion; the settings file has a few hundred
MERGE_TAG = "tag:yaml.org,2002:merge"

Key = Any  # a mapping key (str, int, bool...) or a list index


@dataclass(frozen=True)
class YamlDoc:
    """Loaded data plus where each value came from, for messages that name the line."""

    data: Any
    path: str
    text: str
    # key path from the root -> (line of the key or list item, value start offset, value end offset)
    marks: dict[tuple[Key, ...], tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def line(self, *keys: Key, needle: str | None = None) -> int | None:
        """The line of ``keys`` (of its nearest ancestor in the file when the key is not there).

        With ``needle``, the line inside that value where ``needle`` first occurs (a placeholder
        on line 4 of a block scalar), falling back to the key's line."""
        for n in range(len(keys), -1, -1):
            mark = self.marks.get(tuple(keys[:n]))
            if mark is None:
                continue
            line, start, end = mark
            if needle and n == len(keys):
                pos = self.text.find(needle, start, end)
                if pos >= 0:
                    return self.text.count("\n", 0, pos) + 1
            return line if n else None  # the root's line says nothing
        return None

    def at(self, *keys: Key, needle: str | None = None) -> str:
        """``<path>:<line>`` (compiler style) or just ``<path>`` when the line is unknown."""
        line = self.line(*keys, needle=needle)
        return f"{self.path}:{line}" if line else self.path


def dotted(keys: tuple[Key, ...]) -> str:
    """``eval.blocklist``, ``alerts.recipients.default[2]``."""
    out = ""
    for k in keys:
        out += f"[{k}]" if isinstance(k, int) and not isinstance(k, bool) else f"{'.' if out else ''}{k}"
    return out


class _DuplicateKeyError(ConstructorError):
    pass


class _Loader(yaml.SafeLoader):
    """SafeLoader with a nesting limit (the composer recurses per level) and duplicate-key refusal."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self._depth = 0
        self._max_depth = max_depth

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self._max_depth:
                raise ComposerError(None, None, f"values are nested more than {self._max_depth} levels deep",
                                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    seen = first.get(key)
                except TypeError:
                    continue  # an unhashable key: the base class names it
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise _DuplicateKeyError(None, None, f"duplicate key {brief(key)} (first on line {seen}); keep one "
                                             "of them: YAML would silently use the last", key_node.start_mark)
                first[key] = line
        return super().construct_mapping(node, deep=deep)


def _sizes(root: Node) -> dict[int, int]:
    """Number of values under each node with aliases expanded (each distinct node counted once)."""
    sizes: dict[int, int] = {}

    def size(node: Node) -> int:
        got = sizes.get(id(node))
        if got is not None:
            return got
        sizes[id(node)] = 1  # a recursive alias (&a [*a]) counts once instead of looping
        if isinstance(node, SequenceNode):
            total = 1 + sum(size(n) for n in node.value)
        elif isinstance(node, MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        sizes[id(node)] = min(total, 10**9)  # capped: the numbers of a bomb grow without bound
        return sizes[id(node)]

    size(root)
    return sizes


def _largest_path(root: Node, sizes: dict[int, int]) -> tuple[tuple[Key, ...], int]:
    """Follow the biggest value down through mappings: the key whose value explodes, and its line."""
    keys: list[Key] = []
    node, line = root, root.start_mark.line + 1
    while isinstance(node, MappingNode) and node.value:
        key_node, node = max(node.value, key=lambda kv: sizes.get(id(kv[1]), 1))
        keys.append(key_node.value if isinstance(key_node, ScalarNode) else "?")
        line = key_node.start_mark.line + 1
    return tuple(keys), line


def _marks(loader: _Loader, root: Node, data: Any, text_len: int) -> dict[tuple[Key, ...], tuple[int, int, int]]:
    """Key path -> (line, start, end) of every value, in document order; a value reached again
    through an alias is not walked again (its keys take the line of the key holding the alias)."""
    marks: dict[tuple[Key, ...], tuple[int, int, int]] = {(): (1, 0, text_len)}
    seen: set[int] = set()
    stack: list[tuple[Node, Any, tuple[Key, ...]]] = [(root, data, ())]
    while stack:
        node, value, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children: list[tuple[Node, Any, tuple[Key, ...]]] = []
        if isinstance(node, MappingNode) and isinstance(value, dict):
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode):
                    continue
                key = loader.construct_object(key_node, deep=True)
                if key not in value:
                    continue
                children.append((value_node, value[key], (*path, key)))
                marks.setdefault((*path, key), (key_node.start_mark.line + 1, value_node.start_mark.index,
                                                value_node.end_mark.index))
        elif isinstance(node, SequenceNode) and isinstance(value, list):
            for i, (item_node, item) in enumerate(zip(node.value, value, strict=False)):
                children.append((item_node, item, (*path, i)))
                marks.setdefault((*path, i), (item_node.start_mark.line + 1, item_node.start_mark.index,
                                              item_node.end_mark.index))
        stack.extend(reversed(children))  # depth first, in document order
    return marks


def load_yaml(data: bytes | str, path: str | Path, error: type[RagopsError], *, max_depth: int = MAX_DEPTH,
              max_values: int = MAX_VALUES) -> YamlDoc:
    """Parse one YAML document; every problem is an ``error`` naming ``path`` and the line."""
    where = str(path)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
            raise error(f"{where}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}); save "
                        "the file as UTF-8") from exc
    else:
        text = data
    try:
        loader = _Loader(text, max_depth)
    except yaml.reader.ReaderError as exc:  # a NUL or another control character, found before parsing
        line = text.count("\n", 0, exc.position) + 1
        raise error(f"{where}:{line}: invalid YAML: control character {exc.character:#06x} is not allowed in "
                    "YAML; remove it") from exc
    loader.name = where  # the marks in PyYAML's own messages name the file
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDoc(None, where, text)
        sizes = _sizes(root)
        if sizes[id(root)] > max_values:
            keys, line = _largest_path(root, sizes)
            raise error(f"{where}:{line}: {dotted(keys) or 'the document'}: aliases expand to more than "
                        f"{max_values:,} values (a YAML alias bomb?); write the values out or use fewer anchors "
                        "and aliases")
        value = loader.construct_document(root)
        return YamlDoc(value, where, text, _marks(loader, root, value, len(text)))
    except _DuplicateKeyError as exc:
        raise error(f"{where}:{exc.problem_mark.line + 1}: {exc.problem}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise error(f"{where}{line}: invalid YAML: {exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"{where}: invalid YAML: {exc}") from exc
    except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4,300 digits
        raise error(f"{where}: a value cannot be read: {exc}") from exc
    finally:
        loader.dispose()
