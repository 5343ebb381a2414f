"""Relax passes for the QNN dialect, one per file, and the named ``"qnn"`` pipeline."""

from .pipeline import Stage, pipeline_stage, run_stages, stages
from .report import collect_reports, report

__all__ = ["Stage", "collect_reports", "pipeline_stage", "report", "run_stages", "stages"]
