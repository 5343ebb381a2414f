"""Differential fuzzing of the TFLite importer against LiteRT's builtin kernels.

    python benchmarks/fuzz_tflite.py --cases 5000 --seed 0 [--multi 300] [--out DIR]

Prints per-op case counts and failures, each failure with its reproducer, and a final line
``fuzz: <N> cases, <M> mismatches`` (M counts every failing case: wrong values, import or
compile errors).  Exits 1 if M > 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from tvm_qnn_ext.testing.fuzz_tflite import FuzzReport, fuzz_ops, run_fuzz


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000, help="single-op models")
    p.add_argument("--multi", type=int, default=None, help="2-4 op chains (default: cases/10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=3, help="random inputs per model")
    p.add_argument("--batch", type=int, default=150, help="models compiled per executable")
    p.add_argument("--out", default=None, help="directory for reproducers of failing cases")
    p.add_argument("--ops", default=None, help="comma-separated subset of ops")
    args = p.parse_args(argv)
    multi = args.cases // 10 if args.multi is None else args.multi
    ops = args.ops.split(",") if args.ops else fuzz_ops()
    start = time.time()

    def progress(r: FuzzReport) -> None:
        print(
            f"  {r.cases} cases, {len(r.problems)} failing, {time.time() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    report = run_fuzz(
        args.cases, args.seed, n_multi=multi, samples=args.samples, batch_size=args.batch,
        out_dir=args.out, ops=ops, progress=progress,
    )  # fmt: skip
    failing = report.failures_by_op()
    print(f"{'op':<20} {'cases':>7} {'failing':>8}")
    for op in sorted(report.per_op):
        print(f"{op:<20} {report.per_op[op]:>7} {failing.get(op, 0):>8}")
    kinds = Counter(p.kind for p in report.problems)
    for prob in report.problems:
        where = f" -> {prob.path}" if prob.path else ""
        print(
            f"{prob.kind}: case {prob.index} {'+'.join(prob.ops)} {prob.dtype} "
            f"max diff {prob.max_diff:g}: {prob.detail[:200]}{where}"
        )
    print(f"failures by kind: {dict(kinds)}; {time.time() - start:.0f} s")
    print(report.summary())
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
