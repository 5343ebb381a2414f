"""Make two int8 MobileNetV2-224 TFLite models offline: per-channel and per-tensor weights.

Runs with TensorFlow, which is NOT part of the project's install: use a separate venv.

    python3 -m venv /work/tfvenv
    /work/tfvenv/bin/pip install tensorflow-cpu==2.21.0      # brings keras 3
    /work/tfvenv/bin/python benchmarks/make_mobilenetv2.py [--out DIR] [--seed 0]

Nothing is downloaded: ``keras.applications.MobileNetV2(weights=None)`` is built with seeded
random weights.  Random weights alone give a weak test (activations that shrink towards zero,
a softmax that is flat for every input), so before conversion, in float:

* every BatchNormalization gets a seeded random gamma in [0.5, 1.5] and beta in [-0.5, 0.5]
  (per-channel ranges differ, which is what separates per-channel from per-tensor weights),
  then its moving mean/variance are set to the statistics of its own input over a calibration
  batch (one pass with ``training=True`` and momentum 0): every pre-activation is then about
  gamma * N(0, 1) + beta, so ReLU6 neither dies nor saturates;
* the classifier's kernel is rescaled and its bias set so that, over the calibration batch,
  each logit has mean 0 and the logits spread about ``--logit-std`` across inputs: the
  1000-way softmax then peaks on different classes for different inputs.

The model is then converted with full-integer quantization (int8 input and output,
``TFLITE_BUILTINS_INT8`` only) from a representative dataset of seeded images uniform in
[-1, 1] (MobileNetV2's input range), twice: per-channel weights (the converter's default) and
per-tensor weights (``converter._experimental_disable_per_channel = True``).  Writes
``mobilenet_v2_224_int8_per_channel.tflite`` and ``mobilenet_v2_224_int8_per_tensor.tflite``
into ``--out`` (default: the model cache, ``$TVM_QNN_CACHE`` or
``~/.cache/tvm_qnn_ext/models``, as in ``tvm_qnn_ext/models.py``), then prints, per model,
its operator inventory and a liveness check run with TF's own interpreter: how much the int8
output varies across random int8 inputs and how many intermediate tensors are constant.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

NAMES = {
    "per_channel": "mobilenet_v2_224_int8_per_channel.tflite",
    "per_tensor": "mobilenet_v2_224_int8_per_tensor.tflite",
}
SHAPE = (224, 224, 3)


def default_cache_dir() -> Path:
    # Same default as tvm_qnn_ext.models.default_cache_dir (not imported: it needs TVM).
    env = os.environ.get("TVM_QNN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "tvm_qnn_ext" / "models"


def build_model(seed: int, calib: np.ndarray, logit_std: float):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None, input_shape=SHAPE)
    rng = np.random.default_rng(seed)
    bns = [la for la in model.layers if isinstance(la, keras.layers.BatchNormalization)]
    for bn in bns:
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
        bn.beta.assign(rng.uniform(-0.5, 0.5, c).astype(np.float32))
        bn.momentum = 0.0  # moving stats := this batch's stats
    model(calib, training=True)  # each BN sees its input as normalized by the BNs before it
    for bn in bns:
        bn.momentum = 0.99

    # The classifier: logits centred per class, spread logit_std across the calibration batch.
    dense = model.layers[-1]
    if not isinstance(dense, keras.layers.Dense):
        raise RuntimeError(f"expected the classifier Dense last, found {type(dense).__name__}")
    features = keras.Model(model.input, dense.input)(calib, training=False).numpy()
    kernel = dense.kernel.numpy()
    logits = features @ kernel
    spread = float(np.mean(np.std(logits, axis=0)))
    kernel *= logit_std / spread
    dense.kernel.assign(kernel)
    dense.bias.assign(-(features @ kernel).mean(axis=0))
    return model


def convert(saved_model: Path, rep: np.ndarray, per_channel: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rep[i : i + 1]] for i in range(len(rep)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    if not hasattr(converter, "_experimental_disable_per_channel"):
        raise RuntimeError("this TensorFlow has no _experimental_disable_per_channel flag")
    converter._experimental_disable_per_channel = not per_channel
    return converter.convert()


def check(data: bytes, seed: int, samples: int = 8) -> dict:
    """Op inventory, and liveness on random int8 inputs with TF's builtin kernels."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(
        model_content=data,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interp.allocate_tensors()
    ops = Counter(d["op_name"] for d in interp._get_ops_details())
    per_channel = Counter()
    for d in interp._get_ops_details():
        if d["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            w = interp._get_tensor_details(d["inputs"][1], 0)
            kind = (
                "per-channel" if w["quantization_parameters"]["scales"].size > 1 else "per-tensor"
            )
            per_channel[f"{d['op_name']} {kind}"] += 1
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    produced = sorted({t for d in interp._get_ops_details() for t in d["outputs"]})
    rng = np.random.default_rng(seed + 1)
    outs, values = [], {t: [] for t in produced}
    for _ in range(samples):
        x = rng.integers(-128, 127, size=inp["shape"], endpoint=True).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        outs.append(interp.get_tensor(out["index"]).copy())
        for t in produced:
            values[t].append(interp.get_tensor(t).copy())
    outs = np.stack(outs)
    constant = [t for t in produced if all(np.array_equal(v, values[t][0]) for v in values[t])]
    single_valued = [t for t in produced if np.unique(values[t][0]).size == 1]
    return {
        "ops": ops,
        "weights": per_channel,
        "input_q": inp["quantization"],
        "output_q": out["quantization"],
        "argmax": [int(o.argmax()) for o in outs],
        "out_distinct": int(np.unique(outs).size),
        "out_not_min": int((outs > -128).sum(axis=tuple(range(1, outs.ndim))).min()),
        "out_varies": int((outs != outs[0]).any(axis=0).sum()),
        "tensors": len(produced),
        "constant": constant,
        "single_valued": single_valued,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="output directory (default: the model cache)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib", type=int, default=32, help="calibration/representative images")
    ap.add_argument("--logit-std", type=float, default=3.0)
    args = ap.parse_args(argv)
    out_dir = args.out or default_cache_dir()
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    calib = rng.uniform(-1.0, 1.0, size=(args.calib, *SHAPE)).astype(np.float32)
    model = build_model(args.seed, calib, args.logit_std)
    with tempfile.TemporaryDirectory(prefix="mobilenetv2_") as tmp:
        saved = Path(tmp) / "saved_model"
        model.export(str(saved), format="tf_saved_model", verbose=False)
        models = {
            kind: convert(saved, calib, per_channel)
            for kind, per_channel in (("per_channel", True), ("per_tensor", False))
        }
    for kind, data in models.items():
        path = out_dir / NAMES[kind]
        tmp = path.with_suffix(".tflite.part")
        tmp.write_bytes(data)
        tmp.replace(path)
        info = check(data, args.seed)
        print(f"## {path.name}\n")
        print(f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}, at {path}")
        print(f"input quantization {info['input_q']}, output quantization {info['output_q']}")
        print("| op | count |\n|---|---|")
        for name, n in sorted(info["ops"].items()):
            print(f"| {name} | {n} |")
        print(f"weights: {dict(sorted(info['weights'].items()))}")
        print(
            f"liveness over 8 random int8 inputs: argmax {info['argmax']}; "
            f"{info['out_distinct']} distinct output values; >= {info['out_not_min']} of 1000 "
            f"outputs above -128 per input; {info['out_varies']} of 1000 outputs vary; "
            f"{len(info['constant'])} of {info['tensors']} op outputs constant across inputs "
            f"{info['constant']}; {len(info['single_valued'])} single-valued "
            f"{info['single_valued']}\n"
        )
        if info["out_varies"] == 0 or info["constant"]:
            print(f"{path.name}: degenerate model (constant tensors)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
