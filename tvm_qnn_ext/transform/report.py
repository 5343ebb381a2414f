"""Rewrite reports: passes say what they changed (or left alone, and why) here."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ReportEntry:
    stage: str
    message: str

    def __str__(self) -> str:
        return f"[{self.stage}] {self.message}"


_current: contextvars.ContextVar[list[ReportEntry] | None] = contextvars.ContextVar(
    "qnn_report", default=None
)


def report(stage: str, message: str) -> None:
    """Record one line for the active collector (a no-op when nobody is collecting)."""
    entries = _current.get()
    if entries is not None:
        entries.append(ReportEntry(stage, message))


@contextlib.contextmanager
def collect_reports() -> Iterator[list[ReportEntry]]:
    """Collect every :func:`report` made inside the ``with`` block."""
    entries: list[ReportEntry] = []
    token = _current.set(entries)
    try:
        yield entries
    finally:
        _current.reset(token)
