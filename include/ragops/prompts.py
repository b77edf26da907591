"""Prompt versions: files under ``<prompts dir>/<name>/v<N>.yaml``, validated when loaded.

Registration, aliases, history and loading a version by reference (``load_prompt``) are
``ragops.registry``, which builds on this module; this module never imports the registry.

A prompt version is everything that decides an answer besides the index: the template and its
declared variables, the model and its parameters, the retrieval parameters (top-k) and the
refusal threshold. Every eval run records the version and the file's content hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragops.config import RETRIEVAL_MODES, Settings
from ragops.errors import PromptError, brief
from ragops.yamlio import YamlDoc, load_yaml

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
FILE_RE = re.compile(r"^v([1-9][0-9]{0,5})\.ya?ml$")
PROVIDERS = ("extractive", "openai")
TOP_KEYS = {"name", "version", "author", "message", "variables", "system", "template", "model", "retrieval",
            "refusal", "created"}


@dataclass(frozen=True)
class ModelSpec:
    provider: str = "extractive"  # extractive (offline, no key) | openai (any OpenAI-compatible endpoint)
    name: str = "extractive"
    params: dict[str, Any] = field(default_factory=dict, hash=False)  # temperature, max_tokens, ...


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    template: str
    variables: tuple[str, ...]
    system: str = ""
    model: ModelSpec = ModelSpec()
    top_k: int = 5
    retrieval_mode: str | None = None  # None = the retrieval.mode setting
    refusal_threshold: float = 0.3
    refusal_message: str = "I don't know: the documentation I can search does not answer this."
    author: str = ""
    message: str = ""
    path: str = ""
    content_hash: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, **values: str) -> str:
        missing = [v for v in self.variables if v not in values]
        if missing:
            raise PromptError(f"prompt {self.ref}: no value for variable(s) {', '.join(missing)}")
        return self.template.format(**{v: values[v] for v in self.variables})

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hash": self.content_hash, "path": self.path,
                "model": {"provider": self.model.provider, "name": self.model.name, **self.model.params},
                "top_k": self.top_k, "retrieval_mode": self.retrieval_mode,
                "refusal_threshold": self.refusal_threshold}


def template_fields(template: str, where: str | Callable[[str | None], str]) -> list[str]:
    """Placeholders of a ``str.format`` template; attribute/index access and format specs are refused.

    ``where`` prefixes the messages; a callable gets the offending placeholder's text, so that the
    message can name the line it is on."""
    def at(needle: str | None) -> str:
        return where(needle) if callable(where) else where

    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise PromptError(f"{at(None)}: template has bad syntax ({exc}); write literal braces as {{{{ and }}}}") from exc
    names: list[str] = []
    for _text, fname, spec, conv in parsed:
        if fname is None:
            continue
        if not fname or not fname.isidentifier():
            shown = fname if len(fname) <= 60 else fname[:57] + "..."
            raise PromptError(f"{at('{' + fname)}: template placeholder {{{shown}}} is not a plain variable name "
                              "(no positional, attribute or index placeholders)")
        if spec or conv:
            raise PromptError(f"{at('{' + fname)}: template placeholder {{{fname}}} has a format spec or conversion; "
                              "use a plain {name}")
        if fname not in names:
            names.append(fname)
    return names


def parse_prompt(raw: Any, path: Path, text_hash: str, doc: YamlDoc | None = None) -> Prompt:
    """Validate a loaded prompt file; with ``doc`` (from :func:`load_prompt_file`) errors name the line."""
    where = str(path)

    def field(*keys: str, needle: str | None = None) -> str:
        """``<path>:<line>: field 'a.b'`` for messages."""
        loc = doc.at(*keys, needle=needle) if doc is not None else where
        return f"{loc}: field '{'.'.join(keys)}'"

    if not isinstance(raw, dict):
        raise PromptError(f"{where}: expected a mapping with name, version, variables, template, model, retrieval")
    unknown = sorted(set(raw) - TOP_KEYS, key=str)
    if unknown:
        loc = doc.at(unknown[0]) if doc is not None else where
        raise PromptError(f"{loc}: unknown field(s) {', '.join(map(str, unknown))}; allowed: "
                          f"{', '.join(sorted(TOP_KEYS))}")
    m = FILE_RE.match(path.name)
    if not m:
        raise PromptError(f"{where}: prompt files are named v<N>.yaml (e.g. v3.yaml)")
    name, version = raw.get("name", path.parent.name), raw.get("version", int(m.group(1)))
    if name != path.parent.name:
        raise PromptError(f"{field('name')} is {brief(name)} but the folder is {path.parent.name!r}; they must match")
    if version != int(m.group(1)):
        raise PromptError(f"{field('version')} is {brief(version)} but the file is v{m.group(1)}; they must match")
    template = raw.get("template")
    if not isinstance(template, str) or not template.strip():
        raise PromptError(f"{field('template')} is missing or empty")
    variables = raw.get("variables")
    if not isinstance(variables, list) or not all(isinstance(v, str) and v.isidentifier() for v in variables):
        raise PromptError(f"{field('variables')} must list the template's variable names, e.g. [question, context]")
    used = template_fields(template, lambda needle: field("template", needle=needle))
    undeclared = [v for v in used if v not in variables]
    if undeclared:
        raise PromptError(f"{field('template', needle='{' + undeclared[0])} uses undeclared variable(s) "
                          f"{', '.join(undeclared)}; add them to 'variables' or remove them from the template")
    unused = [v for v in variables if v not in used]
    if unused:
        raise PromptError(f"{field('variables')} declares {', '.join(unused)} but the template never uses "
                          "them; the template is missing a variable")
    for needed in ("question", "context"):
        if needed not in variables:
            raise PromptError(f"{field('variables')}: a RAG answer prompt must use the variable {{{needed}}}")
    system = raw.get("system") or ""
    if not isinstance(system, str):
        raise PromptError(f"{field('system')} must be a string")
    placeholders = template_fields(system, lambda needle: field("system", needle=needle))
    if placeholders:
        raise PromptError(f"{field('system', needle='{' + placeholders[0])} must not contain placeholders; put "
                          "variables in 'template'")

    model_raw = raw.get("model") or {}
    if not isinstance(model_raw, dict):
        raise PromptError(f"{field('model')} must be a mapping (provider, name, parameters)")
    provider = model_raw.get("provider", "extractive")
    if provider not in PROVIDERS:
        raise PromptError(f"{field('model', 'provider')} must be one of {', '.join(PROVIDERS)}, got {brief(provider)}")
    model_name = model_raw.get("name", "extractive" if provider == "extractive" else None)
    if not isinstance(model_name, str) or not model_name:
        raise PromptError(f"{field('model', 'name')} is required for provider {provider!r}")
    params = {k: v for k, v in model_raw.items() if k not in ("provider", "name")}
    for k, v in params.items():
        if not isinstance(v, (int, float, str, bool)) and v is not None:
            raise PromptError(f"{field('model', str(k))} must be a scalar, got {type(v).__name__}")
    if params.get("sentence_scoring", "lexical") not in ("lexical", "semantic"):
        raise PromptError(f"{field('model', 'sentence_scoring')} must be lexical or semantic")
    if "max_sentences" in params and (not isinstance(params["max_sentences"], int) or params["max_sentences"] < 1):
        raise PromptError(f"{field('model', 'max_sentences')} must be a positive integer")

    retrieval = raw.get("retrieval") or {}
    if not isinstance(retrieval, dict) or set(retrieval) - {"top_k", "mode"}:
        raise PromptError(f"{field('retrieval')} takes top_k and mode")
    top_k = retrieval.get("top_k", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
        raise PromptError(f"{field('retrieval', 'top_k')} must be an integer between 1 and 50, got {brief(top_k)}")
    mode = retrieval.get("mode")
    if mode is not None and mode not in RETRIEVAL_MODES:
        raise PromptError(f"{field('retrieval', 'mode')} must be one of {', '.join(RETRIEVAL_MODES)}, "
                          f"got {brief(mode)}")
    refusal = raw.get("refusal") or {}
    if not isinstance(refusal, dict) or set(refusal) - {"threshold", "message"}:
        raise PromptError(f"{field('refusal')} takes threshold and message")
    threshold = refusal.get("threshold", 0.3)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1 <= threshold <= 1:
        raise PromptError(f"{field('refusal', 'threshold')} must be a cosine score in [-1, 1], got {brief(threshold)}")
    defaults = Prompt(name="", version=1, template="", variables=())
    message = refusal.get("message", defaults.refusal_message)
    if not isinstance(message, str) or not message.strip():
        raise PromptError(f"{field('refusal', 'message')} must be a non-empty string")
    return Prompt(name=name, version=version, template=template, variables=tuple(variables), system=system.strip(),
                  model=ModelSpec(provider=provider, name=model_name, params=params), top_k=top_k,
                  retrieval_mode=mode, refusal_threshold=float(threshold), refusal_message=message.strip(),
                  author=str(raw.get("author") or ""), message=str(raw.get("message") or ""),
                  path=str(path), content_hash=text_hash)


def load_prompt_file(path: Path) -> Prompt:
    """Read and validate one prompt version; every error names the file and, where it has one, the line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptError(f"{path}: cannot read prompt file: {exc}") from exc
    doc = load_yaml(data, path, PromptError)
    return parse_prompt(doc.data, path, hashlib.sha256(data).hexdigest(), doc=doc)


def versions(settings: Settings, name: str) -> list[Path]:
    if not NAME_RE.match(name):
        raise PromptError(f"invalid prompt name {name!r}: use a-z, 0-9, '_' and '-'")
    folder = settings.prompts_dir / name
    if not folder.is_dir():
        known = sorted(p.name for p in settings.prompts_dir.glob("*") if p.is_dir()) if settings.prompts_dir.is_dir() \
            else []
        raise PromptError(f"unknown prompt {name!r}: no folder {folder}; known prompts: {', '.join(known) or '(none)'}")
    files = [p for p in folder.iterdir() if FILE_RE.match(p.name)]
    return sorted(files, key=lambda p: int(FILE_RE.match(p.name).group(1)))  # type: ignore[union-attr]


def file_versions(folder: Path) -> dict[int, Path]:
    """The version files of one prompt folder, by version number (empty when the folder is missing)."""
    out: dict[int, Path] = {}
    for p in folder.iterdir() if folder.is_dir() else []:
        m = FILE_RE.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PromptError(f"invalid prompt name {name!r}: use 1-63 characters of a-z, 0-9, '_' and '-', starting "
                          "with a letter or digit (it is the folder name, e.g. support_answer)")
    return name


_TOP_FIELD = r"^{key}:[^\n]*(?:\n[ \t]+[^\n]*)*"  # a top-level field with its indented continuation lines


def new_version_text(source_text: str, source_ref: str, name: str, version: int, author: str) -> str:
    """A copy of a prompt file as ``name`` version ``version``, ready to edit: the header comment
    says where it came from, ``name``/``version``/``author``/``message`` are set, the rest (and its
    comments) is kept as it was."""
    lines = source_text.splitlines()
    while lines and (not lines[0].strip() or lines[0].lstrip().startswith("#")):
        lines.pop(0)  # the source's own header comment speaks of the source
    body = "\n".join(lines) + "\n"
    values = {"name": name, "version": str(version), "author": _yaml_str(author),
              "message": _yaml_str(f"Copied from {source_ref}; say what this version changes.")}
    missing = []
    for key, value in values.items():
        body, n = re.subn(_TOP_FIELD.format(key=key), lambda _m, k=key, v=value: f"{k}: {v}", body, count=1,
                          flags=re.MULTILINE)
        if not n:
            missing.append(f"{key}: {value}")
    header = (f"# Prompt {name}, version {version}: written by `ragops prompts new` from {source_ref}.\n"
              "# Edit it for your documents (system, template, refusal.message, model, retrieval), then\n"
              "# `ragops prompts sync` validates and registers it. A registered version is immutable: a later\n"
              "# change goes into a new version file (`ragops prompts new " + name + "` writes the next one).\n")
    return header + "".join(m + "\n" for m in missing) + body


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)

