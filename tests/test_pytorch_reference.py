"""tvm_qnn_ext.quantization.pytorch against torch's own quantized CPU kernels, bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tvm_qnn_ext.quantization import pytorch as ref  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
F32 = np.float32
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ENGINES = [e for e in ("fbgemm", "x86") if e in torch.backends.quantized.supported_engines]


@pytest.fixture(params=ENGINES)
def engine(request):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = request.param
    yield request.param
    torch.backends.quantized.engine = old


def _vector_width() -> int:
    cap = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": 64, "AVX2": 32}.get(cap, 0)


def _qt(q: np.ndarray, scale: float, zp: int):
    dtype = {np.dtype("uint8"): torch.quint8, np.dtype("int8"): torch.qint8}[q.dtype]
    return torch._make_per_tensor_quantized_tensor(torch.from_numpy(q), scale, zp).to(dtype)


def _qt_pc(q: np.ndarray, scales: np.ndarray, zps: np.ndarray, axis: int):
    return torch._make_per_channel_quantized_tensor(
        torch.from_numpy(q),
        torch.from_numpy(scales.astype(np.float64)),
        torch.from_numpy(zps),
        axis,
    )


def _scale(rng, lo=-8.0, hi=1.0) -> float:
    return float(F32(np.exp(rng.uniform(lo, hi))))


def _ir(t) -> np.ndarray:
    return t.int_repr().numpy()


def test_quantize_per_tensor(engine):
    rng = np.random.default_rng(10)
    for t in range(300):
        dtype, tdt = (("uint8", torch.quint8), ("int8", torch.qint8))[t % 2]
        lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
        s = _scale(rng)
        x = (rng.standard_normal(int(rng.integers(1, 3000))) * s * rng.uniform(1, 300)).astype(F32)
        if t % 3:  # exact ties x / s = k + 1/2, where the order of rounding and zp matters
            x = (np.round(x / s * 2) / 2 * s).astype(F32)
        if t % 7 == 0:
            x[:3] = [np.inf, -np.inf, 1e30]
        zp = int(rng.integers(lo, hi + 1))
        want = _ir(torch.quantize_per_tensor(torch.from_numpy(x), s, zp, tdt))
        np.testing.assert_array_equal(ref.quantize_per_tensor(x, s, zp, dtype), want)


def test_quantize_per_tensor_zero_point_before_rounding():
    # 0.5 / 1.0 + 1 = 1.5 -> 2 (even); rounding before adding zp would give 0 + 1 = 1.
    assert ref.quantize_per_tensor(np.array([0.5], F32), 1.0, 1, "uint8")[0] == 2


def test_quantize_per_channel(engine):
    rng = np.random.default_rng(11)
    for t in range(300):
        dtype = ("uint8", "int8")[t % 2]
        lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
        shape = tuple(int(v) for v in rng.integers(1, 12, 3))
        axis = int(rng.integers(0, 3))
        c = shape[axis]
        s = np.exp(rng.uniform(-8, 1, c)).astype(F32)
        bshape = [1, 1, 1]
        bshape[axis] = c
        sb = s.reshape(bshape)
        x = (rng.standard_normal(shape) * sb * rng.uniform(1, 300)).astype(F32)
        if t % 3:
            x = (np.round(x / sb * 2) / 2 * sb).astype(F32)
        zp = rng.integers(lo, hi + 1, c)
        tdt = torch.quint8 if dtype == "uint8" else torch.qint8
        want = _ir(
            torch.quantize_per_channel(
                torch.from_numpy(x), torch.from_numpy(s.astype(np.float64)), torch.from_numpy(zp),
                axis, tdt,
            )
        )  # fmt: skip
        np.testing.assert_array_equal(ref.quantize_per_channel(x, s, zp, axis, dtype), want)


def test_dequantize():
    rng = np.random.default_rng(12)
    for _ in range(100):
        q = rng.integers(0, 256, int(rng.integers(1, 2000))).astype(np.uint8)
        s, zp = _scale(rng), int(rng.integers(0, 256))
        want = _qt(q, s, zp).dequantize().numpy()
        np.testing.assert_array_equal(ref.dequantize(q, s, zp), want)
        c = 7
        qc = rng.integers(-128, 128, (c, 5)).astype(np.int8)
        sc, zc = np.exp(rng.uniform(-8, 0, c)).astype(F32), rng.integers(-128, 128, c)
        want = _qt_pc(qc, sc, zc, 0).dequantize().numpy()
        np.testing.assert_array_equal(ref.dequantize(qc, sc, zc, axis=0), want)


def _binary_case(rng, t):
    n = int(rng.integers(1, 3000))
    sa = _scale(rng, -6, 0) if t % 4 else 2.0 ** -int(rng.integers(1, 10))
    # Equal or power-of-two-related scales make exact ties frequent.
    sb = sa if t % 3 else _scale(rng, -6, 0)
    so = sa * [2, 4, 0.5, 1][t % 4] if t % 5 else _scale(rng, -6, 0)
    za, zb, zo = (int(v) for v in rng.integers(0, 256, 3))
    qa = rng.integers(0, 256, n).astype(np.uint8)
    qb = rng.integers(0, 256, n).astype(np.uint8)
    return qa, sa, za, qb, sb, zb, so, zo


@pytest.mark.parametrize("relu", [False, True])
def test_add(engine, relu):
    width = _vector_width()
    if not width:
        pytest.skip("ATen vector width unknown on this CPU capability")
    torch.set_num_threads(1)  # one chunk: the scalar tail is the last numel % width elements
    rng = np.random.default_rng(13 + relu)
    op = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
    for t in range(300):
        qa, sa, za, qb, sb, zb, so, zo = _binary_case(rng, t)
        want = _ir(op(_qt(qa, sa, za), _qt(qb, sb, zb), so, zo))
        got = ref.add(qa, sa, za, qb, sb, zb, so, zo, relu=relu, vector_width=width)
        np.testing.assert_array_equal(got, want)
        head = qa.size // width * width
        got_vec = ref.add(qa, sa, za, qb, sb, zb, so, zo, relu=relu)
        np.testing.assert_array_equal(got_vec[:head], want[:head])


def test_add_naive_formula_is_wrong():
    """Seed 002: dequantize-add-quantize with plain float math is not what the kernel does."""
    rng = np.random.default_rng(15)
    diffs = 0
    for t in range(50):
        qa, sa, za, qb, sb, zb, so, zo = _binary_case(rng, t)
        qa, qb = qa[: qa.size // 64 * 64], qb[: qb.size // 64 * 64]
        c = ref.dequantize(qa, sa, za) + ref.dequantize(qb, sb, zb)
        naive = np.clip(np.round(c / F32(so)) + zo, 0, 255)
        diffs += int((naive != ref.add(qa, sa, za, qb, sb, zb, so, zo)).sum())
    assert diffs > 0


@pytest.mark.parametrize("relu", [False, True])
def test_mul(engine, relu):
    rng = np.random.default_rng(16 + relu)
    op = torch.ops.quantized.mul_relu if relu else torch.ops.quantized.mul
    for t in range(300):
        qa, sa, za, qb, sb, zb, so, zo = _binary_case(rng, t)
        so = so * [1, 64, 300][t % 3]
        want = _ir(op(_qt(qa, sa, za), _qt(qb, sb, zb), so, zo))
        np.testing.assert_array_equal(ref.mul(qa, sa, za, qb, sb, zb, so, zo, relu=relu), want)


def test_cat(engine):
    rng = np.random.default_rng(18)
    for t in range(200):
        k = int(rng.integers(1, 4))
        axis = int(rng.integers(0, 3))
        base = [int(v) for v in rng.integers(1, 9, 3)]
        qs, ss, zs, tts = [], [], [], []
        for _ in range(k):
            shape = list(base)
            shape[axis] = int(rng.integers(1, 9))
            q = rng.integers(0, 256, shape).astype(np.uint8)
            s = _scale(rng, -6, 0) if t % 2 else 2.0 ** -int(rng.integers(1, 8))
            z = int(rng.integers(0, 256))
            qs.append(q), ss.append(s), zs.append(z), tts.append(_qt(q, s, z))
        so = ss[0] * [1, 2, 0.5, 3][t % 4]
        zo = int(rng.integers(0, 256))
        want = _ir(torch.ops.quantized.cat(tts, axis, so, zo))
        np.testing.assert_array_equal(ref.cat(qs, ss, zs, so, zo, axis), want)


def _weights(rng, shape, per_channel, tie_friendly):
    cout = shape[0]
    q = rng.integers(-127, 128, shape).astype(np.int8)
    if per_channel:
        if tie_friendly:
            s = (2.0 ** -rng.integers(5, 9, cout)).astype(F32)
        else:
            s = np.exp(rng.uniform(-7, -3, cout)).astype(F32)
        return q, s, _qt_pc(q, s, np.zeros(cout, np.int64), 0)
    s = F32(2.0 ** -int(rng.integers(5, 9))) if tie_friendly else F32(np.exp(rng.uniform(-7, -3)))
    return q, np.array([s]), _qt(q, float(s), 0)


def _bias(rng, t, a, cout):
    if t % 5 == 0:
        return None
    if t % 7 == 0:
        return rng.standard_normal(cout).astype(F32)
    return (rng.integers(-3000, 3000, cout) * 0.5 * np.broadcast_to(a, (cout,))).astype(F32)


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_fbgemm(relu):
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"
    try:
        rng = np.random.default_rng(20 + relu)
        op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        for t in range(100):
            kind = t % 5
            k = int(rng.integers(1, 4))
            if kind == 4:  # depthwise: fbgemm's fast path when padding is (k - 1) / 2
                groups = cin = 8 * int(rng.integers(1, 3))
                cout = cin * int(rng.integers(1, 3))
                k = [3, 5][t // 5 % 2]
            else:
                groups = [1, 1, 2, 4][kind]
                cin = groups * int(rng.integers(1, 6))
                cout = groups * int(rng.integers(1, 6))
            h, w = (int(v) for v in rng.integers(k, 14, 2))
            per_channel = t % 2 == 0
            tie = t % 3 != 0
            xs = 2.0 ** -int(rng.integers(3, 8)) if tie else _scale(rng, -5, -1)
            xzp, ozp = (int(v) for v in rng.integers(0, 256, 2))
            xq = rng.integers(0, 256, (3, cin, h, w)).astype(np.uint8)
            wq, ws, wt = _weights(rng, (cout, cin // groups, k, k), per_channel, tie)
            a = ref.act_times_w_scale(xs, ws)
            os_ = float(F32(a.max() * [64, 200, 1000, 3.3][t % 4]))
            bias = _bias(rng, t, a, cout)
            stride = [int(rng.integers(1, 3))] * 2
            pad = [int(rng.integers(0, 2))] * 2 if kind != 4 else [(k - 1) // 2 * (t % 3 > 0)] * 2
            dil = [int(rng.integers(1, 3)) if h > 2 * k and w > 2 * k else 1] * 2
            packed = torch.ops.quantized.conv2d_prepack(
                wt, None if bias is None else torch.from_numpy(bias), stride, pad, dil, groups
            )
            want = _ir(op(_qt(xq, xs, xzp), packed, os_, ozp))
            got = ref.conv2d(
                xq, xs, xzp, wq, ws, 0, bias, os_, ozp, stride=stride, padding=pad,
                dilation=dil, groups=groups, per_channel=per_channel, relu=relu,
            )  # fmt: skip
            np.testing.assert_array_equal(got, want, err_msg=f"case {t}")
    finally:
        torch.backends.quantized.engine = old


needs_onednn = pytest.mark.skipif(
    "x86" not in ENGINES or not ref.onednn_conv_applies(0, 1),
    reason="the x86 engine uses oneDNN convolutions only on Linux with AVX512-VNNI",
)


@needs_onednn
@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_x86_engine_onednn(relu):
    """x86 engine, symmetric weights: oneDNN's brgemm / brdgmm depthwise / 1x1 kernels."""
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        rng = np.random.default_rng(40 + relu)
        op = torch.ops.quantized.conv2d_relu if relu else torch.ops.quantized.conv2d
        differs_from_fbgemm = 0
        for t in range(120):
            kind = t % 4
            k = int(rng.integers(1, 4))
            if kind == 1:  # depthwise (brdgmm_dw), multiplier 1 or 2
                groups = cin = 8 * int(rng.integers(1, 5))
                cout = cin * int(rng.integers(1, 3))
            elif kind == 2:
                groups = int(rng.integers(2, 5))
                cin, cout = (groups * int(v) for v in rng.integers(1, 5, 2))
            else:  # kind 3: 1x1 (brgconv_1x1)
                groups, k = 1, (k if kind == 0 else 1)
                cin, cout = (int(v) for v in rng.integers(1, 40, 2))
            h, w = (int(v) for v in rng.integers(k, 14, 2))
            per_channel = t % 4 != 3
            tie = t % 3 != 0
            xs = 2.0 ** -int(rng.integers(3, 8)) if tie else _scale(rng, -5, -1)
            xzp = int(rng.integers(0, 256)) if t % 7 else 0
            ozp = int(rng.integers(0, 256)) if t % 5 else 0
            xq = rng.integers(0, 256, (2, cin, h, w)).astype(np.uint8)
            wq, ws, wt = _weights(rng, (cout, cin // groups, k, k), per_channel, tie)
            a = ref.act_times_w_scale(xs, ws)
            os_ = float(F32(a.max() * [64, 200, 1000, 3.3, 16][t % 5]))
            bias = _bias(rng, t, a, cout)
            stride = [int(rng.integers(1, 3))] * 2
            pad = [int(rng.integers(0, 2))] * 2
            dil = [int(rng.integers(1, 3)) if h > 2 * k and w > 2 * k else 1] * 2
            packed = torch.ops.quantized.conv2d_prepack(
                wt, None if bias is None else torch.from_numpy(bias), stride, pad, dil, groups
            )
            want = _ir(op(_qt(xq, xs, xzp), packed, os_, ozp))
            kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups, relu=relu)
            got = ref.conv2d(xq, xs, xzp, wq, ws, 0, bias, os_, ozp, kernel="onednn", **kw)
            np.testing.assert_array_equal(got, want, err_msg=f"case {t}")
            fb = ref.conv2d(xq, xs, xzp, wq, ws, 0, bias, os_, ozp, per_channel=per_channel, **kw)
            differs_from_fbgemm += int((fb != want).sum())
        assert differs_from_fbgemm > 0  # the two engines really round differently here
    finally:
        torch.backends.quantized.engine = old


def test_onednn_requantize_adds_zero_point_before_rounding():
    # y = 2.5 exactly: oneDNN rounds 2.5 + 1 = 3.5 -> 4; fbgemm rounds 2.5 -> 2, then + 1 = 3.
    acc, bias = np.array([5]), None
    assert ref.onednn_requantize(acc, 0.5, [1.0], bias, 1.0, 1).tolist() == [4]
    assert ref.fbgemm_requantize(acc, [0.5], bias, 1.0, 1, per_channel=False).tolist() == [3]


def test_onednn_conv_dispatch_rule():
    assert ref.onednn_conv_applies([0, 0], 1, vnni=True, linux=True)
    assert not ref.onednn_conv_applies([0, 1], 1, vnni=True, linux=True)  # asymmetric weights
    assert not ref.onednn_conv_applies(0, 101, vnni=True, linux=True)
    assert not ref.onednn_conv_applies(0, 1, vnni=False, linux=True)


@pytest.mark.parametrize("relu", [False, True])
def test_linear(engine, relu):
    rng = np.random.default_rng(30 + relu)
    op = torch.ops.quantized.linear_relu if relu else torch.ops.quantized.linear
    for t in range(150):
        m, kdim, n = (int(v) for v in rng.integers(1, 70, 3))
        per_channel = t % 2 == 0
        tie = t % 3 != 0
        xs = 2.0 ** -int(rng.integers(3, 8)) if tie else _scale(rng, -5, -1)
        xzp, ozp = (int(v) for v in rng.integers(0, 256, 2))
        xq = rng.integers(0, 256, (m, kdim)).astype(np.uint8)
        wq, ws, wt = _weights(rng, (n, kdim), per_channel, tie)
        a = ref.act_times_w_scale(xs, ws)
        os_ = float(F32(a.max() * [16, 100, 1000, 3.3][t % 4]))
        bias = _bias(rng, t, a, n)
        packed = torch.ops.quantized.linear_prepack(
            wt, None if bias is None else torch.from_numpy(bias)
        )
        want = _ir(op(_qt(xq, xs, xzp), packed, os_, ozp))
        got = ref.linear(xq, xs, xzp, wq, ws, 0, bias, os_, ozp, per_channel=per_channel, relu=relu)
        np.testing.assert_array_equal(got, want, err_msg=f"case {t}")


def test_fbgemm_requantize_bias_is_added_before_scaling():
    """A float bias enters as bias / (s_in * s_w) before the output multiply."""
    a = np.array([0.5], F32)
    # acc=1, bias=0.25 -> 1 + 0.5 = 1.5; * (0.5 / 0.5) = 1.5 -> rint 2.
    got = ref.fbgemm_requantize(np.array([1]), a, np.array([0.25], F32), 0.5, 0, per_channel=False)
    assert got.tolist() == [2]


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="scale"):
        ref.quantize_per_tensor(np.zeros(3, F32), 0.0, 0)
    with pytest.raises(ValueError, match="zero point"):
        ref.quantize_per_tensor(np.zeros(3, F32), 1.0, 300, "uint8")
    with pytest.raises(ValueError, match="groups"):
        ref.conv2d_accumulate(np.zeros((1, 3, 4, 4)), 0, np.zeros((2, 2, 1, 1)), groups=1)


def test_dialect_float_rounding_matches_torch():
    """qnn.quantize / qnn.requantize with rounding="float" (numpy and compiled) equal torch."""
    from tvm_qnn_ext import op as qnn
    from tvm_qnn_ext.quantization import quantize, requantize
    from tvm_qnn_ext.testing.batch import Case, run_cases

    rng = np.random.default_rng(40)
    cases, wants = [], []
    for _ in range(40):
        s = _scale(rng)
        zp = int(rng.integers(0, 256))
        x = (rng.standard_normal(257) * s * 100).astype(F32)
        x[::2] = (np.round(x[::2] / s * 2) / 2 * s).astype(F32)  # ties
        want = _ir(torch.quantize_per_tensor(torch.from_numpy(x), s, zp, torch.quint8))
        np.testing.assert_array_equal(quantize(x, s, zp, "uint8", rounding="float"), want)
        cases.append(
            Case([x], lambda v, s=s, zp=zp: qnn.quantize(v, s, zp, "uint8", rounding="float"))
        )
        wants.append(want)
        c = 5
        sc = np.exp(rng.uniform(-8, 1, c)).astype(F32)
        zc = rng.integers(-128, 128, c)
        xc = (rng.standard_normal((c, 40)) * sc[:, None] * 100).astype(F32)
        xc[:, ::2] = (np.round(xc[:, ::2] / sc[:, None] * 2) / 2 * sc[:, None]).astype(F32)
        want = _ir(
            torch.quantize_per_channel(
                torch.from_numpy(xc), torch.from_numpy(sc.astype(np.float64)),
                torch.from_numpy(zc), 0, torch.qint8,
            )
        )  # fmt: skip
        np.testing.assert_array_equal(quantize(xc, sc, zc, "int8", 0, rounding="float"), want)
        cases.append(
            Case([xc], lambda v, sc=sc, zc=zc: qnn.quantize(v, sc, zc, "int8", 0, rounding="float"))
        )
        wants.append(want)
        # requantize of a bias-free accumulator == fbgemm's epilogue
        a = ref.act_times_w_scale(_scale(rng, -5, -1), np.exp(rng.uniform(-7, -3, 6)).astype(F32))
        so, zo = float(F32(a.max() * 50)), int(rng.integers(0, 256))
        acc = rng.integers(-20000, 20000, (3, 6)).astype(np.int32)
        want = ref.fbgemm_requantize(acc, a, None, so, zo, per_channel=True, axis=1)
        got = requantize(acc, a, 0, so, zo, "uint8", rounding="float", axis=1)
        np.testing.assert_array_equal(got, want)
        cases.append(
            Case(
                [acc],
                lambda v, a=a, so=so, zo=zo: qnn.requantize(
                    v, a, 0, [so] * a.size, zo, "uint8", axis=1, rounding="float"
                ),
            )
        )
        wants.append(want)
    # generic x86-64 has no FMA; the native target lets LLVM contract multiply-adds
    for target in ("llvm", "native"):
        for got, want in zip(run_cases(cases, target), wants, strict=True):
            np.testing.assert_array_equal(got, want, err_msg=target)


@pytest.mark.parametrize("relu", [False, True])
def test_batch_norm(engine, relu):
    rng = np.random.default_rng(50 + relu)
    op = torch.ops.quantized.batch_norm2d_relu if relu else torch.ops.quantized.batch_norm2d
    for t in range(60):
        c = [16, 64, 128, 80, 3, 200][t % 6]
        w, b, m = (torch.from_numpy(rng.standard_normal(c).astype(F32)) for _ in range(3))
        v = torch.from_numpy(rng.uniform(0.1, 3, c).astype(F32))
        si, so = _scale(rng, -5, -1), _scale(rng, -5, -1)
        zi, zo = (int(z) for z in rng.integers(0, 256, 2))
        q = rng.integers(0, 256, (2, c, 3, 4)).astype(np.uint8)
        want = _ir(op(_qt(q, si, zi), w, b, m, v, 1e-3, so, zo))
        alpha, beta = ref.batch_norm_params(w, b, m, v, 1e-3, si, so)
        np.testing.assert_array_equal(ref.batch_norm(q, alpha, beta, zi, zo, relu=relu), want)


def test_global_avg_pool(engine):
    rng = np.random.default_rng(52)
    for t in range(200):
        c, h, w = (int(v) for v in rng.integers(1, 20, 3))
        zp = int(rng.integers(0, 256))
        q = rng.integers(0, 256, (2, c, h, w)).astype(np.uint8)
        if t % 2:  # sums near multiples of n / 2
            q = np.clip(q % 3 + zp, 0, 255).astype(np.uint8)
        got = ref.global_avg_pool(q)
        want = _ir(torch.nn.functional.adaptive_avg_pool2d(_qt(q, 0.05, zp), 1))
        np.testing.assert_array_equal(got, want)


def test_quantize_decomposed():
    """PT2E's quantized_decomposed.quantize_per_tensor rounds before adding the zero point."""
    import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers the ops)

    op = torch.ops.quantized_decomposed.quantize_per_tensor
    rng = np.random.default_rng(60)
    for t in range(100):
        s, zp = _scale(rng), int(rng.integers(0, 256))
        x = (rng.standard_normal(500) * s * 100).astype(F32)
        if t % 2:
            x = (np.round(x / s * 2) / 2 * s).astype(F32)
        want = op(torch.from_numpy(x), s, zp, 0, 255, torch.uint8).numpy()
        np.testing.assert_array_equal(ref.quantize_decomposed(x, s, zp, 0, 255, "uint8"), want)
