"""Traces and feedback for applications that do not use ``ragops.app`` (see
:mod:`ragops.production.tracing`): ``ragops.tracing.record(...)``, ``ragops.tracing.feedback(...)``."""

from __future__ import annotations

from ragops.production.tracing import TracingError, feedback, new_trace_id, record, span_record

__all__ = ["TracingError", "feedback", "new_trace_id", "record", "span_record"]
