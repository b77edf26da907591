"""The reference application path (see :mod:`ragops.production.app`): ``from ragops.app import answer``."""

from __future__ import annotations

from ragops.production.app import Answer, answer, reset

__all__ = ["Answer", "answer", "reset"]
