"""A stripped tf_keras model (NHWC) as a QONNX graph (NCHW) that FINN's front end accepts.

Built node by node with ``onnx.helper`` (no converter in between), so every attribute FINN
reads is explicit (``group``, ``dilations``, ``pads`` on Conv). Per layer:

- quantized Conv2D / DepthwiseConv2D / Dense: integer weights ``n = grid[indices]`` through
  ``Quant(n, scale=1, zero_point=0, bitwidth=B, signed=1, narrow=1)``, the Conv/MatMul, then
  ``Mul`` by the grid scale s (per tensor or per output channel) and ``Add`` of the float bias:
  ``y = (x * n) s + bias``, which is FINN's own form after its FoldQuantWeights;
- float kernel layers (skipped by quantize_model): float weights, no Quant;
- activation quantizers: ``Quant`` after the ReLU (parameters from :mod:`actquant`);
- BatchNormalization, Add, pooling, padding, Flatten, Reshape, Concatenate, Rescaling, ReLU
  and Softmax: the standard ONNX op, left to FINN's streamlining;
- He et al.'s option-A shortcut as ``uniq_tf.models`` builds it from stock layers (a 1x1
  AveragePooling2D with stride s, a Rescaling by 0 of its output for the new channels, and a
  Concatenate of the two): one 1x1 stride-s Conv with constant weights [I; 0] (identity on the
  C input channels, zeros for the appended ones) on a 2-bit integer grid, which computes the
  same values exactly and which FINN maps to an MVAU (it maps neither the plain AveragePool nor
  a Concat with a constant-zero input). It is a compute layer of the descriptor with fixed
  weights (``ComputeLayer.fixed``), named after the Concatenate, without a codebook.

Keras flattens in HWC order, ONNX in CHW order: a Dense fed by a flattened feature map gets its
kernel rows permuted to CHW order instead of a Transpose in the graph; anything else that needs
Keras' order gets an explicit Transpose.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fpga_export.actquant import QuantParams
from fpga_export.grid import IntegerGrid
from uniq_tf import internals
from uniq_tf._keras import keras
from uniq_tf.integration import registry
from uniq_tf.method.codebook import Codebook
from uniq_tf.util import graph

L = keras.layers
ONNX_OPSET = 11  # qonnx's and FINN's preferred opset
ONNX_IR_VERSION = 8  # readable by the older onnx/onnxruntime a FINN environment may pin
QONNX_DOMAIN = "qonnx.custom_op.general"
INPUT_NAME = "input"
OUTPUT_NAME = "output"
PASS_THROUGH = (L.InputLayer, L.Dropout)
KERNEL_LAYERS = (L.Conv2D, L.DepthwiseConv2D, L.Dense)
PLAIN_ACTIVATIONS = ("linear", "relu", "relu6", "softmax")
SHORTCUT_TYPE = "OptionAShortcut"  # ComputeLayer.keras_type of an option-A shortcut's conv
SHORTCUT_WEIGHT_BITS = 2  # its weights are 0 and 1: exact on the smallest signed grid (-1..1)


@dataclass
class Tensor:
    """An ONNX tensor with its Keras view.

    kshape: Keras shape with batch 1. layout: "nchw" (rank-4 maps), "vec" (rank 2, Keras order)
    or "flat_chw" (rank 2, a flattened (H, W, C) map in ONNX's CHW order; ``source`` = (H, W, C)).
    quant: the quantizer whose bit width the values carry (a Quant output, also through the
    layers that keep it: ``uniq_tf.integration.registry.keeps_bit_width``, the rule
    ``uniq_tf.summary`` reads too), None for float.
    """

    name: str
    kshape: tuple[int, ...]
    layout: str
    quant: QuantParams | None = None
    source: tuple[int, int, int] | None = None

    @property
    def bits(self) -> int | None:
        """The bit width the values carry (the descriptor's b_a), None for float."""
        return None if self.quant is None else self.quant.bits

    @property
    def onnx_shape(self) -> list[int]:
        if self.layout == "nchw":
            n, h, w, c = self.kshape
            return [n, c, h, w]
        return list(self.kshape)


@dataclass
class ComputeLayer:
    """A Conv/MatMul of the graph and what the descriptor reports about it."""

    name: str
    keras_type: str
    onnx_op: str
    onnx_node: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    groups: int
    out_pixels: int
    weight_count: int
    input_bits: int | None
    codebook: Codebook | None = None
    grid: IntegerGrid | None = None
    fixed: str | None = None  # constant weights not from the model (option-A shortcut): what

    @property
    def fan_in(self) -> int:
        """Inputs summed per output value: (C_in / groups) * k_h * k_w."""
        return self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]


@dataclass
class GraphResult:
    model: onnx.ModelProto
    layers: list[ComputeLayer]
    finn_notes: list[str] = field(default_factory=list)


def activation_kind(layer) -> str | None:
    """The (fused) activation of ``layer``: "linear", "relu", "relu6", "relu:<cap>" (a ReLU
    layer with max_value), "softmax", or None for anything else."""
    if isinstance(layer, L.ReLU):
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        return "relu" if layer.max_value is None else f"relu:{float(layer.max_value)}"
    fn = getattr(layer, "activation", None)
    name = getattr(fn, "__name__", None)
    return name if name in PLAIN_ACTIVATIONS else None


def unsupported_reason(layer) -> str | None:
    """Why ``layer`` cannot be exported, or None when it can."""
    kind = type(layer).__name__
    if len(internals.inbound_nodes(layer)) > 1:
        return f"{kind} called more than once (shared layer)"
    if isinstance(layer, (L.SeparableConv2D, L.Conv2DTranspose, L.Conv1D, L.Conv3D)):
        return kind
    if isinstance(layer, L.ReLU) and activation_kind(layer) is None:
        return f"ReLU with negative_slope={layer.negative_slope}, threshold={layer.threshold}"
    if isinstance(layer, KERNEL_LAYERS + (L.Activation,)):
        name = getattr(layer.activation, "__name__", str(layer.activation))
        if activation_kind(layer) is None:
            return f"{kind} with activation {name!r}"
        if name == "softmax" and len(layer.output_shape) != 2:
            return f"{kind} with a softmax over a rank-{len(layer.output_shape)} tensor"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"{kind} with data_format={layer.data_format}"
    if isinstance(layer, (L.Conv2D, L.DepthwiseConv2D, L.Activation, L.ReLU, L.Add)
                  + PASS_THROUGH):
        return None
    if isinstance(layer, L.Dense):
        rank = len(layer.input_shape)
        return None if rank in (2, 4) else f"Dense on a rank-{rank} input"
    if isinstance(layer, L.BatchNormalization):
        rank = len(layer.input_shape)
        return None if list(layer.axis) == [rank - 1] else f"BatchNormalization axis={layer.axis}"
    if isinstance(layer, L.Rescaling):
        scalar = np.size(layer.scale) == 1 and np.size(layer.offset) == 1
        return None if scalar else "Rescaling with per-channel scale or offset"
    if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D, L.GlobalAveragePooling2D,
                          L.GlobalMaxPooling2D, L.Flatten, L.ZeroPadding2D)):
        return None
    if isinstance(layer, L.Reshape):
        rank = len(layer.target_shape)
        return None if rank in (1, 3) else f"Reshape to a rank-{rank} target {layer.target_shape}"
    if isinstance(layer, L.Concatenate):
        return None if layer.axis in (-1, 3) else f"Concatenate on axis {layer.axis}"
    return kind


def _carried(layer, inputs: list[Tensor]) -> QuantParams | None:
    """The quantizer whose bit width ``layer``'s output carries before its own quantizer, if
    any: its inputs' (the widest of them; float if one is float) where the layer keeps the bit
    width, else None (float)."""
    if isinstance(layer, PASS_THROUGH) or (
            registry.keeps_bit_width(layer) and not isinstance(layer, KERNEL_LAYERS)):
        quants = [t.quant for t in inputs]
        if any(q is None for q in quants):
            return None
        return max(quants, key=lambda q: q.bits)
    return None


def _onnx_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _history_key(tensor) -> tuple:
    layer, node_index, tensor_index = internals.keras_history(tensor)
    return id(layer), node_index, tensor_index


def _same_pads(size, kernel, strides, dilations=(1, 1)) -> list[int]:
    """TensorFlow's "same" padding as ONNX pads [top, left, bottom, right]:
    total = max((ceil(n / s) - 1) s + (k - 1) d + 1 - n, 0), split with the extra at the end."""
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


@dataclass(frozen=True)
class _ShortcutConv:
    """What :meth:`GraphBuilder._conv` reads of a Conv2D layer, for an option-A shortcut."""

    name: str
    strides: tuple[int, int]
    padding: str = "valid"
    dilation_rate: tuple[int, int] = (1, 1)


class GraphBuilder:
    """Walks a stripped Keras model and emits the QONNX graph (see module docstring)."""

    def __init__(
        self,
        codebooks: dict[str, Codebook],
        grids: dict[str, IntegerGrid],
        activations: dict[str, QuantParams],
    ):
        self.codebooks = codebooks
        self.grids = grids
        self.activations = activations
        self.nodes: list = []
        self.initializers: list = []
        self.layers: list[ComputeLayer] = []
        self.finn_notes: list[str] = []  # parts FINN's build will not map, and why
        self.pad_notes: dict[str, str] = {}  # Pad output -> its note, unless fold_pads folds it
        # Option-A shortcut parts (models._basic_block's "zero_pad"), by ONNX output name:
        self._subsamples: dict[str, tuple] = {}  # 1x1 AveragePool -> (layer, its input Tensor)
        self._zeros: dict[str, tuple[str, str]] = {}  # Mul by 0 -> (its input, layer name)
        self._pool_notes: dict[str, str] = {}  # AveragePool output -> its note, unless removed
        self._used = Counter()

    # ------------------------------------------------------------------ primitives

    def claim(self, name: str) -> None:
        """Reserves ``name`` (the graph input's), so no node output takes it."""
        self._used[_onnx_name(name)] += 1

    def _fresh(self, base: str) -> str:
        base = _onnx_name(base)
        self._used[base] += 1
        count = self._used[base]
        return base if count == 1 else f"{base}_{count - 1}"

    def const(self, base: str, value, dtype=np.float32) -> str:
        name = self._fresh(base)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, domain: str = "", **attrs) -> str:
        out = self._fresh(f"{base}_out")
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self._fresh(base), domain=domain,
                             **attrs)
        )
        return out

    def reshape(self, x: str, shape, base: str) -> str:
        return self.op("Reshape", [x, self.const(f"{base}_shape", shape, np.int64)], base)

    def quant(self, x: Tensor, params: QuantParams, base: str) -> Tensor:
        out = self.op(
            "Quant",
            [x.name, self.const(f"{base}_scale", params.scale),
             self.const(f"{base}_zero_point", float(params.zero_point)),
             self.const(f"{base}_bitwidth", float(params.bits))],
            base, domain=QONNX_DOMAIN, signed=int(params.signed), narrow=int(params.narrow),
            rounding_mode="ROUND",
        )
        return dataclasses.replace(x, name=out, quant=params)

    def _like(self, x: Tensor, name: str, op_type: str, **changes) -> Tensor:
        """``x`` renamed to the output of an ``op_type`` node (the bit width it carries is set
        once per layer, in :meth:`_call`)."""
        del op_type
        return dataclasses.replace(x, name=name, **changes)

    # ------------------------------------------------------------------ walking

    def build(self, model, x: Tensor) -> Tensor:
        (out,) = self._walk(model, [x])
        if out.layout == "flat_chw":
            out = self._keras_order(out, "output")
        self._output_name = out.name
        self.drop_unused()
        return out

    def _walk(self, model, inputs: list[Tensor]) -> list[Tensor]:
        if isinstance(model, keras.Sequential):
            x = inputs
            for layer in model.layers:
                x = self._call(layer, x)
            return x
        env = {_history_key(t): v for t, v in zip(model.inputs, inputs, strict=True)}
        by_depth = internals.nodes_by_depth(model)
        for depth in sorted(by_depth, reverse=True):
            for node in by_depth[depth]:
                if internals.node_is_input(node):
                    continue
                outs = self._call(internals.node_layer(node),
                                  [env[_history_key(t)] for t in internals.node_inputs(node)])
                for t, v in zip(internals.node_outputs(node), outs, strict=True):
                    env[_history_key(t)] = v
        return [env[_history_key(t)] for t in model.outputs]

    def _call(self, layer, inputs: list[Tensor]) -> list[Tensor]:
        if isinstance(layer, keras.Model):
            return self._walk(layer, inputs)
        out = dataclasses.replace(self._emit(layer, inputs), quant=_carried(layer, inputs))
        params = self.activations.get(layer.name)
        if params is not None:
            out = self.quant(out, params, f"{layer.name}_act_quant")
        return [out]

    def _emit(self, layer, inputs: list[Tensor]) -> Tensor:
        x = inputs[0]
        if isinstance(layer, PASS_THROUGH):
            return x
        if isinstance(layer, KERNEL_LAYERS):
            out = self._kernel_layer(layer, x)
            return self._activation(out, activation_kind(layer), layer.name)
        if isinstance(layer, (L.ReLU, L.Activation)):
            return self._activation(x, activation_kind(layer), layer.name)
        if isinstance(layer, L.BatchNormalization):
            return self._batch_norm(layer, x)
        if isinstance(layer, L.Add):
            return self._add(layer, inputs)
        if isinstance(layer, L.Concatenate):
            return self._concat(layer, inputs)
        if isinstance(layer, (L.MaxPooling2D, L.AveragePooling2D)):
            return self._pool(layer, x)
        if isinstance(layer, (L.GlobalAveragePooling2D, L.GlobalMaxPooling2D)):
            return self._global_pool(layer, x)
        if isinstance(layer, L.ZeroPadding2D):
            return self._zero_pad(layer, x)
        if isinstance(layer, L.Rescaling):
            return self._rescale(layer, x)
        if isinstance(layer, L.Flatten):
            return self._flatten(x, layer.name)
        if isinstance(layer, L.Reshape):
            return self._reshape(layer, x)
        raise AssertionError(f"layer {layer.name!r} passed the support check but has no emitter")

    # ------------------------------------------------------------------ layouts

    def _keras_order(self, x: Tensor, base: str) -> Tensor:
        """``x`` as a rank-2 (1, N) tensor in Keras' (HWC) element order."""
        if x.layout == "vec":
            return x
        if x.layout == "flat_chw":
            h, w, c = x.source
            x = Tensor(self.reshape(x.name, [1, c, h, w], f"{base}_unflatten"), (1, h, w, c),
                       "nchw", x.quant)
        nhwc = self.op("Transpose", [x.name], f"{base}_to_nhwc", perm=[0, 2, 3, 1])
        size = int(np.prod(x.kshape))
        flat = self.reshape(nhwc, [1, size], f"{base}_flatten")
        return Tensor(flat, (1, size), "vec", x.quant)

    def _flatten(self, x: Tensor, base: str) -> Tensor:
        if x.layout != "nchw":
            return x
        _, h, w, c = x.kshape
        out = self.op("Flatten", [x.name], base, axis=1)
        if h * w == 1:
            return self._like(x, out, "Flatten", kshape=(1, c), layout="vec")
        return self._like(x, out, "Flatten", kshape=(1, h * w * c), layout="flat_chw",
                          source=(h, w, c))

    def _reshape(self, layer, x: Tensor) -> Tensor:
        target = tuple(int(d) for d in layer.target_shape)
        if -1 in target:
            known = int(np.prod([d for d in target if d != -1]))
            target = tuple(int(np.prod(x.kshape)) // known if d == -1 else d for d in target)
        if len(target) == 1:
            return self._flatten(x, layer.name) if x.layout == "nchw" else x
        self.finn_notes.append(
            f"{layer.name!r}: FINN does not map a Reshape to a feature map between its layers")
        flat = self._keras_order(x, layer.name)
        nhwc = self.reshape(flat.name, (1,) + target, layer.name)
        out = self.op("Transpose", [nhwc], f"{layer.name}_to_nchw", perm=[0, 3, 1, 2])
        return Tensor(out, (1,) + target, "nchw", flat.quant)

    # ------------------------------------------------------------------ layers

    def _activation(self, x: Tensor, kind: str, base: str) -> Tensor:
        if kind == "linear":
            return x
        if kind == "softmax":
            x = self._keras_order(x, base) if x.layout == "flat_chw" else x
            return self._like(x, self.op("Softmax", [x.name], f"{base}_softmax", axis=1),
                              "Softmax")
        cap = 6.0 if kind == "relu6" else (float(kind.split(":")[1]) if ":" in kind else None)
        params = self.activations.get(base)
        if params is not None and params.zero_point != 0:
            self.finn_notes.append(
                f"the activation quantizer of {base!r} has a range below 0 (nonzero zero "
                "point); FINN accepts zero point 0 only: calibrate activations before "
                "fine-tuning (uniq_tf.calibrate_activations starts ReLU ranges at 0)")
        if cap is None or (params is not None and params.max_value <= cap):
            # The quantizer after it clips at or below the cap: ReLU6 then equals ReLU.
            return self._like(x, self.op("Relu", [x.name], f"{base}_relu"), "Relu")
        out = self.op("Clip", [x.name, self.const(f"{base}_min", 0.0),
                               self.const(f"{base}_max", cap)], f"{base}_clip")
        return self._like(x, out, "Clip")

    def _kernel_layer(self, layer, x: Tensor) -> Tensor:
        is_depthwise = isinstance(layer, L.DepthwiseConv2D)
        attr = "depthwise_kernel" if is_depthwise else "kernel"
        kernel = getattr(layer, attr).numpy()
        codebook = self.codebooks.get(layer.name)
        grid = self.grids.get(layer.name)
        if codebook is not None:
            kernel = dataclasses.replace(
                codebook, levels=grid.levels.reshape(codebook.levels.shape).astype(np.float32)
            ).dequantize()
        bias = layer.bias.numpy() if layer.use_bias else None
        if isinstance(layer, L.Dense):
            if x.layout == "nchw":
                kernel = kernel[None, None]  # a Dense on a feature map is a 1x1 convolution
            else:
                return self._matmul(layer, x, kernel, bias, codebook, grid)
        if is_depthwise:
            kh, kw, c_in, mult = kernel.shape
            weights = kernel.reshape(kh, kw, c_in * mult).transpose(2, 0, 1)[:, None]
            groups = c_in
        else:
            weights = kernel.transpose(3, 2, 0, 1)
            groups = int(getattr(layer, "groups", 1))
        return self._conv(layer, x, weights, groups, bias, codebook, grid)

    def _weights(self, layer, weights: np.ndarray, grid: IntegerGrid | None) -> str:
        if grid is None:
            return self.const(f"{layer.name}_W", weights)
        ints = self.const(f"{layer.name}_W_int", weights)
        params = QuantParams(1.0, 0, grid.bits, signed=True, narrow=True)
        return self.quant(Tensor(ints, (), "vec"), params, f"{layer.name}_weight_quant").name

    def _scale_and_bias(self, layer, y: str, grid, bias, channel_shape) -> str:
        if grid is not None and not np.all(grid.scale == 1.0):
            scale = grid.scale[0] if grid.scale.size == 1 else grid.scale.reshape(channel_shape)
            y = self.op("Mul", [y, self.const(f"{layer.name}_weight_scale", scale)],
                        f"{layer.name}_weight_scale_mul")
        if bias is not None:
            y = self.op("Add", [y, self.const(f"{layer.name}_bias", bias.reshape(channel_shape))],
                        f"{layer.name}_bias_add")
        return y

    def _conv(self, layer, x: Tensor, weights, groups, bias, codebook, grid) -> Tensor:
        _, h, w, _ = x.kshape
        c_out, _, kh, kw = weights.shape
        strides = tuple(getattr(layer, "strides", (1, 1)))
        dilations = tuple(getattr(layer, "dilation_rate", (1, 1)))
        padding = getattr(layer, "padding", "valid")
        pads = _same_pads((h, w), (kh, kw), strides, dilations) if padding == "same" else [0] * 4
        out_h = (h + pads[0] + pads[2] - (kh - 1) * dilations[0] - 1) // strides[0] + 1
        out_w = (w + pads[1] + pads[3] - (kw - 1) * dilations[1] - 1) // strides[1] + 1
        y = self.op(
            "Conv", [x.name, self._weights(layer, weights, grid)], f"{layer.name}_conv",
            kernel_shape=[kh, kw], strides=list(strides), dilations=list(dilations),
            pads=pads, group=groups,
        )
        conv = self.nodes[-1].name
        y = self._scale_and_bias(layer, y, grid, bias, (1, c_out, 1, 1))
        out = Tensor(y, (1, out_h, out_w, c_out), "nchw")
        self.layers.append(ComputeLayer(
            name=layer.name, keras_type=type(layer).__name__, onnx_op="Conv", onnx_node=conv,
            input_shape=x.kshape, output_shape=out.kshape, in_channels=x.kshape[-1],
            out_channels=c_out, kernel_size=(kh, kw), groups=groups, out_pixels=out_h * out_w,
            weight_count=int(weights.size), input_bits=x.bits, codebook=codebook, grid=grid,
        ))
        return out

    def _matmul(self, layer, x: Tensor, kernel, bias, codebook, grid) -> Tensor:
        if x.layout == "flat_chw":
            h, w, c = x.source
            # Row h*W*C + w*C + c of the Keras kernel multiplies ONNX element c*H*W + h*W + w.
            kernel = kernel.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(h * w * c, -1)
        y = self.op("MatMul", [x.name, self._weights(layer, kernel, grid)], f"{layer.name}_matmul")
        matmul = self.nodes[-1].name
        units = kernel.shape[1]
        y = self._scale_and_bias(layer, y, grid, bias, (units,))
        self.layers.append(ComputeLayer(
            name=layer.name, keras_type="Dense", onnx_op="MatMul", onnx_node=matmul,
            input_shape=x.kshape, output_shape=(1, units), in_channels=kernel.shape[0],
            out_channels=units, kernel_size=(1, 1), groups=1, out_pixels=1,
            weight_count=int(kernel.size), input_bits=x.bits, codebook=codebook, grid=grid,
        ))
        return Tensor(y, (1, units), "vec")

    def _batch_norm(self, layer, x: Tensor) -> Tensor:
        if x.layout == "flat_chw":
            x = self._keras_order(x, layer.name)
        channels = x.kshape[-1]
        weights = {graph.weight_name(w): w.numpy() for w in layer.weights}
        gamma = weights.get("gamma", np.ones(channels, np.float32))
        beta = weights.get("beta", np.zeros(channels, np.float32))
        inputs = [x.name] + [
            self.const(f"{layer.name}_{key}", value) for key, value in
            (("gamma", gamma), ("beta", beta), ("mean", weights["moving_mean"]),
             ("var", weights["moving_variance"]))
        ]
        out = self.op("BatchNormalization", inputs, layer.name, epsilon=float(layer.epsilon))
        return self._like(x, out, "BatchNormalization")

    def _add(self, layer, inputs: list[Tensor]) -> Tensor:
        if len({t.layout for t in inputs}) > 1:
            inputs = [self._keras_order(t, f"{layer.name}_{i}") for i, t in enumerate(inputs)]
        out = inputs[0]
        for other in inputs[1:]:
            out = self._like(out, self.op("Add", [out.name, other.name], layer.name), "Add")
        return out

    def _concat(self, layer, inputs: list[Tensor]) -> Tensor:
        shortcut = self._option_a_shortcut(layer, inputs)
        if shortcut is not None:
            return shortcut
        if len({t.layout for t in inputs}) > 1 or inputs[0].layout == "flat_chw":
            inputs = [self._keras_order(t, f"{layer.name}_{i}") for i, t in enumerate(inputs)]
        first = inputs[0]
        channels = sum(t.kshape[-1] for t in inputs)
        out = self.op("Concat", [t.name for t in inputs], layer.name, axis=1)
        return self._like(first, out, "Concat", kshape=first.kshape[:-1] + (channels,))

    def _option_a_shortcut(self, layer, inputs: list[Tensor]) -> Tensor | None:
        """The Concatenate of an option-A shortcut as a 1x1 conv with weights [I; 0] (module
        docstring), or None when ``inputs`` are not one 1x1 AveragePool's output and Muls of
        that output by 0. The pool and the Muls stay until :meth:`drop_unused` removes them."""
        sources = {t.name for t in inputs if t.name in self._subsamples}
        if len(sources) != 1 or any(t.layout != "nchw" for t in inputs):
            return None
        (pooled,) = sources
        if not all(t.name == pooled or self._zeros.get(t.name, ("",))[0] == pooled
                   for t in inputs):
            return None
        pool_layer, x = self._subsamples[pooled]
        c_in = x.kshape[-1]
        c_out = sum(t.kshape[-1] for t in inputs)
        weights = np.zeros((c_out, c_in, 1, 1), np.float32)
        offset = 0
        for t in inputs:
            if t.name == pooled:
                weights[offset:offset + c_in, :, 0, 0] = np.eye(c_in, dtype=np.float32)
            offset += t.kshape[-1]
        bits = SHORTCUT_WEIGHT_BITS
        grid = IntegerGrid(bits, np.ones(1), np.array([[0, 1]], np.int64), np.zeros(1),
                           np.zeros(1))
        fake = _ShortcutConv(layer.name, tuple(pool_layer.strides))
        out = self._conv(fake, x, weights, 1, None, None, grid)
        zeros = sorted({self._zeros[t.name][1] for t in inputs if t.name != pooled})
        self.layers[-1] = dataclasses.replace(
            self.layers[-1], keras_type=SHORTCUT_TYPE,
            fixed=f"option-A shortcut: {pool_layer.name!r} (1x1 average pooling, stride "
                  f"{fake.strides[0]}), zero channels {', '.join(map(repr, zeros))} and "
                  f"{layer.name!r} (Concatenate) as a 1x1 conv with constant {bits}-bit weights "
                  f"[I; 0] ({c_in} -> {c_out} channels)")
        return out

    def drop_unused(self) -> None:
        """Removes the nodes whose outputs nothing reads (the AveragePool and Mul of an
        option-A shortcut that became a conv), with their initializers and FINN notes; then
        the notes of the AveragePools that stay."""
        while True:
            read = {name for node in self.nodes for name in node.input}
            dead = [n for n in self.nodes if not any(o in read for o in n.output)
                    and n.output[0] != self._output_name]
            if not dead:
                break
            for node in dead:
                self.nodes.remove(node)
                self._pool_notes.pop(node.output[0], None)
        read = {name for node in self.nodes for name in node.input}
        self.initializers = [t for t in self.initializers if t.name in read]
        self.finn_notes.extend(self._pool_notes.values())

    def hoist_unpadded_convs(self) -> None:
        """Moves every Conv without padding whose input also feeds a padded Conv (an
        option-A shortcut's conv, a projection shortcut's 1x1 conv) with its weight Quant to
        right after the node that produces that input, and orders ``layers`` as their nodes.
        FINN sorts its graph by distance from the input (qonnx's SortGraph) and numbers its
        MVAUs in that order; it puts an FMPadding before a padded conv, so of two convs on
        the same input the unpadded one gets the lower number. The folding config names the
        MVAUs in the order of ``layers`` (checked against finn-plus 1.6.1 builds of
        models.resnet20 and of a projection-shortcut block)."""
        def pads(node) -> list[int]:
            return next((list(a.ints) for a in node.attribute if a.name == "pads"), [])

        convs = [n for n in self.nodes if n.op_type == "Conv"]
        padded_inputs = {n.input[0] for n in convs if any(pads(n))}
        compute = {layer.onnx_node for layer in self.layers}
        for conv in convs:
            if conv.name not in compute or any(pads(conv)) or conv.input[0] not in padded_inputs:
                continue
            quant = next((n for n in self.nodes if conv.input[1] in n.output), None)
            moved = [conv] if quant is None else [quant, conv]
            for node in moved:
                self.nodes.remove(node)
            at = next((i + 1 for i, n in enumerate(self.nodes) if conv.input[0] in n.output), 0)
            self.nodes[at:at] = moved
        position = {n.name: i for i, n in enumerate(self.nodes)}
        self.layers.sort(key=lambda layer: position[layer.onnx_node])

    def _pool(self, layer, x: Tensor) -> Tensor:
        _, h, w, c = x.kshape
        kernel, strides = tuple(layer.pool_size), tuple(layer.strides)
        pads = _same_pads((h, w), kernel, strides) if layer.padding == "same" else [0] * 4
        out_h = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        out_w = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        attrs = dict(kernel_shape=list(kernel), strides=list(strides), pads=pads)
        if isinstance(layer, L.MaxPooling2D):
            op_type = "MaxPool"
        else:
            op_type = "AveragePool"
            attrs["count_include_pad"] = 0  # TensorFlow averages over the valid inputs only
        out = self.op(op_type, [x.name], layer.name, **attrs)
        if op_type == "AveragePool":
            self._pool_notes[out] = (
                f"{layer.name!r}: FINN maps average pooling only in brevitas' QuantAvgPool2d "
                "form, not a plain AveragePool (GlobalAveragePool works)")
            if kernel == (1, 1) and not any(pads):
                self._subsamples[out] = (layer, x)
        return self._like(x, out, op_type, kshape=(1, out_h, out_w, c))

    def _global_pool(self, layer, x: Tensor) -> Tensor:
        is_max = isinstance(layer, L.GlobalMaxPooling2D)
        op_type = "GlobalMaxPool" if is_max else "GlobalAveragePool"
        c = x.kshape[-1]
        pooled = self._like(x, self.op(op_type, [x.name], layer.name), op_type,
                            kshape=(1, 1, 1, c))
        return pooled if layer.keepdims else self._flatten(pooled, f"{layer.name}_flatten")

    def _zero_pad(self, layer, x: Tensor) -> Tensor:
        (top, bottom), (left, right) = layer.padding
        _, h, w, c = x.kshape
        pads = self.const(f"{layer.name}_pads", [0, 0, top, left, 0, 0, bottom, right],
                          np.int64)
        out = self.op("Pad", [x.name, pads], layer.name, mode="constant")
        self.pad_notes[out] = (
            f"{layer.name!r}: FINN 1.6.1's InferFMPadding stops the build at a standalone Pad "
            "(it reads an axes input, which an opset-11 Pad does not have); only a "
            "ZeroPadding2D that feeds convolutions alone is folded into their pads")
        return self._like(x, out, "Pad", kshape=(1, h + top + bottom, w + left + right, c))

    def fold_pads(self) -> None:
        """Folds every Pad whose consumers are all Conv nodes into their ``pads`` (a
        ZeroPadding2D before a "valid" conv, as in models.resnet20's strided convs): FINN 1.6.1
        stops at a standalone opset-11 Pad. Any other Pad stays, named in finn_notes."""
        initializers = {t.name: t for t in self.initializers}
        consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        for pad in [n for n in self.nodes if n.op_type == "Pad"]:
            users = consumers.get(pad.output[0], [])
            if not users or any(u.op_type != "Conv" for u in users):
                if pad.output[0] in self.pad_notes:
                    self.finn_notes.append(self.pad_notes[pad.output[0]])
                continue
            widths = numpy_helper.to_array(initializers[pad.input[1]]).tolist()
            extra = widths[2:4] + widths[6:8]  # NCHW [0, 0, t, l, 0, 0, b, r] -> [t, l, b, r]
            for conv in users:
                attr = next(a for a in conv.attribute if a.name == "pads")
                summed = [int(p) + int(e) for p, e in zip(attr.ints, extra, strict=True)]
                del attr.ints[:]
                attr.ints.extend(summed)
                conv.input[0] = pad.input[0]
            self.nodes.remove(pad)
            self.initializers.remove(initializers[pad.input[1]])

    def _rescale(self, layer, x: Tensor) -> Tensor:
        y = self.op("Mul", [x.name, self.const(f"{layer.name}_scale", float(layer.scale))],
                    layer.name)
        if float(layer.scale) == 0.0 and float(layer.offset) == 0.0:
            self._zeros[y] = (x.name, layer.name)
        if float(layer.offset) != 0.0:
            y = self.op("Add", [y, self.const(f"{layer.name}_offset", float(layer.offset))],
                        f"{layer.name}_offset")
        return self._like(x, y, "Mul")

    # ------------------------------------------------------------------ the model

    def model(self, x: Tensor, out: Tensor, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, _onnx_name(name),
            [helper.make_tensor_value_info(x.name, TensorProto.FLOAT, x.onnx_shape)],
            [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, out.onnx_shape)],
            initializer=self.initializers,
        )
        return helper.make_model(
            graph, producer_name="uniq_tf.fpga_export", ir_version=ONNX_IR_VERSION,
            opset_imports=[helper.make_opsetid("", ONNX_OPSET),
                           helper.make_opsetid(QONNX_DOMAIN, 1)],
        )


def build_graph(
    stripped,
    input_shape: tuple[int, int, int],
    input_quant: QuantParams,
    codebooks: dict[str, Codebook],
    grids: dict[str, IntegerGrid],
    activations: dict[str, QuantParams],
) -> GraphResult:
    """The QONNX graph of ``stripped`` for one (1, C, H, W) input; see the module docstring."""
    builder = GraphBuilder(codebooks, grids, activations)
    x = Tensor(INPUT_NAME, (1,) + tuple(input_shape), "nchw")
    builder.claim(INPUT_NAME)
    quantized = builder.quant(x, input_quant, "input_quant")
    out = builder.build(stripped, quantized)
    builder.fold_pads()
    builder.hoist_unpadded_convs()
    # Name the graph output "output" by renaming the producing node's output.
    for node in builder.nodes:
        node.output[:] = [OUTPUT_NAME if o == out.name else o for o in node.output]
        node.input[:] = [OUTPUT_NAME if i == out.name else i for i in node.input]
    out = dataclasses.replace(out, name=OUTPUT_NAME)
    model = builder.model(x, out, stripped.name)
    return GraphResult(model, builder.layers, builder.finn_notes)
