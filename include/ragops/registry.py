"""The prompt registry: registered versions, aliases and their history, in the state store.

A prompt version is a file (``<prompts dir>/<name>/v<N>.yaml``, see ``ragops.prompts``). *Sync*
registers every valid file that is not registered yet and records its content hash; from then
on the version is immutable: a file whose content no longer matches is refused wherever it is
loaded (make a new version instead). Aliases (``production``, ``candidate``, any other name)
point at registered versions; every move is a row of the prompt's history with who, when,
why and the evaluation evidence, written in the same transaction as the move.

The first sync of a prompt points ``production`` at its newest version (recorded as
``initial``); later versions wait for ``promote_prompt`` (or ``ragops prompts promote``).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from ragops import state
from ragops.config import Settings
from ragops.errors import PromptError
from ragops.prompts import (
    NAME_RE,
    Prompt,
    check_name,
    file_versions,
    load_prompt_file,
    new_version_text,
    parse_prompt,
)
from ragops.yamlio import load_yaml

log = logging.getLogger(__name__)
PRODUCTION = "production"
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def prompt_names(settings: Settings) -> list[str]:
    """Prompts on disk (folders of the prompts directory)."""
    return _names(settings)


def _names(settings: Settings) -> list[str]:
    root = settings.prompts_dir
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name)) if root.is_dir() else []


def _files(settings: Settings, name: str) -> dict[int, Path]:
    return file_versions(settings.prompts_dir / name)


def sync(settings: Settings, actor: str = "cli", names: list[str] | None = None) -> dict[str, Any]:
    """Register new versions. Edited registered files and invalid new files are refused: the valid
    ones are registered anyway and the refusals are raised together at the end."""
    state.require_schema(settings.state_db_url)
    registered: list[str] = []
    problems: list[str] = []
    for name in names or _names(settings):
        files = _files(settings, name)
        with state.session_scope(settings.state_db_url) as s:
            known = {v.version: v for v in s.execute(select(state.PromptVersion)
                                                     .where(state.PromptVersion.name == name)).scalars()}
            for version, path in files.items():
                try:
                    prompt = load_prompt_file(path)
                except PromptError as exc:
                    problems.append(str(exc) + ("" if version in known else " (not registered)"))
                    continue
                row = known.get(version)
                if row is None:
                    s.add(state.PromptVersion(name=name, version=version, content_hash=prompt.content_hash,
                                              path=str(path), author=prompt.author[:256], message=prompt.message,
                                              registered_by=actor[:128], registered_at=state.utcnow(), announced=0))
                    state.audit(s, actor, "prompt_registered", None, prompt=name, version=version,
                                content_hash=prompt.content_hash)
                    registered.append(f"{name}@{version}")
                    log.info("registered prompt %s@%d (%s)", name, version, prompt.content_hash[:12])
                elif row.content_hash != prompt.content_hash:
                    problems.append(_edited(name, version, path, row.content_hash, prompt.content_hash))
            for version in sorted(set(known) - set(files)):
                problems.append(f"prompt {name}@{version} is registered but its file {known[version].path} is gone; "
                                "restore it (registered versions are kept for audit and rollback)")
            s.flush()
            if s.get(state.PromptAlias, (name, PRODUCTION)) is None:
                newest = s.execute(select(func.max(state.PromptVersion.version))
                                   .where(state.PromptVersion.name == name)).scalar()
                if newest is not None:
                    _move(s, name, PRODUCTION, newest, actor, "initial", "first registration: the newest version",
                          {})
    if problems:
        raise PromptError("prompt registry: " + "; ".join(problems))
    return {"registered": registered}


def _edited(name: str, version: int, path: Path | str, registered: str, now: str) -> str:
    return (f"{path} was edited after {name}@{version} was registered (content hash {registered[:12]} -> {now[:12]}); "
            f"registered versions are immutable: restore the file (e.g. `git checkout -- {path}`) and put the change "
            "in a new version file (the next free v<N>.yaml)")


def _move(s: Any, name: str, alias: str, version: int, actor: str, action: str, reason: str,
          evidence: dict[str, Any]) -> int | None:
    """Point ``alias`` at ``version`` and record it (inside the caller's transaction)."""
    row = s.get(state.PromptAlias, (name, alias))
    before = row.version if row is not None else None
    if row is None:
        s.add(state.PromptAlias(name=name, alias=alias, version=version, updated_by=actor[:128],
                                updated_at=state.utcnow()))
    else:
        row.version, row.updated_by, row.updated_at = version, actor[:128], state.utcnow()
    s.add(state.PromptEvent(name=name, alias=alias, action=action, from_version=before, to_version=version,
                            actor=actor[:128], reason=reason, evidence=_plain(evidence), created_at=state.utcnow()))
    state.audit(s, actor, f"prompt_{action}", None, prompt=name, alias=alias, from_version=before, to_version=version,
                reason=reason)
    _CACHE.clear()
    return before


def _plain(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def _registered(s: Any, name: str, version: int) -> state.PromptVersion:
    row = s.execute(select(state.PromptVersion).where(state.PromptVersion.name == name,
                                                      state.PromptVersion.version == version)).scalar_one_or_none()
    if row is None:
        have = [v for (v,) in s.execute(select(state.PromptVersion.version).where(state.PromptVersion.name == name)
                                        .order_by(state.PromptVersion.version))]
        raise PromptError(f"prompt {name}@{version} is not registered (registered: "
                          f"{', '.join(map(str, have)) or 'none'}); add the file and run `ragops prompts sync`")
    return row


def resolve(settings: Settings, name: str, which: str) -> int:
    """A version number from ``N``/``vN``, an alias, or ``latest`` (newest registered)."""
    if not NAME_RE.match(name):
        raise PromptError(f"invalid prompt name {name!r}: use a-z, 0-9, '_' and '-'")
    m = re.fullmatch(r"v?([0-9]+)", which)
    if m:
        return int(m.group(1))
    with state.session_scope(settings.state_db_url) as s:
        if which == "latest":
            v = s.execute(select(func.max(state.PromptVersion.version))
                          .where(state.PromptVersion.name == name)).scalar()
        else:
            row = s.get(state.PromptAlias, (name, which))
            v = row.version if row is not None else None
        if v is None:
            aliases = sorted(a for (a,) in s.execute(select(state.PromptAlias.alias)
                                                     .where(state.PromptAlias.name == name)))
            raise PromptError(f"prompt {name!r} has no alias {which!r} (aliases: {', '.join(aliases) or 'none'}); "
                              "use a version number, or `ragops prompts sync` to register the prompt")
        return int(v)


def load(settings: Settings, ref: str) -> Prompt:
    """``NAME``, ``NAME@ALIAS``, ``NAME@VERSION`` of a registered version, checked against its hash.
    A prompt with no registered version is registered first (so a new project just works)."""
    name, _, which = ref.partition("@")
    which = which or PRODUCTION
    if not NAME_RE.match(name):
        raise PromptError(f"invalid prompt name {name!r}: use a-z, 0-9, '_' and '-'")
    with state.session_scope(settings.state_db_url) as s:
        any_registered = s.execute(select(state.PromptVersion.id).where(state.PromptVersion.name == name)
                                   .limit(1)).first()
    if not any_registered:
        if not (settings.prompts_dir / name).is_dir():
            known = ", ".join(_names(settings)) or "(none)"
            raise PromptError(f"unknown prompt {name!r}: no folder {settings.prompts_dir / name}; known prompts: "
                              f"{known}")
        sync(settings, "auto", [name])
    version = resolve(settings, name, which)
    with state.session_scope(settings.state_db_url) as s:
        row = _registered(s, name, version)
        expected, path = row.content_hash, Path(row.path)
    files = _files(settings, name)
    path = files.get(version, path)
    if not path.exists():
        raise PromptError(f"prompt {name}@{version} is registered but its file {path} is gone; restore it")
    prompt = load_prompt_file(path)
    if prompt.content_hash != expected:
        raise PromptError(_edited(name, version, path, expected, prompt.content_hash))
    return prompt


def load_prompt(settings: Settings, ref: str) -> Prompt:
    """Load ``NAME@VERSION`` (``rag_answer@2`` or ``@v2``), ``NAME@ALIAS`` (``production``,
    ``candidate``, ..., ``latest`` = newest registered) or ``NAME`` (= production): the version must
    be registered and its file unedited. An application should call :func:`get_prompt`, which caches.

    It lives here, not in ``ragops.prompts``: the registry reads prompt files, never the reverse."""
    return load(settings, ref)


# ----------------------------------------------------------------------------------------------
# new versions to edit


def bundled_prompts_dir() -> Path:
    """The prompts shipped with ragops (``include/prompts``), whatever the settings point at."""
    from ragops.config import project_root

    return project_root() / "include" / "prompts"


def _source_file(settings: Settings, ref: str) -> tuple[str, Path]:
    """``NAME``, ``NAME@N`` or ``NAME@ALIAS`` as (canonical ref, file): looked up in the settings'
    prompts directory, then (numbers and the newest version only) among the bundled prompts."""
    name, _, which = ref.partition("@")
    check_name(name)
    for root in dict.fromkeys((settings.prompts_dir, bundled_prompts_dir())):
        files = file_versions(root / name)
        if not files:
            continue
        if not which:
            version = max(files)
        elif re.fullmatch(r"v?[0-9]+", which):
            version = int(which.lstrip("v"))
        elif root == settings.prompts_dir:
            version = resolve(settings, name, which)  # an alias: the registry knows
        else:
            raise PromptError(f"{ref}: aliases name registered versions of the settings' prompts directory "
                              f"({settings.prompts_dir}); for a bundled prompt give a version, e.g. {name}@{max(files)}")
        if version not in files:
            raise PromptError(f"{ref}: no file v{version}.yaml in {root / name} (versions there: "
                              f"{', '.join(map(str, files))})")
        return f"{name}@{version}", files[version]
    known = sorted(set(_names(settings)) | {p.name for p in bundled_prompts_dir().glob("*") if p.is_dir()})
    raise PromptError(f"unknown prompt {name!r} to copy from: not in {settings.prompts_dir} nor among the bundled "
                      f"prompts; known prompts: {', '.join(known) or '(none)'}")


def new_prompt(settings: Settings, name: str, source: str | None = None, *, version: int | None = None,
               author: str = "") -> dict[str, Any]:
    """Write ``<prompts dir>/<name>/v<N>.yaml``, a copy of ``source`` to edit, and return where.

    ``N`` is 1 for a new prompt, else the next number after every version on disk or registered (a
    registered number is never reused, even when its file is gone). ``source`` defaults to the
    prompt's own newest version, or the bundled ``rag_answer`` for a new prompt. An existing file is
    never overwritten. Nothing is registered: that is ``sync``, after the edit."""
    check_name(name)
    state.require_schema(settings.state_db_url)
    folder = settings.prompts_dir / name
    on_disk = file_versions(folder)
    with state.session_scope(settings.state_db_url) as s:
        registered = set(s.execute(select(state.PromptVersion.version)
                                   .where(state.PromptVersion.name == name)).scalars())
    taken = set(on_disk) | registered
    if version is None:
        version = max(taken, default=0) + 1
    elif version < 1:
        raise PromptError(f"version must be a positive number, got {version}")
    path = folder / f"v{version}.yaml"
    if version in taken:
        what = f"{path} exists" if version in on_disk else f"{name}@{version} is registered (its file is gone)"
        raise PromptError(f"{what}; `ragops prompts new` never overwrites a version (a registered one is immutable): "
                          f"leave out --version to write the next free one, v{max(taken) + 1}")
    if source is None:
        source = name if on_disk else "rag_answer"
    source_ref, source_path = _source_file(settings, source)
    source_prompt = load_prompt_file(source_path)  # a broken source is reported as such, not copied
    text = new_version_text(source_path.read_text(encoding="utf-8"), source_ref, name, version, author)
    parse_prompt(load_yaml(text, path, PromptError).data, path, hashlib.sha256(text.encode()).hexdigest())
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:  # written by someone else since we looked
        raise PromptError(f"{path} exists; `ragops prompts new` never overwrites a version") from None
    log.info("prompt %s: wrote %s from %s", name, path, source_ref)
    return {"name": name, "version": version, "ref": f"{name}@{version}", "path": str(path), "source": source_ref,
            "source_path": str(source_path), "new_prompt": not on_disk and not registered,
            "source_refusal_message": source_prompt.refusal_message}


# ----------------------------------------------------------------------------------------------
# the application's call: cached, so a request does not hit the database


_CACHE: dict[tuple[str, str, str], tuple[float, Prompt]] = {}
_LOCK = threading.Lock()


def get_prompt(name: str, alias: str = PRODUCTION, *, settings: Settings | None = None,
               ttl_seconds: float = 30.0) -> Prompt:
    """The prompt an application should use now (``alias`` or a version), cached ``ttl_seconds``:
    a promotion or rollback reaches every process within that time."""
    from ragops.config import load_settings

    settings = settings or load_settings()
    key = (settings.state_db_url, name, alias)
    now = time.monotonic()
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and now - hit[0] < ttl_seconds:
            return hit[1]
    prompt = load(settings, f"{name}@{alias}")
    with _LOCK:
        _CACHE[key] = (now, prompt)
    return prompt


# ----------------------------------------------------------------------------------------------
# moves


def promote(settings: Settings, name: str, version: int, *, actor: str = "cli", reason: str = "",
            evidence: dict[str, Any] | None = None, alias: str = PRODUCTION) -> dict[str, Any]:
    """Point ``alias`` (default production) at a registered, unedited version; one transaction."""
    if not ALIAS_RE.match(alias) or alias == "latest" or re.fullmatch(r"v?[0-9]+", alias):
        raise PromptError(f"invalid alias {alias!r}: use a-z, 0-9, '_' and '-', not 'latest' and not a version "
                          "number (those always mean a version)")
    load(settings, f"{name}@{version}")  # registered and unedited, or a clear error
    with state.session_scope(settings.state_db_url) as s:
        current = s.get(state.PromptAlias, (name, alias))
        if current is not None and current.version == version:
            raise PromptError(f"{name}@{alias} already points at version {version}")
        before = _move(s, name, alias, version, actor, "promoted" if alias == PRODUCTION else "set",
                       reason or "manual", evidence or {})
    log.info("prompt %s: %s moved from %s to %d by %s", name, alias, before, version, actor)
    return {"name": name, "alias": alias, "from": before, "to": version}


def record_rejection(settings: Settings, name: str, version: int, *, actor: str, reason: str,
                     evidence: dict[str, Any]) -> None:
    """A gate (or a person) said no: recorded in the history; no alias moves."""
    with state.session_scope(settings.state_db_url) as s:
        current = s.get(state.PromptAlias, (name, PRODUCTION))
        s.add(state.PromptEvent(name=name, alias=PRODUCTION, action="rejected",
                                from_version=current.version if current else None, to_version=version,
                                actor=actor[:128], reason=reason, evidence=_plain(evidence),
                                created_at=state.utcnow()))
        state.audit(s, actor, "prompt_rejected", None, prompt=name, version=version, reason=reason)


def rollback(settings: Settings, name: str, *, actor: str = "cli", reason: str = "",
             evidence: dict[str, Any] | None = None, to: int | None = None) -> dict[str, Any]:
    """Move production back to the version it pointed at before its last move (or ``to``)."""
    with state.session_scope(settings.state_db_url) as s:
        current = s.get(state.PromptAlias, (name, PRODUCTION))
        if current is None:
            raise PromptError(f"prompt {name!r} has no production alias; run `ragops prompts sync`")
        if to is None:
            last = s.execute(select(state.PromptEvent).where(
                state.PromptEvent.name == name, state.PromptEvent.alias == PRODUCTION,
                state.PromptEvent.to_version == current.version,
                state.PromptEvent.action.in_(("promoted", "rolled_back", "set")))
                .order_by(state.PromptEvent.id.desc()).limit(1)).scalar_one_or_none()
            if last is None or last.from_version is None:
                raise PromptError(f"{name}@production (v{current.version}) has no earlier version to roll back to; "
                                  "use `ragops prompts promote NAME VERSION`")
            to = last.from_version
        if to == current.version:
            raise PromptError(f"{name}@production already points at version {to}")
    load(settings, f"{name}@{to}")
    with state.session_scope(settings.state_db_url) as s:
        before = _move(s, name, PRODUCTION, to, actor, "rolled_back", reason or "manual rollback", evidence or {})
    log.info("prompt %s: production rolled back from %s to %d by %s", name, before, to, actor)
    return {"name": name, "alias": PRODUCTION, "from": before, "to": to}


# ----------------------------------------------------------------------------------------------
# reading


def history(settings: Settings, name: str) -> list[dict[str, Any]]:
    with state.session_scope(settings.state_db_url) as s:
        return [{"id": e.id, "at": e.created_at.isoformat(), "alias": e.alias, "action": e.action,
                 "from": e.from_version, "to": e.to_version, "actor": e.actor, "reason": e.reason,
                 "evidence": e.evidence} for e in s.execute(select(state.PromptEvent)
                                                            .where(state.PromptEvent.name == name)
                                                            .order_by(state.PromptEvent.id)).scalars()]


def list_prompts(settings: Settings) -> list[dict[str, Any]]:
    """Every prompt on disk or in the registry with its versions, aliases and state."""
    state.require_schema(settings.state_db_url)
    out = []
    with state.session_scope(settings.state_db_url) as s:
        reg_names = {n for (n,) in s.execute(select(state.PromptVersion.name).distinct())}
        for name in sorted(set(_names(settings)) | reg_names):
            rows = {v.version: v for v in s.execute(select(state.PromptVersion)
                                                    .where(state.PromptVersion.name == name)).scalars()}
            aliases = {a.alias: a.version for a in s.execute(select(state.PromptAlias)
                                                             .where(state.PromptAlias.name == name)).scalars()}
            decided = {(e.to_version, e.action) for e in s.execute(select(state.PromptEvent)
                                                                   .where(state.PromptEvent.name == name)).scalars()}
            files = _files(settings, name)
            versions = []
            for v in sorted(set(rows) | set(files)):
                row, path = rows.get(v), files.get(v)
                status = "unregistered"
                if row is not None:
                    status = "registered"
                    if path is None:
                        status = "file missing"
                    elif hashlib.sha256(path.read_bytes()).hexdigest() != row.content_hash:
                        status = "EDITED (refused)"
                    if (v, "rejected") in decided:
                        status += ", rejected"
                versions.append({"version": v, "status": status,
                                 "aliases": sorted(a for a, av in aliases.items() if av == v),
                                 "author": row.author if row else "", "message": row.message if row else "",
                                 "hash": row.content_hash[:12] if row else "",
                                 "registered_at": row.registered_at.isoformat() if row else None})
            out.append({"name": name, "aliases": aliases, "versions": versions})
    return out


def version_texts(settings: Settings, name: str, a: str, b: str) -> tuple[int, int, str, str]:
    """Two versions (numbers or aliases) resolved, with their files' text."""
    va, vb = resolve(settings, name, a), resolve(settings, name, b)
    files = _files(settings, name)
    for v in (va, vb):
        if v not in files:
            raise PromptError(f"prompt {name} has no file for version {v}")
    return va, vb, files[va].read_text(), files[vb].read_text()


def diff(settings: Settings, name: str, a: str, b: str) -> str:
    """Unified diff of two versions' files (versions or aliases)."""
    va, vb, left, right = version_texts(settings, name, a, b)
    return "".join(difflib.unified_diff(left.splitlines(keepends=True), right.splitlines(keepends=True),
                                        fromfile=f"{name}@{va}", tofile=f"{name}@{vb}"))


def pending(settings: Settings, name: str) -> list[int]:
    """Registered versions newer than production that no gate has decided yet (oldest first)."""
    with state.session_scope(settings.state_db_url) as s:
        prod = s.get(state.PromptAlias, (name, PRODUCTION))
        decided = {e.to_version for e in s.execute(select(state.PromptEvent).where(
            state.PromptEvent.name == name, state.PromptEvent.action.in_(("promoted", "rejected", "initial",
                                                                          "rolled_back")))).scalars()}
        return [v for (v,) in s.execute(select(state.PromptVersion.version).where(
            state.PromptVersion.name == name).order_by(state.PromptVersion.version))
            if v not in decided and (prod is None or v > prod.version)]


def announce(settings: Settings) -> list[dict[str, Any]]:
    """Versions registered since the last announcement (marked announced): what promote_prompt
    should evaluate."""
    with state.session_scope(settings.state_db_url) as s:
        rows = s.execute(select(state.PromptVersion).where(state.PromptVersion.announced == 0)
                         .order_by(state.PromptVersion.name, state.PromptVersion.version)).scalars().all()
        out = []
        for r in rows:
            prod = s.get(state.PromptAlias, (r.name, PRODUCTION))
            r.announced = 1
            if prod is not None and r.version > prod.version:
                out.append({"name": r.name, "version": r.version})
        return out
