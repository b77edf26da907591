"""The pipeline of an index: the embedding model and the chunking it was built with.

Each index version records its pipeline. Everything that embeds for an index (ingest, search,
eval, a rebuild's reuse) follows the *live* version's pipeline, never the settings file
directly, so a changed setting can never mix two models or two chunkings in one collection:
the change reaches an index only through a blue/green rebuild (``ragops index rebuild`` or the
``rebuild_index`` DAG), which validates the new version before it serves.

A version built from the settings "follows the settings": when ``embedding.model`` or the
chunking settings change, the index has *drifted* and the next rebuild applies the change
(``rebuild_index`` is triggered by the ingest that notices). A version built with an explicit
model or chunking profile is *pinned*: it keeps that pipeline until a rebuild chooses another
one or ``settings`` (follow the settings file again).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ragops.config import Settings

KEYS = ("model", "backend", "quantize", "normalize", "profile", "chunk_tokens", "overlap_tokens", "markdown_headers")
# what a pipeline recorded before a key existed was built with (torch: the only backend then)
DEFAULTS = {"backend": "torch", "quantize": "none"}


def _get(p: dict[str, Any], key: str) -> Any:
    return p.get(key, DEFAULTS.get(key))


def configured(settings: Settings) -> dict[str, Any]:
    """The pipeline the settings file asks for."""
    c, e = settings.chunking, settings.embedding
    return {"model": e.model, "backend": e.backend, "quantize": e.quantize, "normalize": e.normalize, "profile": c.profile, "chunk_tokens": c.chunk_tokens,
            "overlap_tokens": c.overlap_tokens, "markdown_headers": list(c.markdown_headers), "pinned": False}


def legacy(settings: Settings) -> dict[str, Any]:
    """The pipeline of a version built before pipelines were recorded: the settings' model and
    chunking, embedded with torch (the only backend then)."""
    return {**configured(settings), **DEFAULTS}


def choose(settings: Settings, current: dict[str, Any] | None, model: str | None = None,
           profile: str | None = None, backend: str | None = None) -> dict[str, Any]:
    """The pipeline a rebuild targets. ``None`` keeps what the index has (a pinned pipeline, else
    the settings); ``"settings"`` follows the settings file; any other value pins that choice.
    ``backend`` is ``torch``, ``onnx``, ``openvino`` or ``onnx-int8`` (backend and quantisation)."""
    follow = current is None or not current.get("pinned") or "settings" in (model, profile, backend)
    base = configured(settings) if follow else {**DEFAULTS, **current}
    if model is None and profile is None and backend is None:
        return base
    out = dict(base)
    if model not in (None, "settings"):
        out["model"], out["pinned"] = model, True
    if backend not in (None, "settings"):
        name, _, quant = backend.partition("-")
        out["backend"], out["quantize"], out["pinned"] = name, quant or "none", True
    if profile not in (None, "settings"):
        c = settings.chunking.with_profile(profile)
        out.update(profile=profile, chunk_tokens=c.chunk_tokens, overlap_tokens=c.overlap_tokens,
                   markdown_headers=list(c.markdown_headers), pinned=True)
    if "settings" in (model, profile, backend) and out == {**configured(settings), "pinned": out["pinned"]}:
        out["pinned"] = False
    return out


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal models and chunking (names of profiles and the pinned flag aside)."""
    if a is None or b is None:
        return a is b
    return all(_get(a, k) == _get(b, k) for k in KEYS if k != "profile")


def apply(settings: Settings, pipeline: dict[str, Any] | None) -> Settings:
    """``settings`` with the pipeline's model and chunking (``None`` = unchanged)."""
    if not pipeline:
        return settings
    return settings.replace(
        embedding=dataclasses.replace(settings.embedding, model=pipeline["model"], normalize=pipeline["normalize"],
                                      backend=_get(pipeline, "backend"), quantize=_get(pipeline, "quantize")),
        chunking=dataclasses.replace(settings.chunking, profile=pipeline.get("profile", "default"),
                                     chunk_tokens=pipeline["chunk_tokens"], overlap_tokens=pipeline["overlap_tokens"],
                                     markdown_headers=tuple(pipeline["markdown_headers"])))


def live(settings: Settings, index: str) -> dict[str, Any] | None:
    """The live version's pipeline (``None``: a new index; :func:`legacy` for a version built before
    pipelines were recorded)."""
    from ragops import state

    with state.session_scope(settings.state_db_url) as s:
        v = state.live_version(s, index)
        if v is None:
            return None
        return dict(v.pipeline) if v.pipeline else legacy(settings)


def for_index(settings: Settings, index: str) -> Settings:
    """Settings to embed and chunk with for ``index``: its live version's pipeline."""
    return apply(settings, live(settings, index))


def drift(settings: Settings, index: str) -> dict[str, Any] | None:
    """What changed in the settings since the live version was built, if it follows them."""
    current = live(settings, index)
    if current is None or current.get("pinned"):
        return None
    wanted = configured(settings)
    if same(current, wanted):
        return None
    return {k: {"live": _get(current, k), "settings": wanted[k]} for k in KEYS
            if k != "profile" and _get(current, k) != wanted[k]}


def describe(p: dict[str, Any] | None) -> str:
    if not p:
        return "settings (not recorded)"
    model = p["model"].replace("bundled:", "")
    backend = _get(p, "backend") + ("" if _get(p, "quantize") == "none" else f"-{_get(p, 'quantize')}")
    return (f"{model} ({backend}), chunks {p['chunk_tokens']}/{p['overlap_tokens']} tokens ({p.get('profile', 'default')})"
            f"{', pinned' if p.get('pinned') else ''}")
