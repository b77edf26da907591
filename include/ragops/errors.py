"""Exception types of the library.

Every error a person can fix says what is wrong and how to fix it. ``permanent`` tells the
Airflow layer whether a retry could help (``AirflowFailException``) or not.
"""

from __future__ import annotations

import reprlib
from typing import Any

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 3, 6, 6, 4, 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 60


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters.

    A value from a file can be megabytes long (or, through YAML aliases, a million items): the
    message must name it, not carry it."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int of more than 4,300 digits cannot even be turned into a string
        text = f"<{type(value).__name__} too large to show>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


class RagopsError(Exception):
    """Base class. ``permanent`` errors are not retried by the DAGs."""

    permanent: bool = True


class ConfigError(RagopsError):
    """Settings file or environment variable is invalid."""


class SourceError(RagopsError):
    """A source URI cannot be used (missing, not a directory or record file, bad scheme)."""


class SourceUnreachableError(SourceError):
    """The storage behind a source did not answer (network, credentials service). Transient."""

    permanent = False


class UnknownIndexError(RagopsError):
    """An index name that does not exist (or is not a valid name)."""


class DataIncidentError(RagopsError):
    """Too much of a run failed data-quality checks; nothing was changed in the index."""


class MassDeleteError(RagopsError):
    """A sync would delete more of a source than allowed; nothing was changed."""


class SyncMismatchError(RagopsError):
    """The self-check found the state store and Chroma disagree on chunk ids."""


class StateStoreError(RagopsError):
    """The state store is missing its schema or is at the wrong migration."""


class VectorStoreBusyError(RagopsError):
    """Another writer holds the embedded Chroma lock. Transient: a retry may succeed."""

    permanent = False


class VectorStoreUnavailableError(RagopsError):
    """The Chroma server did not answer (down, restarting, or its proxy answered 5xx). Transient:
    nothing was recorded in the state store for the failed request, and a retry may succeed."""

    permanent = False


class VectorStoreFullError(RagopsError):
    """The disk under the embedded Chroma store has no room for a write. Permanent: a person
    must free space (or move the data directory) before a retry can succeed."""


class StateStoreUnavailableError(StateStoreError):
    """The state store dropped the connection or did not answer (server restart, network).
    Transient: the transaction was rolled back and a retry may succeed."""

    permanent = False


class PromptError(RagopsError):
    """A prompt file or reference is invalid (bad YAML, template, variable, unknown version)."""


class DatasetError(RagopsError):
    """A golden question set is invalid; the message names the file, line and field."""


class LlmError(RagopsError):
    """The chat endpoint failed or answered something unusable. Transient unless marked otherwise."""

    permanent = False


class LocalModelError(LlmError):
    """The bundled local model (a GGUF file) is missing, truncated or corrupt, or cannot be loaded.
    A retry cannot fix a file: permanent."""

    permanent = True


class EvalError(RagopsError):
    """An evaluation run cannot start or could not finish; completed results are kept."""


class LexicalIndexError(RagopsError):
    """A lexical (BM25) index is missing, corrupt or cannot be built or written."""


class DriftError(RagopsError):
    """A drift check cannot run as asked (bad query log, unknown snapshot, too little data)."""
