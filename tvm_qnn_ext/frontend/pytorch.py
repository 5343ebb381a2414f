"""PyTorch importer: quantized ``nn.Module`` / FX ``GraphModule`` / PT2E ``ExportedProgram`` -> QNN.

* Eager-mode converted models (``torch.ao.quantization.convert``) are traced with
  ``torch.fx.symbolic_trace``; quantized modules stay leaves and ``FloatFunctional`` calls become
  ``torch.ops.quantized.*`` nodes.  FX-mode models (``convert_fx``) are walked as they are.
  Both map onto integer ops whose float epilogues are PyTorch's own arithmetic
  (:mod:`tvm_qnn_ext.quantization.pytorch`), so outputs match bit for bit.  Each quantized conv
  and linear is matched to the kernel its weights were prepacked for: fbgemm, or oneDNN for
  convolutions prepacked under the x86 engine on AVX512-VNNI CPUs (see ``engine``).
* PT2E models (``convert_pt2e``, or a saved ``ExportedProgram``) carry
  ``quantized_decomposed`` quantize/dequantize nodes around float aten ops.  A
  ``dequantize -> conv/linear [-> relu] -> quantize`` region becomes an integer convolution or
  dense layer; every other float op runs in float between ``qnn.dequantize`` and
  ``qnn.quantize``.  PT2E reference numerics are float, so results agree within one step.

Graphs are NCHW throughout, as in PyTorch.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import torch
import tvm
from tvm import relax

from ..op import conv2d, dense, dequantize, max_pool2d, multiply, quantize
from ..op import pytorch_epilogue as pe
from ..op.activation import lookup_table
from ..quantization import dtype_range
from ..quantization import pytorch as ref

# Elementwise ops on quantized tensors, imported as lookup tables (see _Converter._q_unary).
_UNARY_MODULES = (
    torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.Hardsigmoid, torch.nn.Hardswish, torch.nn.ReLU6,
    torch.nn.Hardtanh, torch.nn.ELU, torch.nn.LeakyReLU,
)  # fmt: skip
_UNARY_FUNCTIONS = (
    "sigmoid", "sigmoid_", "tanh", "tanh_", "hardsigmoid", "hardswish", "hardtanh", "hardtanh_",
    "relu6", "elu", "leaky_relu", "quantized.hardswish", "quantized.elu", "quantized.leaky_relu",
)  # fmt: skip
_QDTYPES = {torch.quint8: "uint8", torch.qint8: "int8", torch.uint8: "uint8", torch.int8: "int8"}


class UnsupportedPyTorchModel(NotImplementedError):
    """The model holds ops this importer cannot translate (all are listed)."""


ENGINES = ("auto", "fbgemm", "x86")


def from_pytorch(
    model,
    example_inputs: Sequence[torch.Tensor] | torch.Tensor | None = None,
    *,
    engine: str = "auto",
) -> tvm.IRModule:
    """Import a quantized PyTorch model as a QNN IRModule with one function ``main``.

    ``model`` is an eager-mode or FX-mode converted ``nn.Module``, a PT2E-converted
    ``GraphModule`` or a ``torch.export.ExportedProgram``; ``example_inputs`` fix the static
    input shapes (an ExportedProgram's own example inputs are the default).  A float
    (unquantized) model is refused.

    ``engine`` is the ``torch.backends.quantized.engine`` the model was converted under, which
    decides each conv's kernel (weights are prepacked for one kernel at convert time).  The
    default ``"auto"`` asks each prepacked conv / linear which kernel it belongs to;
    ``"fbgemm"`` or ``"x86"`` state it instead (``"x86"`` means oneDNN for symmetric-weight
    convolutions with ``groups <= 100`` on a Linux CPU with AVX512-VNNI, fbgemm otherwise).
    """
    if engine not in ENGINES:
        raise ValueError(f"from_pytorch: engine must be one of {ENGINES}, got {engine!r}")
    if isinstance(model, torch.export.ExportedProgram):
        if example_inputs is None:
            example_inputs = model.example_inputs[0]
        model = model.module()
    if example_inputs is None:
        raise ValueError("from_pytorch: example_inputs are required to fix the input shapes")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"from_pytorch: expected an nn.Module or ExportedProgram, got {type(model)}"
        )
    if not isinstance(model, torch.fx.GraphModule):
        model = model.eval()  # exported GraphModules refuse .eval(); they are inference graphs
    gm = model if isinstance(model, torch.fx.GraphModule) else _trace(model)
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(*example_inputs)
    return _Converter(gm, engine).convert()


def _trace(model: torch.nn.Module) -> torch.fx.GraphModule:
    try:
        return torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001  (tracing errors come in many types)
        raise UnsupportedPyTorchModel(
            f"from_pytorch: could not trace {type(model).__name__} with torch.fx: {e}"
        ) from e


def _meta(node: torch.fx.Node):
    tm = node.meta.get("tensor_meta")
    if tm is None:
        raise UnsupportedPyTorchModel(f"from_pytorch: no shape information for node {node.name}")
    return tm


def _qparams(node: torch.fx.Node) -> tuple[float, int]:
    tm = _meta(node)
    if not tm.is_quantized or tm.qparams.get("qscheme") not in (
        torch.per_tensor_affine,
        torch.per_tensor_symmetric,
    ):
        raise UnsupportedPyTorchModel(
            f"from_pytorch: {node.name} must be a per-tensor quantized tensor, got {tm.dtype}"
        )
    return float(tm.qparams["scale"]), int(tm.qparams["zero_point"])


def _arg(node: torch.fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _scalar(v) -> float:
    return v.item() if isinstance(v, torch.Tensor) else v


def _qweight(w: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(int8 values, scales, zero points, per_channel) of a quantized weight."""
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if w.q_per_channel_axis() != 0:
            raise UnsupportedPyTorchModel("from_pytorch: per-channel weights must use axis 0")
        s = w.q_per_channel_scales().numpy().astype(np.float32)
        z = w.q_per_channel_zero_points().numpy().astype(np.int64)
        return w.int_repr().numpy(), s, z, True
    return (
        w.int_repr().numpy(),
        np.array([w.q_scale()], np.float32),
        np.array([w.q_zero_point()], np.int64),
        False,
    )


def _const(a: np.ndarray) -> relax.Constant:
    a = np.ascontiguousarray(a)
    return relax.const(a, str(a.dtype))


# ---- the converter -----------------------------------------------------------------------------


class _Converter:
    def __init__(self, gm: torch.fx.GraphModule, engine: str = "auto"):
        self.gm = gm
        self.engine = engine
        self.modules = dict(gm.named_modules())
        self.env: dict[torch.fx.Node, object] = {}
        self.bb = relax.BlockBuilder()
        self.pt2e = any(_target_name(n).startswith("quantized_decomposed") for n in gm.graph.nodes)
        self.skip: set[torch.fx.Node] = set()

    # -- dispatch tables

    def _module_handler(self, node) -> Callable | None:
        import torch.ao.nn.intrinsic.quantized as nniq
        import torch.ao.nn.quantized as nnq

        m = self.modules[node.target]
        if type(m).__name__ == "GuardsFn":  # torch.export's input-shape guards: nothing to do
            return lambda n: None
        table = [
            ((nnq.Quantize,), self._m_quantize),
            ((nnq.DeQuantize,), self._m_dequantize),
            ((nniq.ConvReLU2d, nnq.Conv2d), self._m_conv),
            ((nniq.LinearReLU, nnq.Linear), self._m_linear),
            ((nniq.BNReLU2d, nnq.BatchNorm2d), self._m_batch_norm),
            # before ReLU: nnq.ReLU6 subclasses torch.nn.ReLU
            (_UNARY_MODULES + (nnq.ReLU6, nnq.Hardswish, nnq.ELU, nnq.LeakyReLU), self._q_unary),
            ((torch.nn.ReLU,), self._relu),
            ((torch.nn.MaxPool2d,), self._m_max_pool),
            ((torch.nn.AdaptiveAvgPool2d,), self._m_adaptive_avg_pool),
            ((torch.nn.Flatten, torch.nn.Identity, torch.nn.Dropout), self._reshape_like),
            ((torch.nn.ZeroPad2d, torch.nn.ConstantPad2d), self._m_pad),
        ]
        for types, fn in table:
            if isinstance(m, types):
                return fn
        return None

    def _function_handler(self, node) -> Callable | None:
        name = _target_name(node)
        if self.pt2e:
            return self._pt2e_handler(node, name)
        table = {
            "quantized.add": lambda n: self._q_add(n, False),
            "quantized.add_relu": lambda n: self._q_add(n, True),
            "quantized.mul": lambda n: self._q_mul(n, False),
            "quantized.mul_relu": lambda n: self._q_mul(n, True),
            "quantized.cat": self._q_cat,
            "quantize_per_tensor": self._f_quantize,
            "dequantize": self._f_dequantize,
            "relu": self._relu,
            "relu_": self._relu,
            "flatten": self._reshape_like,
            "reshape": self._reshape_like,
            "view": self._reshape_like,
            "contiguous": self._reshape_like,
            "permute": self._permute,
            "max_pool2d": self._f_max_pool,
            "adaptive_avg_pool2d": self._f_adaptive_avg_pool,
            "pad": self._f_pad,
        }
        table.update({f: self._q_unary for f in _UNARY_FUNCTIONS})
        return table.get(name)

    def handler(self, node) -> Callable | None:
        if node.op in ("placeholder", "output", "get_attr"):
            return getattr(self, f"_{node.op}")
        if node.op == "call_module":
            return self._module_handler(node)
        if node.op in ("call_function", "call_method"):
            return self._function_handler(node)
        return None

    def convert(self) -> tvm.IRModule:
        self._require_quantized()
        self._refuse_dynamic_quantization()
        missing = Counter(
            _describe(n, self.modules)
            for n in self.gm.graph.nodes
            if n not in self.skip and self.handler(n) is None
        )
        if missing:
            listed = ", ".join(f"{k} x{v}" for k, v in sorted(missing.items()))
            raise UnsupportedPyTorchModel(f"from_pytorch: unsupported PyTorch ops: {listed}")
        params = [
            relax.Var(n.name, relax.TensorType(list(_meta(n).shape), _input_dtype(n)))
            for n in self.gm.graph.nodes
            if n.op == "placeholder"
        ]
        self.params = iter(params)
        with self.bb.function("main", params):
            with self.bb.dataflow():
                for node in self.gm.graph.nodes:
                    if node in self.skip:
                        continue
                    out = self.handler(node)(node)
                    if isinstance(out, relax.Expr) and not isinstance(out, relax.Var):
                        out = self.bb.emit(out)
                    self.env[node] = out
                result = self.bb.emit_output(self.result)
            self.bb.emit_func_output(result)
        return self.bb.get()

    def _require_quantized(self):
        import torch.ao.nn.quantized as nnq

        quantized = self.pt2e or any(
            isinstance(m, nnq.Quantize) or type(m).__module__.startswith("torch.ao.nn.quantized")
            for m in self.modules.values()
        )
        quantized = quantized or any(
            _target_name(n) in ("quantize_per_tensor", "quantized.add") for n in self.gm.graph.nodes
        )
        if not quantized:
            raise ValueError(
                "from_pytorch: the model is a float (unquantized) model; quantize it first "
                "(torch.ao.quantization convert / convert_fx, or torchao convert_pt2e)"
            )

    def _refuse_dynamic_quantization(self):
        dynamic = [
            n.name
            for n in self.gm.graph.nodes
            if _target_name(n).startswith("quantized_decomposed.choose_qparams")
            or _target_name(n).startswith("quantized.linear_dynamic")
            or (n.op == "call_module" and "dynamic" in type(self.modules[n.target]).__module__)
        ]
        if dynamic:
            raise UnsupportedPyTorchModel(
                "from_pytorch: dynamic quantization (activation scales chosen at run time by "
                f"{', '.join(dynamic[:4])}{', ...' if len(dynamic) > 4 else ''}) is not "
                "supported; quantize statically (calibrated activation scales)"
            )

    # -- graph plumbing

    def x(self, arg):
        return self.env[arg] if isinstance(arg, torch.fx.Node) else arg

    def _placeholder(self, node):
        return next(self.params)

    def _get_attr(self, node):
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj

    def _output(self, node):
        outs = node.args[0]
        outs = outs if isinstance(outs, (tuple, list)) else (outs,)
        exprs = [self.x(o) for o in outs]
        self.result = exprs[0] if len(exprs) == 1 else relax.Tuple(exprs)
        return None

    # -- eager / FX handlers

    def _m_quantize(self, node):
        m = self.modules[node.target]
        return quantize(
            self.x(node.args[0]),
            float(m.scale),
            int(m.zero_point),
            _QDTYPES[m.dtype],
            rounding="float",
        )

    def _f_quantize(self, node):
        x, scale, zp, dtype = (self.x(a) for a in node.args[:4])
        return quantize(
            x, float(_scalar(scale)), int(_scalar(zp)), _QDTYPES[dtype], rounding="float"
        )

    def _m_dequantize(self, node):
        return self._dequantize_input(node.args[0])

    def _f_dequantize(self, node):
        return self._dequantize_input(node.args[0])

    def _dequantize_input(self, arg):
        s, z = _qparams(arg)
        return dequantize(self.x(arg), s, z)

    def _m_conv(self, node):

        m = self.modules[node.target]
        if m.padding_mode != "zeros":
            raise UnsupportedPyTorchModel(
                f"from_pytorch: {node.target}: padding_mode {m.padding_mode}"
            )
        x = node.args[0]
        s_in, z_in = _qparams(x)
        w, ws, wz, per_channel = _qweight(m.weight())
        p = [int(v) for v in m.padding]
        kernel = self._conv_kernel(node, m, wz)
        stride, dil = [int(v) for v in m.stride], [int(v) for v in m.dilation]
        fast = ref.depthwise_fast_path(int(m.in_channels), w.shape, stride, p, dil, int(m.groups))
        if kernel == "fbgemm" and fast:  # tap pairs saturate to int16 there
            acc = self.bb.emit(
                pe.fbgemm_depthwise_conv2d(
                    self.x(x),
                    w,
                    strides=stride,
                    input_zero_point=z_in,
                    kernel_zero_point=[int(v) for v in wz] if per_channel else int(wz[0]),
                )  # fmt: skip
            )
            return self._conv_epilogue(node, m, acc, s_in, ws, per_channel, kernel)
        acc = self.bb.emit(
            conv2d(
                self.x(x),
                _const(w),
                strides=[int(v) for v in m.stride],
                padding=(p[0], p[1], p[0], p[1]),
                dilation=[int(v) for v in m.dilation],
                groups=int(m.groups),
                data_layout="NCHW",
                kernel_layout="OIHW",
                input_zero_point=z_in,
                kernel_zero_point=[int(v) for v in wz] if per_channel else int(wz[0]),
            )
        )
        return self._conv_epilogue(node, m, acc, s_in, ws, per_channel, kernel)

    def _conv_epilogue(self, node, m, acc, s_in, ws, per_channel, kernel):
        import torch.ao.nn.intrinsic.quantized as nniq

        relu = isinstance(m, nniq.ConvReLU2d)
        if kernel == "onednn":
            b = m.bias()
            return pe.onednn_requantize(
                acc, None if b is None else _const(b.detach().numpy().astype(np.float32)),
                input_scale=s_in, weight_scales=ws, output_scale=float(m.scale),
                output_zero_point=int(m.zero_point), axis=1, relu=relu,
            )  # fmt: skip
        return self._epilogue(
            acc, m.bias(), s_in, ws, per_channel, float(m.scale), int(m.zero_point), 1, relu
        )

    def _conv_kernel(self, node, m, weight_zero_points) -> str:
        """ "fbgemm" or "onednn": the kernel ``m``'s weights were prepacked for."""
        if self.engine == "fbgemm":
            return "fbgemm"
        if self.engine == "x86":
            return "onednn" if ref.onednn_conv_applies(weight_zero_points, m.groups) else "fbgemm"
        kernel = _prepacked_kernel(m, conv=True)
        if kernel not in ("fbgemm", "onednn"):
            raise UnsupportedPyTorchModel(
                f"from_pytorch: {node.target} was prepacked for the {kernel} engine; supported "
                "engines are fbgemm and x86 (convert the model under one of them)"
            )
        return kernel

    def _m_linear(self, node):
        import torch.ao.nn.intrinsic.quantized as nniq

        m = self.modules[node.target]
        kernel = "fbgemm" if self.engine != "auto" else _prepacked_kernel(m, conv=False)
        if kernel != "fbgemm":
            raise UnsupportedPyTorchModel(
                f"from_pytorch: {node.target} was prepacked for the {kernel} engine; quantized "
                "linear layers are supported from the fbgemm and x86 engines"
            )
        x = node.args[0]
        s_in, z_in = _qparams(x)
        w, ws, wz, per_channel = _qweight(m.weight())
        acc = self.bb.emit(
            dense(
                self.x(x),
                _const(w),
                input_zero_point=z_in,
                kernel_zero_point=[int(v) for v in wz] if per_channel else int(wz[0]),
            )
        )
        return self._epilogue(
            acc, m.bias(), s_in, ws, per_channel, float(m.scale), int(m.zero_point), -1,
            isinstance(m, nniq.LinearReLU),
        )  # fmt: skip

    def _epilogue(
        self, acc, bias, s_in, ws, per_channel, s_out, z_out, axis, relu, out_dtype="uint8"
    ):
        b = None if bias is None else _const(bias.detach().numpy().astype(np.float32))
        return pe.fbgemm_requantize(
            acc,
            b,
            act_times_w_scale=ref.act_times_w_scale(s_in, ws),
            output_scale=s_out,
            output_zero_point=z_out,
            per_channel=per_channel,
            axis=axis,
            relu=relu,
            out_dtype=out_dtype,
        )

    def _m_batch_norm(self, node):
        import torch.ao.nn.intrinsic.quantized as nniq

        m = self.modules[node.target]
        x = node.args[0]
        s_in, z_in = _qparams(x)
        w = m.weight.detach() if m.weight is not None else torch.ones(m.num_features)
        b = m.bias.detach() if m.bias is not None else torch.zeros(m.num_features)
        alpha, beta = ref.batch_norm_params(
            w, b, m.running_mean, m.running_var, m.eps, s_in, float(m.scale)
        )
        return pe.torch_batch_norm(
            self.x(x), alpha, beta, input_zero_point=z_in, output_zero_point=int(m.zero_point),
            relu=isinstance(m, nniq.BNReLU2d),
        )  # fmt: skip

    def _relu(self, node):
        x = node.args[0]
        if not _meta(x).is_quantized:
            return relax.op.nn.relu(self.x(x))
        _, z = _qparams(x)
        return relax.op.maximum(self.x(x), relax.const(z, _QDTYPES[_meta(x).dtype]))

    def _q_unary(self, node):
        """An elementwise op on a quantized tensor, as a 256-entry table of PyTorch's own results
        for every input value (it runs the op once on them).  The table is only used when the
        op's vectorized and scalar paths agree on every entry, so element position cannot
        matter."""
        x = node.args[0]
        if not _meta(x).is_quantized:
            raise UnsupportedPyTorchModel(f"from_pytorch: {node.name}: float {_describe(node, {})}")
        s, z = _qparams(x)
        dtype = _QDTYPES[_meta(x).dtype]
        values = torch.arange(256, dtype=torch.int32) + (0 if dtype == "uint8" else -128)
        values = values.to(torch.uint8 if dtype == "uint8" else torch.int8)
        every = torch._make_per_tensor_quantized_tensor(values, s, z)
        rest = [self.x(a) for a in node.args[1:]]
        if any(isinstance(a, (torch.fx.Node, relax.Expr)) for a in rest):
            raise UnsupportedPyTorchModel(f"from_pytorch: {node.name}: non-constant arguments")

        def run(t):
            if node.op == "call_module":
                return self.modules[node.target](t)
            if node.op == "call_method":
                return getattr(t, node.target)(*rest, **node.kwargs)
            return node.target(t, *rest, **node.kwargs)

        with torch.no_grad():
            vector = run(every)
            scalar = torch.stack([run(every[i : i + 1]).int_repr()[0] for i in range(256)])
        if not vector.is_quantized or vector.qscheme() != torch.per_tensor_affine:
            raise UnsupportedPyTorchModel(f"from_pytorch: {node.name}: output is not quantized")
        table = vector.int_repr()
        if not torch.equal(table, scalar):
            raise UnsupportedPyTorchModel(
                f"from_pytorch: {node.name} ({_describe(node, self.modules)}): PyTorch's vector "
                "and scalar kernels differ on some inputs, so its results depend on position"
            )
        out_dtype = _QDTYPES[vector.dtype]
        if out_dtype != dtype:
            raise UnsupportedPyTorchModel(f"from_pytorch: {node.name}: {dtype} -> {out_dtype}")
        return lookup_table(self.x(x), table.numpy().astype(np.int64), out_dtype)

    def _pool_args(self, kernel, stride, padding, dilation, node):
        """Kernel, strides and (top, left, bottom, right) padding.  With ``ceil_mode`` the last
        window may run past the padded input; the extra bottom/right padding that makes room
        for it follows from the output shape PyTorch computed (padding never wins a max)."""
        pair = lambda v: (int(v), int(v)) if isinstance(v, int) else tuple(int(t) for t in v)
        if pair(dilation) != (1, 1):
            raise UnsupportedPyTorchModel(f"from_pytorch: {node.name}: pool dilation unsupported")
        k = pair(kernel)
        s = pair(stride) if stride not in (None, []) else k
        p = pair(padding)
        (h, w), (oh, ow) = _meta(node.args[0]).shape[-2:], _meta(node).shape[-2:]
        extra = [max(0, (o - 1) * st + kk - (n + 2 * pp)) for o, st, kk, n, pp in
                 zip((oh, ow), s, k, (h, w), p, strict=True)]  # fmt: skip
        return k, s, (p[0], p[1], p[0] + extra[0], p[1] + extra[1])

    def _max_pool(self, x, k, s, p):
        if _meta(x).is_quantized:
            return max_pool2d(self.x(x), pool_size=k, strides=s, padding=p, layout="NCHW")
        return relax.op.nn.max_pool2d(self.x(x), k, s, p)

    def _m_max_pool(self, node):
        m = self.modules[node.target]
        k, s, p = self._pool_args(m.kernel_size, m.stride, m.padding, m.dilation, node)
        return self._max_pool(node.args[0], k, s, p)

    def _f_max_pool(self, node):
        args = list(node.args) + [None] * 6
        kw = node.kwargs
        k = kw.get("kernel_size", args[1])
        s = kw.get("stride", args[2])
        p = kw.get("padding", args[3] if args[3] is not None else 0)
        d = kw.get("dilation", args[4] if args[4] is not None else 1)
        k, s, p = self._pool_args(k, s, p, d, node)
        return self._max_pool(node.args[0], k, s, p)

    def _adaptive_avg_pool(self, node, size):
        size = (size, size) if isinstance(size, int) else tuple(size)
        x = node.args[0]
        if size != (1, 1):
            raise UnsupportedPyTorchModel("from_pytorch: adaptive_avg_pool2d supports output 1x1")
        if _meta(x).is_quantized:
            return pe.torch_global_avg_pool(self.x(x))
        return relax.op.nn.adaptive_avg_pool2d(self.x(x), (1, 1))

    def _m_adaptive_avg_pool(self, node):
        return self._adaptive_avg_pool(node, self.modules[node.target].output_size)

    def _f_adaptive_avg_pool(self, node):
        return self._adaptive_avg_pool(node, node.args[1])

    def _pad(self, x, pads, value):
        if value != 0:
            raise UnsupportedPyTorchModel("from_pytorch: only zero padding is supported")
        nd = len(_meta(x).shape)
        width = [0] * (2 * nd)
        for i in range(len(pads) // 2):  # pads run from the last dim backwards
            d = nd - 1 - i
            width[2 * d], width[2 * d + 1] = int(pads[2 * i]), int(pads[2 * i + 1])
        if _meta(x).is_quantized:
            return relax.op.nn.pad(self.x(x), width, pad_value=float(_qparams(x)[1]))
        return relax.op.nn.pad(self.x(x), width)

    def _m_pad(self, node):
        m = self.modules[node.target]
        return self._pad(node.args[0], m.padding, getattr(m, "value", 0.0))

    def _f_pad(self, node):
        mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0.0)
        if mode != "constant":
            raise UnsupportedPyTorchModel(f"from_pytorch: pad mode {mode!r} unsupported")
        return self._pad(node.args[0], node.args[1], value or 0.0)

    def _reshape_like(self, node):
        x = self.x(node.args[0])
        return relax.op.reshape(x, [int(d) for d in _meta(node).shape])

    def _permute(self, node):
        dims = node.args[1:] if not isinstance(node.args[1], (list, tuple)) else node.args[1]
        return relax.op.permute_dims(self.x(node.args[0]), [int(d) for d in dims])

    def _q_add(self, node, relu):
        a, b = node.args[0], node.args[1]
        (sa, za), (sb, zb) = _qparams(a), _qparams(b)
        return pe.torch_add(
            self.x(a), self.x(b), lhs_scale=sa, lhs_zero_point=za, rhs_scale=sb, rhs_zero_point=zb,
            output_scale=float(_scalar(self.x(_arg(node, 2, "scale")))),
            output_zero_point=int(_scalar(self.x(_arg(node, 3, "zero_point")))), relu=relu,
            vector_width=_aten_vector_width(),
        )  # fmt: skip

    def _q_mul(self, node, relu):
        a, b = node.args[0], node.args[1]
        (sa, za), (sb, zb) = _qparams(a), _qparams(b)
        zo = int(_scalar(self.x(_arg(node, 3, "zero_point"))))
        return multiply(
            self.x(a), self.x(b), lhs_scale=sa, lhs_zero_point=za, rhs_scale=sb, rhs_zero_point=zb,
            output_scale=float(_scalar(self.x(_arg(node, 2, "scale")))), output_zero_point=zo,
            out_dtype=_QDTYPES[_meta(a).dtype], rounding="float", out_min=zo if relu else None,
        )  # fmt: skip

    def _q_cat(self, node):
        """dequantize -> concat -> quantize_per_tensor, exactly what ATen does for NCHW."""
        tensors = node.args[0]
        axis = int(_arg(node, 1, "dim", 0))
        floats = [self.bb.emit(self._dequantize_input(t)) for t in tensors]
        s = float(_scalar(self.x(_arg(node, 2, "scale"))))
        z = int(_scalar(self.x(_arg(node, 3, "zero_point"))))
        y = self.bb.emit(relax.op.concat(floats, axis))
        return quantize(y, s, z, _QDTYPES[_meta(tensors[0]).dtype], rounding="float")

    # -- PT2E

    def _pt2e_handler(self, node, name) -> Callable | None:
        table = {
            "quantized_decomposed.quantize_per_tensor": self._p_quantize,
            "quantized_decomposed.dequantize_per_tensor": self._p_dequantize,
            "quantized_decomposed.dequantize_per_channel": self._p_dequantize_channel,
            "aten.conv2d": self._p_conv,
            "aten.linear": self._p_linear,
            "aten.relu": self._p_float(relax.op.nn.relu),
            "aten.relu_": self._p_float(relax.op.nn.relu),
            "aten.add": self._p_float(relax.op.add, binary=True),
            "aten.add_": self._p_float(relax.op.add, binary=True),
            "aten.mul": self._p_float(relax.op.multiply, binary=True),
            "aten.max_pool2d": self._f_max_pool,
            "aten.adaptive_avg_pool2d": self._f_adaptive_avg_pool,
            "aten.flatten": self._reshape_like,
            "aten.view": self._reshape_like,
            "aten.reshape": self._reshape_like,
            "aten.cat": self._p_cat,
            "aten.pad": self._f_pad,
            "aten.constant_pad_nd": self._p_constant_pad,
            "aten.permute": self._permute,
            "aten.batch_norm": self._p_batch_norm,
            "aten._native_batch_norm_legit_no_training": self._p_batch_norm,
        }
        if name == "getitem" and node.target is operator.getitem:
            return self._p_getitem
        return table.get(name)

    def _p_quantize(self, node):
        """``clamp(rint(fl(x * float32(1 / s))) + zp, qmin, qmax)``: the decomposed op exactly
        (the zero point is added after rounding, unlike ``torch.quantize_per_tensor``)."""
        x, s, z, qmin, qmax, dtype = (self.x(a) for a in node.args[:6])
        inv = np.float32(1.0 / float(_scalar(s)))
        y = self.bb.emit(relax.op.round(relax.op.multiply(self._float_of(x), _const(inv))))
        y = relax.op.add(y, relax.const(float(_scalar(z)), "float32"))
        y = relax.op.clip(self.bb.emit(y), int(qmin), int(qmax))
        return relax.op.astype(self.bb.emit(y), _QDTYPES[dtype])

    def _p_dequantize(self, node):
        x, s, z = (self.x(a) for a in node.args[:3])
        s, z = float(_scalar(s)), int(_scalar(z))
        if isinstance(x, torch.Tensor):  # a per-tensor quantized weight
            return ("qweight", x.detach().numpy(), np.array([s], np.float32), np.array([z]), 0)
        return dequantize(x, s, z)

    def _p_dequantize_channel(self, node):
        """Weights: kept as (int8 array, scales, zero points, axis) for integer conv/dense."""
        w, s, z, axis = (self.x(a) for a in node.args[:4])
        wq = w.detach().numpy() if isinstance(w, torch.Tensor) else None
        if wq is None:
            raise UnsupportedPyTorchModel("from_pytorch: per-channel dequantize of an activation")
        return ("qweight", wq, s.detach().numpy().astype(np.float32), z.detach().numpy(), axis)

    def _float_of(self, v):
        if isinstance(v, tuple) and v and v[0] == "qweight":
            _, wq, s, z, axis = v
            return _const(ref.dequantize(wq, s, z, axis=axis))
        if isinstance(v, torch.Tensor):
            return _const(v.detach().numpy().astype(np.float32))
        return v

    def _p_float(self, op, binary=False):
        def handle(node):
            if binary:
                a, b = (self.x(v) for v in node.args[:2])
                if not isinstance(b, relax.Expr):
                    b = relax.const(float(b), "float32")
                return op(self._float_of(a), self._float_of(b))
            return op(self._float_of(self.x(node.args[0])))

        return handle

    def _p_batch_norm(self, node):
        """Float inference batch norm, as ATen's CPU kernel: ``x * alpha + beta`` with
        ``alpha = w / sqrt(var + eps)`` and ``beta = b - mean * alpha`` in float32."""
        x, w, b, mean, var = (self.x(a) for a in node.args[:5])
        eps = float(node.args[-2] if "legit" in _target_name(node) else node.args[7])
        mean, var = (t.detach().numpy().astype(np.float32) for t in (mean, var))
        c = mean.size
        w = np.ones(c, np.float32) if w is None else w.detach().numpy().astype(np.float32)
        b = np.zeros(c, np.float32) if b is None else b.detach().numpy().astype(np.float32)
        alpha = (w / np.sqrt(var + np.float32(eps))).astype(np.float32)
        beta = (b - mean * alpha).astype(np.float32)
        shape = [1, c] + [1] * (len(_meta(node.args[0]).shape) - 2)
        y = self.bb.emit(relax.op.multiply(self._float_of(x), _const(alpha.reshape(shape))))
        out = relax.op.add(y, _const(beta.reshape(shape)))
        if "legit" in _target_name(node):  # returns (out, save_mean, save_invstd)
            return relax.Tuple([self.bb.emit(out), _const(mean), _const(alpha)])
        return out

    def _p_getitem(self, node):
        return self.x(node.args[0])[node.args[1]]

    def _p_cat(self, node):
        axis = int(node.args[1]) if len(node.args) > 1 else 0
        return relax.op.concat([self._float_of(self.x(t)) for t in node.args[0]], axis)

    def _p_constant_pad(self, node):
        return self._pad(node.args[0], node.args[1], node.args[2] if len(node.args) > 2 else 0)

    def _dq_source(self, arg):
        """(int tensor node, scale, zp) when ``arg`` is a per-tensor dequantize node."""
        if isinstance(arg, torch.fx.Node) and _target_name(arg).endswith("dequantize_per_tensor"):
            q, s, z = arg.args[:3]
            return q, float(_scalar(self.x(s))), int(_scalar(self.x(z)))
        return None

    def _requant_sink(self, node):
        """(quantize node, relu) when ``node`` feeds only [relu ->] quantize_per_tensor."""
        relu = False
        cur = node
        while len(cur.users) == 1:
            (user,) = cur.users
            name = _target_name(user)
            if name in ("aten.relu", "aten.relu_") and not relu:
                relu, cur = True, user
                continue
            if name == "quantized_decomposed.quantize_per_tensor":
                return user, relu, cur
            return None
        return None

    def _integer_region(self, node, weight_arg, bias_arg):
        """(input, weight, bias, sink) for an integer conv/dense; sink is None when the float
        result feeds something other than [relu ->] quantize (e.g. a fused add)."""
        src = self._dq_source(node.args[0])
        w = self.x(weight_arg)
        bias = self.x(bias_arg) if bias_arg is not None else None
        if src is None or not (isinstance(w, tuple) and w[0] == "qweight"):
            return None
        if bias is not None and not isinstance(bias, torch.Tensor):
            return None
        sink = self._requant_sink(node)
        if sink is not None:
            qnode, relu, _ = sink
            _, s_out, z_out = qnode.args[:3]
            sink = (float(_scalar(self.x(s_out))), int(_scalar(self.x(z_out))), relu, qnode)
            sink += tuple(qnode.args[3:6])  # qmin, qmax, dtype
        return src, w, bias, sink

    def _p_integer(self, node, kind):
        args = list(node.args) + [None] * 7
        region = self._integer_region(node, args[1], args[2])
        if region is None:
            x, w = self._float_of(self.x(args[0])), self._float_of(self.x(args[1]))
            if kind == "linear":
                y = relax.op.linear(x, w, self._float_of(self.x(args[2])))
                return y
            return self._float_conv(x, w, args)
        (q, s_in, z_in), (_, wq, ws, wz, _), bias, sink = region
        per_channel = ws.size > 1
        zw = [int(v) for v in wz] if per_channel else int(wz[0])
        if kind == "linear":
            acc = self.bb.emit(
                dense(self.x(q), _const(wq), input_zero_point=z_in, kernel_zero_point=zw)
            )
            axis = -1
        else:
            stride, pad, dil, groups = self._conv_params(args)
            acc = self.bb.emit(
                conv2d(
                    self.x(q),
                    _const(wq),
                    strides=stride,
                    padding=(pad[0], pad[1], pad[0], pad[1]),
                    dilation=dil,
                    groups=groups,
                    data_layout="NCHW",
                    kernel_layout="OIHW",
                    input_zero_point=z_in,
                    kernel_zero_point=zw,
                )  # fmt: skip
            )
            axis = 1
        atw = ref.act_times_w_scale(s_in, ws)
        if sink is None:  # float result: acc * s_in * s_w (+ bias)
            y = dequantize(acc, atw, 0, axis=axis if per_channel else None)
            if bias is None:
                return y
            b = _const(bias.detach().numpy().astype(np.float32))
            shape = [-1] if kind == "linear" else [1, -1, 1, 1]
            return relax.op.add(self.bb.emit(y), relax.op.reshape(b, shape))
        s_out, z_out, relu, qnode, qmin, qmax, qdtype = sink
        out_dtype = _QDTYPES[qdtype]
        out = self.bb.emit(
            self._epilogue(acc, bias, s_in, ws, per_channel, s_out, z_out, axis, relu, out_dtype)
        )
        if (int(qmin), int(qmax)) != dtype_range(out_dtype):  # a restricted range
            out = self.bb.emit(relax.op.clip(out, int(qmin), int(qmax)))
        # The relu and quantize nodes are folded in: they resolve to the integer result.
        cur = node
        while cur is not qnode:
            (cur,) = cur.users
            self.skip.add(cur)
            self.env[cur] = out
        return out

    def _conv_params(self, args):
        pair = lambda v, d: (
            [int(t) for t in (v if isinstance(v, (list, tuple)) else [v, v])]
            if v is not None
            else [d, d]
        )  # noqa: E501
        return pair(args[3], 1), pair(args[4], 0), pair(args[5], 1), int(args[6] or 1)

    def _float_conv(self, x, w, args):
        stride, pad, dil, groups = self._conv_params(args)
        y = relax.op.nn.conv2d(x, w, stride, pad, dil, groups)
        if args[2] is not None:
            b = self._float_of(self.x(args[2]))
            y = relax.op.add(self.bb.emit(y), relax.op.reshape(b, [1, -1, 1, 1]))
        return y

    def _p_conv(self, node):
        return self._p_integer(node, "conv")

    def _p_linear(self, node):
        return self._p_integer(node, "linear")


def _prepacked_kernel(m: torch.nn.Module, conv: bool) -> str:
    """The kernel a quantized conv / linear module's packed weights belong to.

    PyTorch does not record the engine, but each kernel rejects a qint8 activation with its own
    message, which names it (conv: "FBGEMM", "ONEDNN", "qnnpack"; linear: fbgemm's message is
    untagged and oneDNN accepts qint8).  The probe input is tiny and the model is not changed.
    """
    packed = m._packed_params
    if conv:
        kh, kw = m.kernel_size
        dh, dw = m.dilation
        shape = (1, m.in_channels, (kh - 1) * dh + 1, (kw - 1) * dw + 1)
        op = torch.ops.quantized.conv2d
    else:
        packed = packed._packed_params
        shape = (1, m.in_features)
        op = torch.ops.quantized.linear
    probe = torch.quantize_per_tensor(torch.zeros(shape), 1.0, 0, torch.qint8)
    try:
        op(probe, packed, 1.0, 0)
    except Exception as e:  # noqa: BLE001  (the message is what we want)
        msg = str(e)
        for tag, kernel in (("FBGEMM", "fbgemm"), ("ONEDNN", "onednn"), ("qnnpack", "qnnpack")):
            if tag in msg:
                return kernel
        if not conv and "Expected input data type QUInt8" in msg:
            return "fbgemm"
        return "unknown (pass engine=)"
    return "unknown (pass engine=)" if conv else "onednn"  # oneDNN linear accepts qint8


_INPUT_DTYPES = {
    torch.float32: "float32",
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int32: "int32",
    torch.int64: "int64",
}


def _input_dtype(node: torch.fx.Node) -> str:
    dtype = _meta(node).dtype
    if dtype not in _INPUT_DTYPES:
        raise UnsupportedPyTorchModel(
            f"from_pytorch: input {node.name} has dtype {dtype}; supported: "
            + ", ".join(str(d) for d in _INPUT_DTYPES)
        )
    return _INPUT_DTYPES[dtype]


def _aten_vector_width() -> int:
    """Elements per ``Vectorized<quint8>`` in the ATen build running here (0: unknown)."""
    cap = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": 64, "AVX2": 32}.get(cap, 0)


def _target_name(node: torch.fx.Node) -> str:
    if node.op == "call_method":
        return str(node.target)
    if node.op != "call_function":
        return ""
    t = node.target
    if isinstance(t, torch._ops.OpOverload):
        return f"{t.namespace}.{t._schema.name.split('::')[-1]}"
    if isinstance(t, torch._ops.OpOverloadPacket):
        return f"{t._qualified_op_name.replace('::', '.')}"
    if t is operator.getitem:
        return "getitem"
    return getattr(t, "__name__", str(t))


def _describe(node: torch.fx.Node, modules) -> str:
    if node.op == "call_module":
        return type(modules[node.target]).__name__
    return _target_name(node) or f"{node.op}:{node.target}"
