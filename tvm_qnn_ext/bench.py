"""Side-by-side latency of one model: tvm_qnn_ext, stock TVM 0.27, LiteRT builtin, LiteRT
XNNPACK and onnxruntime, shared by ``tvm-qnn bench`` and ``benchmarks/suite.py``.

Every engine is timed the same way: one call takes numpy inputs and returns numpy outputs
(inputs and outputs copied), and the figure is the median over many calls.  TVM reads
``TVM_NUM_THREADS`` once, when its thread pool starts, so each thread count runs in its own
process (:func:`bench_in_subprocess`, which runs ``python -m tvm_qnn_ext.bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ENGINES = ("tvm_qnn_ext", "stock_tvm", "litert_builtin", "litert_xnnpack", "onnxruntime")


@dataclass
class Timing:
    """One engine's median latency on one model, or why it has none (``ms`` is None)."""

    engine: str
    ms: float | None
    note: str = ""
    compile_s: float | None = None
    # largest |output - reference output| on the benchmark inputs (None: not compared); the
    # reference is LiteRT builtin for .tflite models and onnxruntime for .onnx models
    maxdiff: float | None = None


class Unavailable(Exception):
    """This engine cannot run this model; the message says why."""


Runner = Callable[[Sequence[np.ndarray]], object]


# ------------------------------------------------------------------------------ inputs


def model_inputs(path: Path, seed: int = 0) -> list[np.ndarray]:
    """Seeded random inputs over each input's full quantized range."""
    rng = np.random.default_rng(seed)
    if path.suffix == ".onnx":
        return _onnx_inputs(path, rng)
    from .oracle import io_specs, random_input, read_tflite

    in_specs, _ = io_specs(read_tflite(path))
    return [random_input(s, rng) for s in in_specs]


def _onnx_inputs(path: Path, rng: np.random.Generator) -> list[np.ndarray]:
    import onnxruntime as ort

    arrays = []
    for i in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]  # a named (batch) axis: 1
        dtype = np.dtype(i.type[len("tensor(") : -1].replace("float", "float32"))
        if np.issubdtype(dtype, np.integer):
            lo, hi = np.iinfo(dtype).min, np.iinfo(dtype).max
            arrays.append(rng.integers(lo, hi, size=shape, endpoint=True).astype(dtype))
        else:
            arrays.append(rng.uniform(-1, 1, size=shape).astype(dtype))
    return arrays


# ----------------------------------------------------------------------------- engines


def _ours(path: Path, threads: int, target: str, cache: Path | None) -> tuple[Runner, float]:
    from .compile import CompiledModel, compile_model

    so = cache / f"{path.stem}.ours.so" if cache else None
    t0 = time.perf_counter()
    if so is not None and so.is_file():
        model = CompiledModel.load(so)
    else:
        try:
            model = compile_model(path, target=target)
        except ValueError as e:
            if "unsupported model format" in str(e):
                raise Unavailable(f"no importer for {path.suffix}") from None
            raise
        if so is not None:
            model.export(so)
    return (lambda xs: model(*xs)), time.perf_counter() - t0


def _stock_tvm(path: Path, threads: int, target: str, cache: Path | None) -> tuple[Runner, float]:
    import tvm
    from tvm import relax

    from .target import resolve_target

    so = cache / f"{path.stem}.stock.so" if cache else None
    t0 = time.perf_counter()
    if so is not None and so.is_file():
        lib = tvm.runtime.load_module(str(so))
    else:
        try:
            mod = _stock_import(path)
        except Unavailable:
            raise
        except Exception as e:  # noqa: BLE001 - any import failure is a result to report
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:120]
            raise Unavailable(f"its importer fails: {first}") from None
        lib = tvm.compile(mod, resolve_target(target))
        if so is not None:
            lib.export_library(str(so))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    main = vm["main"]

    def run(xs):
        out = main(*[tvm.runtime.tensor(x) for x in xs])
        return out.numpy() if isinstance(out, tvm.runtime.Tensor) else [o.numpy() for o in out]

    return run, time.perf_counter() - t0


def _stock_import(path: Path):
    """TVM 0.27's own importer for the file (from_tflite, or from_onnx with batch 1)."""
    if path.suffix == ".tflite":
        import tflite
        from tvm.relax.frontend.tflite import from_tflite

        return from_tflite(tflite.Model.GetRootAsModel(path.read_bytes(), 0))
    if path.suffix == ".onnx":
        import onnx
        from tvm.relax.frontend.onnx import from_onnx

        model = onnx.load(str(path))
        shapes = {
            i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
            for i in model.graph.input
        }
        return from_onnx(model, shape_dict=shapes)
    raise Unavailable(f"no stock TVM importer for {path.suffix}")


def _litert(xnnpack: bool):
    def make(path: Path, threads: int, target: str, cache: Path | None) -> tuple[Runner, float]:
        if path.suffix != ".tflite":
            raise Unavailable("LiteRT runs .tflite models only")
        from .testing.litert import LiteRTRunner

        t0 = time.perf_counter()
        runner = LiteRTRunner(path.read_bytes(), xnnpack=xnnpack, num_threads=threads)
        return runner, time.perf_counter() - t0

    return make


def _onnxruntime(path: Path, threads: int, target: str, cache: Path | None) -> tuple[Runner, float]:
    if path.suffix != ".onnx":
        raise Unavailable("no TFLite-to-ONNX converter installed (tf2onnx)")
    import onnxruntime as ort

    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return (lambda xs: sess.run(None, dict(zip(names, xs, strict=True)))), time.perf_counter() - t0


_MAKERS = {
    "tvm_qnn_ext": _ours,
    "stock_tvm": _stock_tvm,
    "litert_builtin": _litert(xnnpack=False),
    "litert_xnnpack": _litert(xnnpack=True),
    "onnxruntime": _onnxruntime,
}


# ------------------------------------------------------------------------------ timing


def median_ms(fn: Callable[[], object], repeat: int, warmup: int, budget_s: float) -> float:
    """Median of at least ``repeat`` timed calls (more when they are fast, up to ``budget_s``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < budget_s and len(times) < 10000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def bench_model(
    path: str | os.PathLike,
    engines: Sequence[str] = ENGINES,
    *,
    threads: int = 1,
    repeat: int = 20,
    warmup: int = 3,
    budget_s: float = 1.0,
    target: str = "native",
    cache: str | os.PathLike | None = None,
) -> list[Timing]:
    """Time ``engines`` on one model in this process.

    TVM's thread count is whatever its pool started with: call this in a process whose
    ``TVM_NUM_THREADS`` equals ``threads`` (see :func:`bench_in_subprocess`).  ``cache`` is a
    folder where compiled TVM libraries are kept and reused (e.g. across thread counts).
    """
    path = Path(path)
    unknown = [e for e in engines if e not in _MAKERS]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    cache_dir = Path(cache) if cache is not None else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    inputs = model_inputs(path)
    reference = None  # LiteRT builtin for TFLite models, onnxruntime for ONNX models
    oracle = {".tflite": _litert(xnnpack=False), ".onnx": _onnxruntime}.get(path.suffix)
    if oracle is not None:
        reference = _outputs(oracle(path, 1, target, None)[0](inputs))
    results = []
    for engine in engines:
        try:
            run, compile_s = _MAKERS[engine](path, threads, target, cache_dir)
        except Unavailable as e:
            results.append(Timing(engine, None, str(e)))
            continue
        diff = None if reference is None else _maxdiff(_outputs(run(inputs)), reference)
        ms = median_ms(lambda run=run: run(inputs), repeat, warmup, budget_s)
        results.append(Timing(engine, ms, compile_s=compile_s, maxdiff=diff))
    return results


def _outputs(out) -> list[np.ndarray]:
    return [np.asarray(out)] if isinstance(out, np.ndarray) else [np.asarray(o) for o in out]


def _maxdiff(ours: list[np.ndarray], ref: list[np.ndarray]) -> float:
    if len(ours) != len(ref) or any(a.shape != b.shape for a, b in zip(ours, ref, strict=True)):
        return float("inf")
    return max(
        (
            float(np.max(np.abs(a.astype(np.float64) - b), initial=0))
            for a, b in zip(ours, ref, strict=True)
        ),
        default=0.0,
    )


def bench_in_subprocess(
    path: str | os.PathLike,
    engines: Sequence[str] = ENGINES,
    *,
    threads: int = 1,
    repeat: int = 20,
    warmup: int = 3,
    budget_s: float = 1.0,
    target: str = "native",
    cache: str | os.PathLike | None = None,
    timeout_s: float = 1800,
) -> list[Timing]:
    """:func:`bench_model` in a fresh process whose TVM thread pool has ``threads`` threads."""
    cmd = [sys.executable, "-m", "tvm_qnn_ext.bench", str(path), "--json"]
    cmd += ["--engines", ",".join(engines), "--threads", str(threads), "--target", target]
    cmd += ["--repeat", str(repeat), "--warmup", str(warmup), "--budget", str(budget_s)]
    if cache is not None:
        cmd += ["--cache", str(cache)]
    env = dict(os.environ, TVM_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {proc.returncode}"
        raise RuntimeError(f"benchmark of {Path(path).name} ({threads} threads) failed: {reason}")
    return [Timing(**t) for t in json.loads(proc.stdout.strip().splitlines()[-1])]


def kernel_profile(path: str | os.PathLike, runs: int = 20, target: str = "native") -> list:
    """(kernel, calls, ms) per kernel name of our compiled model, slowest first.

    Each call site keeps its fastest time over ``runs`` runs (the machine may be shared), timed
    around every VM call instruction; the VM's own builtins appear as ``vm.builtin.*``.
    """
    from .compile import compile_model

    path = Path(path)
    # the instrument sees VM call instructions, which only the bytecode VM has
    model = compile_model(path, target=target, exec_mode="bytecode")
    inputs = model_inputs(path)
    best: dict[int, tuple[str, float]] = {}
    state = {"site": 0, "t0": 0.0}

    def instrument(func, symbol, before, ret, *args):
        if before:
            state["t0"] = time.perf_counter()
        else:
            site, dt = state["site"], time.perf_counter() - state["t0"]
            best[site] = (symbol, min(dt, best.get(site, (symbol, dt))[1]))
            state["site"] += 1
        return 0

    model._vm.set_instrument(instrument)
    for _ in range(runs):
        state["site"] = 0
        model(*inputs)
    totals: dict[str, list] = {}
    for symbol, dt in best.values():
        entry = totals.setdefault(symbol, [0, 0.0])
        entry[0] += 1
        entry[1] += dt * 1e3
    return sorted(((k, n, ms) for k, (n, ms) in totals.items()), key=lambda r: -r[2])


# ----------------------------------------------------------------------------- printing


_RATIO_ORDER = ("litert_builtin", "litert_xnnpack", "stock_tvm", "onnxruntime")


def format_timings(name: str, timings: Sequence[Timing], threads: int) -> str:
    """The ``tvm-qnn bench`` report: one line per engine, then ours as a ratio of each other."""
    lines = [f"{name}: median latency, {threads} thread(s), inputs and outputs copied"]
    ref = "onnxruntime" if name.endswith(".onnx") else "LiteRT builtin"
    for t in timings:
        value = f"{t.ms:9.3f} ms" if t.ms is not None else f"{'n/a':>9}   ({t.note})"
        if t.maxdiff is not None:
            value += f"   max diff vs {ref} {t.maxdiff:g}"
        lines.append(f"  {t.engine:<15} {value}")
    ours = next((t.ms for t in timings if t.engine == "tvm_qnn_ext"), None)
    others = sorted(
        (t for t in timings if ours is not None and t.ms and t.engine != "tvm_qnn_ext"),
        key=lambda t: _RATIO_ORDER.index(t.engine),
    )
    if others:
        speedup = " ".join(f"{t.engine}={t.ms / ours:.2f}x" for t in others)
        lines.append(f"speedup of tvm_qnn_ext (their time / ours): {speedup}")
        lines.append(
            "ratio " + " ".join(f"tvm_qnn_ext/{t.engine}={ours / t.ms:.2f}" for t in others)
        )
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="time one model (a worker of benchmarks/suite.py)")
    p.add_argument("model")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--target", default="native")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--budget", type=float, default=1.0)
    p.add_argument("--cache")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", action="store_true", help="time each tvm_qnn_ext kernel instead")
    a = p.parse_args(argv)
    if os.environ.get("TVM_NUM_THREADS") != str(a.threads):
        p.error(f"run with TVM_NUM_THREADS={a.threads} in the environment")
    if a.profile:
        rows = kernel_profile(a.model, target=a.target)
        total = sum(ms for _, _, ms in rows)
        print(f"{Path(a.model).name}: {total:.3f} ms in VM calls (fastest of 20 runs per call)")
        for name, calls, ms in rows[:25]:
            print(f"  {ms:8.3f} ms {100 * ms / total:5.1f}% {calls:4d}x  {name}")
        return 0
    try:
        timings = bench_model(
            a.model,
            a.engines.split(","),
            threads=a.threads,
            repeat=a.repeat,
            warmup=a.warmup,
            budget_s=a.budget,
            target=a.target,
            cache=a.cache,
        )
    except Exception as e:  # noqa: BLE001 - the parent process reports the last stderr line
        if os.environ.get("TVM_QNN_DEBUG"):
            raise
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        print(f"error: {type(e).__name__}: {lines[0] if lines else ''}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps([asdict(t) for t in timings]))
    else:
        print(format_timings(Path(a.model).name, timings, a.threads))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
