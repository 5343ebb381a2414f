"""Elementwise ops on quantized tensors (sigmoid, tanh, hardswish, hardsigmoid, relu6, hardtanh,
elu) and max pooling with ``ceil_mode`` in eager and FX models, bit-exact with PyTorch on
odd-sized tensors (so ATen's vector loops have scalar tails), and the error for an op whose
vector and scalar kernels disagree."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.ao.quantization as tq  # noqa: E402
from test_frontend_pytorch import _inputs, _layer_mismatches  # noqa: E402

from tvm_qnn_ext.frontend.pytorch import UnsupportedPyTorchModel, from_pytorch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
SHAPE = (3, 5, 7, 9)  # 315 elements per sample: not a multiple of any vector width


class Activations(torch.nn.Module):
    """conv -> each activation in turn (modules and functions), quantized throughout."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = torch.nn.Conv2d(5, 5, 3, padding=1)
        self.hardswish = torch.nn.Hardswish()
        self.elu = torch.nn.ELU()
        self.relu6 = torch.nn.ReLU6()
        self.sigmoid = torch.nn.Sigmoid()

    def forward(self, x):
        x = self.conv(self.quant(x))
        a = self.hardswish(x)
        b = self.elu(x)
        c = torch.nn.functional.hardtanh(self.relu6(x), -0.5, 0.75)
        d = self.sigmoid(x)
        e = torch.tanh(x)
        f = torch.nn.functional.hardsigmoid(x)
        return a, b, c, d, e, f


def _calibrated(mode: str, seed: int):
    torch.manual_seed(seed)
    model = Activations().eval()
    calib = _inputs((8, 5, 7, 9), seed)
    if mode == "eager":
        model.qconfig = tq.get_default_qconfig("fbgemm")
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            model(calib)
        return tq.convert(model)
    from torch.ao.quantization.fx.custom_config import PrepareCustomConfig
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    keep = PrepareCustomConfig().set_output_quantized_indexes(list(range(6)))
    model.quant = torch.nn.Identity()
    prepared = prepare_fx(model, tq.get_default_qconfig_mapping("fbgemm"), (calib,), keep)
    with torch.no_grad():
        prepared(calib)
    return convert_fx(prepared)


@pytest.mark.parametrize("mode", ["eager", "fx"])
def test_activations_bit_exact(mode):
    for seed in range(3):
        qmodel = _calibrated(mode, seed)
        x = _inputs((100,) + SHAPE[1:], seed + 10) * 3
        mismatches, got = _layer_mismatches(qmodel, x)
        assert mismatches == 0, f"seed {seed}"
        assert all(len(np.unique(g)) > 5 for g in got)


def test_position_dependent_op_is_refused():
    """F.leaky_relu on a quantized tensor rounds differently in ATen's vector and scalar loops
    for some scales: such a model is refused instead of being off by one at some positions."""

    class Leaky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = tq.QuantStub()

        def forward(self, x):
            return torch.nn.functional.leaky_relu(self.quant(x), 0.1)

    found = False
    for seed in range(20):
        model = Leaky().eval()
        model.qconfig = tq.get_default_qconfig("fbgemm")
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            model(_inputs((4, 3, 8, 8), seed) * (seed + 1))
        tq.convert(model, inplace=True)
        try:
            from_pytorch(model, (_inputs((1, 3, 8, 8), 0),))
        except UnsupportedPyTorchModel as e:
            assert "vector and scalar kernels differ" in str(e)
            found = True
            break
    assert found


class CeilPools(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv = torch.nn.Conv2d(5, 6, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(3, 2, ceil_mode=True)

    def forward(self, x):
        x = self.conv(self.quant(x))
        y = torch.nn.functional.max_pool2d(x, 2, 3, 1, ceil_mode=True)
        return self.pool(x), y


@pytest.mark.parametrize("hw", [(7, 9), (8, 8), (11, 6)])
def test_max_pool_ceil_mode_bit_exact(hw):
    torch.manual_seed(0)
    model = CeilPools().eval()
    model.qconfig = tq.get_default_qconfig("fbgemm")
    tq.prepare(model, inplace=True)
    with torch.no_grad():
        model(_inputs((8, 5) + hw, 0))
    tq.convert(model, inplace=True)
    x = _inputs((100, 5) + hw, 1)
    mismatches, got = _layer_mismatches(model, x)
    assert mismatches == 0
    with torch.no_grad():
        want = model(x)
    # graph order: the functional pool, then the module; both have the ceil_mode sizes
    assert [g.shape for g in got[-2:]] == [tuple(w.shape) for w in want[::-1]]


class Depthwise(torch.nn.Module):
    def __init__(self, k: int, stride: int, mult: int):
        super().__init__()
        self.quant = tq.QuantStub()
        self.dw = torch.nn.Conv2d(16, 16 * mult, k, stride, (k - 1) // 2, groups=16)

    def forward(self, x):
        return self.dw(self.quant(x))


@pytest.mark.parametrize(("k", "stride", "mult"), [(3, 1, 1), (5, 2, 2)])
def test_fbgemm_depthwise_int16_saturation_bit_exact(k, stride, mult):
    """Full-range activations (no reduce_range) and large weights make fbgemm's depthwise tap
    pairs leave int16; the compiled model saturates them the same way."""
    torch.manual_seed(k)
    model = Depthwise(k, stride, mult).eval()
    with torch.no_grad():
        model.dw.weight.copy_(torch.randn_like(model.dw.weight).sign())  # all taps at +-max
    full_range = tq.QConfig(
        activation=tq.MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=False),
        weight=tq.default_per_channel_weight_observer,
    )
    model.qconfig = full_range
    tq.prepare(model, inplace=True)
    x = _inputs((100, 16, 9, 9), 1) * 2 + 2  # mostly above the zero point: large uint8 values
    with torch.no_grad():
        model(x)
    tq.convert(model, inplace=True)
    mismatches, _ = _layer_mismatches(model, x)
    assert mismatches == 0
    # the exact (unsaturated) sum really differs here
    from tvm_qnn_ext.quantization import pytorch as ref

    qx = model.quant(x)
    w = model.dw.weight()
    args = (qx.int_repr().numpy(), qx.q_zero_point(), w.int_repr().numpy(), 0)
    exact = ref.conv2d_accumulate(*args, stride=(stride,) * 2, padding=((k - 1) // 2,) * 2,
                                  groups=16)  # fmt: skip
    saturated = ref._depthwise_saturating_accumulate(*args, (stride, stride))
    assert (exact != saturated).sum() > 100
