"""Targets: CPU feature detection and int8 dot-product instructions declared as data."""

from .cpu import CpuInfo, detect_cpu, resolve_target

__all__ = ["CpuInfo", "detect_cpu", "resolve_target"]
