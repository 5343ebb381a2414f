"""The generated assembly of a compiled module, to check which instructions a kernel uses."""

from __future__ import annotations

import re

import tvm


def _modules(mod: tvm.runtime.Module) -> list[tvm.runtime.Module]:
    found = [mod]
    for sub in mod.imports:
        found.extend(_modules(sub))
    return found


def assembly(compiled) -> str:
    """Assembly text of every LLVM module in ``compiled`` (an Executable, VM executable, or
    runtime Module), concatenated."""
    mod = getattr(compiled, "mod", compiled)
    if hasattr(compiled, "executable"):  # CompiledModel
        mod = compiled.executable.mod
    parts = [m.inspect_source("asm") for m in _modules(mod) if m.kind == "llvm"]
    if not parts:
        raise ValueError(f"no LLVM module found in {type(compiled).__name__}")
    return "\n".join(parts)


def count_instruction(asm: str, mnemonic: str) -> int:
    """How many times ``mnemonic`` (e.g. "vpdpbusd") appears as an instruction."""
    prefix = r"^\s*(?:\{\w+\}\s*)?"  # an encoding prefix such as {vex}
    return len(re.findall(rf"{prefix}{re.escape(mnemonic)}\b", asm, flags=re.MULTILINE))
