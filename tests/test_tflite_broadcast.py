"""ADD, SUB and MUL with every broadcast form against LiteRT's builtin kernels, bit for bit.

LiteRT's optimized ADD picks its loop from the operand shapes (elementwise rows, scalar
broadcast, or the generic reference kernel) and rounds differently inside its SIMD loops; the
reference's ``litert_simd`` and the compiled ``qnn.add`` reproduce each.  Forms covered: equal
shapes, rank-extended, [1] and 0-d scalars on either side, unit dims on either or both sides
(outer products such as [N, 1] + [1, M]), and shapes no fivefold loop fits.
"""

from __future__ import annotations

import numpy as np
import pytest

from tvm_qnn_ext.frontend.tflite.common import activation_range
from tvm_qnn_ext.frontend.tflite.reader import Quant
from tvm_qnn_ext.quantization import dtype_range
from tvm_qnn_ext.quantization import elementwise as ref

pytest.importorskip("ai_edge_litert")

OPS = {"ADD": "add", "SUB": "subtract", "MUL": "multiply"}
ACTS = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
DIMS = [1, 2, 3, 5, 8, 9, 16, 17, 20, 33]
FORMS = [
    ((1, 5, 7, 20), ()),
    ((), (1, 5, 7, 20)),
    ((1, 5, 7, 20), (1,)),
    ((1,), (3, 37)),
    ((9, 1), (1, 37)),
    ((1, 37), (9, 1)),
    ((1, 5, 1, 20), (1, 1, 7, 20)),
    ((1, 5, 7, 1), (1, 5, 7, 20)),
    ((1, 5, 7, 20), (5, 1, 1)),
    ((2, 1, 3, 1, 9), (1, 4, 1, 6, 1)),
    ((2, 3, 40), (3, 40)),
    ((4, 33), (4, 33)),
]


def _random_shapes(rng) -> tuple[tuple[int, ...], tuple[int, ...]]:
    rank = int(rng.integers(0, 6))
    out = [int(rng.choice(DIMS)) for _ in range(rank)]
    while np.prod(out) > 3000:
        out[int(rng.integers(0, rank))] = 1
    a = [d if rng.random() < 0.6 else 1 for d in out]
    b = [d if rng.random() < 0.6 else 1 for d in out]
    if rng.random() < 0.3:
        a = a[int(rng.integers(0, rank + 1)) :]
    if rng.random() < 0.3:
        b = b[int(rng.integers(0, rank + 1)) :]
    return tuple(a), tuple(b)


def _case(rng, op: str, shapes=None) -> dict:
    dtype = ("int8", "uint8")[int(rng.integers(0, 2))]
    lo, hi = dtype_range(dtype)
    if rng.random() < 0.4:  # exact scale ratios: many results on rounding ties
        s1, s2, so = (0.5, 0.25, 0.25 * 2 ** int(rng.integers(1, 6))) if op == "MUL" else (
            0.05, 0.07, 0.1)  # fmt: skip
    else:
        s1, s2 = (float(np.float32(np.exp(rng.uniform(-6, 0)))) for _ in range(2))
        so = max(s1, s2) * np.exp(rng.uniform(-0.5, 2))
        if op == "MUL":
            so = s1 * s2 * np.exp(rng.uniform(3, 6))
    act = list(ACTS)[int(rng.integers(0, 4))]
    zps = [int(rng.integers(lo + 60, hi - 60)) for _ in range(3)]
    q = dict(lhs_scale=s1, lhs_zero_point=zps[0], rhs_scale=s2, rhs_zero_point=zps[1],
             output_scale=float(np.float32(so)), output_zero_point=zps[2])  # fmt: skip
    quant = Quant(np.array([q["output_scale"]]), np.array([zps[2]]), 0)
    out_min, out_max = activation_range(ACTS[act], quant, dtype)
    return dict(op=op, dtype=dtype, shapes=shapes or _random_shapes(rng), act=act, q=q,
                bounds=dict(out_min=out_min, out_max=out_max))  # fmt: skip


def _model(case) -> bytes:
    from tvm_qnn_ext.testing.tflite_builder import single_op_model

    q, dtype, (sa, sb) = case["q"], case["dtype"], case["shapes"]
    return single_op_model(
        case["op"],
        [
            dict(shape=sa, dtype=dtype, scale=[q["lhs_scale"]], zero_point=[q["lhs_zero_point"]]),
            dict(shape=sb, dtype=dtype, scale=[q["rhs_scale"]], zero_point=[q["rhs_zero_point"]]),
        ],
        [dict(shape=np.broadcast_shapes(sa, sb), dtype=dtype, scale=[q["output_scale"]],
              zero_point=[q["output_zero_point"]])],
        fused_activation=case["act"],
    )  # fmt: skip


def _inputs(case, rng) -> list[np.ndarray]:
    lo, hi = dtype_range(case["dtype"])
    return [np.array(rng.integers(lo, hi + 1, s), dtype=case["dtype"]) for s in case["shapes"]]


@pytest.mark.parametrize("op", list(OPS))
def test_broadcast_reference_matches_litert(op):
    """200 random broadcast shapes (ranks 0-5) plus the named forms, 2 inputs each."""
    from tvm_qnn_ext.testing.fuzz_tflite import invoke_litert
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    rng = np.random.default_rng(list(OPS).index(op))
    cases = [_case(rng, op) for _ in range(200)] + [_case(rng, op, f) for f in FORMS]
    for case in cases:
        runner = LiteRTRunner(_model(case))
        kw = {"litert_simd": True} if op == "ADD" else {}
        for _ in range(2):
            a, b = _inputs(case, rng)
            want = invoke_litert(runner, [a, b])[0]
            got = getattr(ref, OPS[op])(
                a, b, **case["q"], out_dtype=case["dtype"], **case["bounds"], **kw
            )
            np.testing.assert_array_equal(got, want, err_msg=str(case))


def test_litert_add_loop_kinds():
    assert ref.litert_add_loop((4, 33), (4, 33), "int8") == ref.LiteRTAddLoop(
        "elementwise", 132, 128
    )
    assert ref.litert_add_loop((9, 1), (1, 37), "uint8") == ref.LiteRTAddLoop(
        "scalar_broadcast", 37, 32
    )
    assert ref.litert_add_loop((2, 3, 40), (3, 40), "uint8").kind == "elementwise"
    assert ref.litert_add_loop((2, 1, 3, 1, 9), (1, 4, 1, 6, 1), "int8").kind == "generic"


def test_broadcast_compiled_matches_litert():
    """The named forms for ADD (int8 and uint8), SUB and MUL, imported and compiled as one
    module, on tie-heavy scales."""
    from tvm_qnn_ext.frontend import from_tflite
    from tvm_qnn_ext.testing.fuzz_tflite import compile_batch, invoke_litert, run_vm
    from tvm_qnn_ext.testing.litert import LiteRTRunner

    rng = np.random.default_rng(99)
    cases = [_case(rng, "ADD", f) for f in FORMS for _ in range(2)]
    cases += [_case(rng, op, f) for op in ("SUB", "MUL") for f in FORMS[::3]]
    models = [_model(c) for c in cases]
    vm = compile_batch({f"case_{i}": from_tflite(m) for i, m in enumerate(models)})
    for i, (case, model) in enumerate(zip(cases, models, strict=True)):
        runner = LiteRTRunner(model)
        for _ in range(3):
            inputs = _inputs(case, rng)
            np.testing.assert_array_equal(
                run_vm(vm, f"case_{i}", inputs)[0],
                invoke_litert(runner, inputs)[0],
                err_msg=str(case),
            )
