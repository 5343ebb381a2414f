"""Print the operator inventory of every cached model (run `tvm-qnn models fetch` first).

For each model: its inputs/outputs with dtype and quantization, then each operator with its
count, the dtype signatures seen (inputs -> outputs, `-` for an absent optional input), whether
its weights are per-channel, and options that matter to an importer (fused activation, padding).
Ends with a cross-model summary.  Reads the flatbuffers with the ``tflite`` package only.

    python benchmarks/op_inventory.py [--cache DIR] > inventory.md
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict

import numpy as np
import tflite
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.Padding import Padding
from tflite.TensorType import TensorType

from tvm_qnn_ext.models import list_models

_OP_NAMES = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k.lower() for k, v in vars(TensorType).items() if not k.startswith("_")}
_OPT_NAMES = {v: k for k, v in vars(BuiltinOptions).items() if not k.startswith("_")}
_ACT_NAMES = {v: k for k, v in vars(ActivationFunctionType).items() if not k.startswith("_")}
_PAD_NAMES = {v: k for k, v in vars(Padding).items() if not k.startswith("_")}
# ops whose input 1 is a weight tensor that may be quantized per output channel
_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def _op_name(model, op) -> str:
    code = model.OperatorCodes(op.OpcodeIndex())
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    if builtin == BuiltinOperator.CUSTOM:
        return f"CUSTOM:{code.CustomCode().decode()}"
    return _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")


def _qparams(tensor) -> tuple[np.ndarray, np.ndarray, int]:
    q = tensor.Quantization()
    if q is None or q.ScaleLength() == 0:
        return np.zeros(0), np.zeros(0, np.int64), 0
    return q.ScaleAsNumpy(), q.ZeroPointAsNumpy(), q.QuantizedDimension()


def _dtype(graph, idx: int) -> str:
    return "-" if idx < 0 else _TYPE_NAMES[graph.Tensors(idx).Type()]


def _options(op) -> dict[str, str]:
    kind = _OPT_NAMES.get(op.BuiltinOptionsType(), "NONE")
    table = op.BuiltinOptions()
    if kind == "NONE" or table is None or not hasattr(tflite, kind):
        return {}
    opts = getattr(tflite, kind)()
    opts.Init(table.Bytes, table.Pos)
    out = {}
    if hasattr(opts, "FusedActivationFunction"):
        out["act"] = _ACT_NAMES.get(opts.FusedActivationFunction(), "?")
    if hasattr(opts, "Padding"):
        out["pad"] = _PAD_NAMES.get(opts.Padding(), "?")
    return out


def _describe_io(graph, idx: int) -> str:
    t = graph.Tensors(idx)
    s, zp, _ = _qparams(t)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    q = f" scale={s[0]:.6g} zp={int(zp[0])}" if s.size else ""
    return f"`{t.Name().decode()}` {_TYPE_NAMES[t.Type()]} {shape}{q}"


def inventory(data: bytes) -> dict:
    model = tflite.Model.GetRootAsModel(data, 0)
    ops: dict[str, dict] = defaultdict(
        lambda: {"count": 0, "sigs": Counter(), "per_channel": set(), "opts": set()}
    )
    graphs = [model.Subgraphs(i) for i in range(model.SubgraphsLength())]
    for g in graphs:
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            name = _op_name(model, op)
            entry = ops[name]
            entry["count"] += 1
            ins = ",".join(_dtype(g, int(t)) for t in op.InputsAsNumpy())
            outs = ",".join(_dtype(g, int(t)) for t in op.OutputsAsNumpy())
            entry["sigs"][f"{ins} -> {outs}"] += 1
            if name in _WEIGHTED and op.InputsLength() > 1:
                s, _, axis = _qparams(g.Tensors(int(op.Inputs(1))))
                entry["per_channel"].add(f"yes (axis {axis})" if s.size > 1 else "no")
            for k, v in _options(op).items():
                entry["opts"].add(f"{k}={v}")
    g0 = graphs[0]
    return {
        "subgraphs": len(graphs),
        "inputs": [_describe_io(g0, int(i)) for i in g0.InputsAsNumpy()],
        "outputs": [_describe_io(g0, int(i)) for i in g0.OutputsAsNumpy()],
        "input_types": {_dtype(g0, int(i)) for i in g0.InputsAsNumpy()},
        "output_types": {_dtype(g0, int(i)) for i in g0.OutputsAsNumpy()},
        "ops": dict(ops),
    }


def _io_kind(types: set[str]) -> str:
    return "/".join(sorted(types))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", help="model cache directory (default: $TVM_QNN_CACHE or ~/.cache)")
    args = ap.parse_args(argv)
    models = list_models(args.cache)
    if not models:
        print("no cached models: run `tvm-qnn models fetch` first", file=sys.stderr)
        return 1
    used_by: dict[str, list[str]] = defaultdict(list)
    rows = []
    for m in models:
        inv = inventory(m.path.read_bytes())
        print(f"## {m.name}\n")
        print(f"{m.size} bytes, sha256 `{m.sha256[:16]}…`, from `{m.source}`")
        if inv["subgraphs"] > 1:
            print(f"\n{inv['subgraphs']} subgraphs")
        print()
        for label in ("inputs", "outputs"):
            for d in inv[label]:
                print(f"- {label[:-1]}: {d}")
        print("\n| op | count | dtypes (inputs -> outputs) | per-channel weights | options |")
        print("|---|---|---|---|---|")
        for name, e in sorted(inv["ops"].items()):
            used_by[name].append(m.name)
            sigs = "<br>".join(f"{s} (x{n})" for s, n in e["sigs"].most_common())
            pc = ", ".join(sorted(e["per_channel"])) or ""
            opts = ", ".join(sorted(e["opts"]))
            print(f"| {name} | {e['count']} | {sigs} | {pc} | {opts} |")
        print()
        n_ops = sum(e["count"] for e in inv["ops"].values())
        rows.append((m.name, n_ops, _io_kind(inv["input_types"]), _io_kind(inv["output_types"])))
    print("## Summary\n")
    print("| model | ops | input | output |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |")
    print("\n| operator | used by (models) |")
    print("|---|---|")
    for name, users in sorted(used_by.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"| {name} | {len(users)}: {', '.join(users)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
