"""BOPs (bit operations): the UNIQ paper's complexity measure, per layer and per model.

Baskin et al. 2021 (docs/bops.md, "How the numbers are counted"). An output element that sums ``f``
products of b_a-bit activations and b_w-bit weights costs

    BOPs = f * (b_a * b_w + b_a + b_w + log2(f))

f multiplications (b_a * b_w each) and f additions at the accumulator width
b_o = b_a + b_w + log2(f). A conv layer with m output channels, n input channels, a k_h x k_w
kernel and P output positions has f = n k_h k_w / groups and m P output elements, so for
groups = 1: ``m n k^2 (b_a b_w + b_a + b_w + log2(n k^2)) P``. Depthwise conv is groups = n,
Dense is k = 1 with one position. log2 is the real logarithm, as in the paper. The simpler count
other tools report (``qonnx.util.inference_cost``'s total_bops) is ``MACs * b_w * b_a``.

Bit widths (``summary``, :mod:`uniq_tf.bitwidths`): b_w is the kernel quantizer's codebook
index width; b_a of a layer is the width of the nearest activation quantizer upstream of its
input, found by walking the graph back through layers that keep the bit width
(:data:`PASS_THROUGH_TYPES`; merges take the widest input), across nested-model boundaries
both ways. The model input counts ``input_bits``; any other producer without a quantizer (a
conv output, a float layer, SeparableConv2D's internal depthwise output) counts 32. A kernel
layer left in float counts 32 x 32. Bits come from the quantizers' configuration, not from the
modes a schedule has set: the fully quantized network.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from uniq_tf import internals
from uniq_tf._keras import keras, require_keras2_model, tf
from uniq_tf.cost.bitwidths import FLOAT_BITS, BitResolver, inner_layer, model_nodes
from uniq_tf.cost.formulas import (  # noqa: F401  (the formulas, also read from here)
    FIXED_SHAPE_ADVICE,
    KernelOp,
    accumulator_bits,
    check_bits,
    conv_bops,
    conv_fan_in,
    conv_macs,
    conv_output_length,
    dense_bops,
    dense_macs,
    depthwise_bops,
    depthwise_macs,
    kernel_ops,
    output_bops,
    simple_bops,
)
from uniq_tf.integration import plan as planning
from uniq_tf.integration import registry
from uniq_tf.integration.configs import KernelQuantizeConfig
from uniq_tf.integration.inspection import (
    QuantizedModel,
    is_quantized_model,
    is_uniq_wrapper,
    wrappers,
)
from uniq_tf.method.settings import UniqSettings
from uniq_tf.util import atomic, graph

L = keras.layers
CODEBOOK_ENTRY_BITS = 32



# --------------------------------------------------------------------------- the report


@dataclass
class BopsReport:
    """Per-layer costs of one model (``layers``: one dict per layer call, forward order)."""

    model: str
    input_bits: int
    layers: list[dict]
    max_bops: float | None = None
    max_weight_bytes: float | None = None

    @property
    def total_bops(self) -> float:
        """The paper's BOPs, summed over layers."""
        return sum(row["bops"] for row in self.layers)

    @property
    def total_bops_simple(self) -> int:
        """MACs * b_w * b_a, summed over layers (qonnx's total_bops)."""
        return sum(row["bops_simple"] for row in self.layers)

    @property
    def total_macs(self) -> int:
        return sum(row["macs"] for row in self.layers)

    @property
    def total_params(self) -> int:
        return sum(row["params"] for row in self.layers)

    @property
    def total_weight_memory_bits(self) -> int:
        return sum(row["weight_memory_bits"] for row in self.layers)

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "input_bits": self.input_bits,
            "total_bops": self.total_bops,
            "total_bops_simple": self.total_bops_simple,
            "total_macs": self.total_macs,
            "total_params": self.total_params,
            "total_weight_memory_bits": self.total_weight_memory_bits,
            "layers": [dict(row) for row in self.layers],
        }

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            atomic.write_text(path, text)
        return text

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """One row per layer; the columns of :data:`CSV_COLUMNS` (no totals row)."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.layers:
            writer.writerow({**row, "output_shape": "x".join(
                "?" if d is None else str(d) for d in row["output_shape"][1:])})
        text = buffer.getvalue()
        if path is not None:
            atomic.write_text(path, text)
        return text

    def table(self) -> str:
        """The per-layer table with totals, in the style of larq.models.summary."""
        return _format_table(self)

    __str__ = table

    def __repr__(self) -> str:
        return (
            f"BopsReport(model={self.model!r}, layers={len(self.layers)}, "
            f"total_macs={self.total_macs}, total_bops={self.total_bops:.6g}, "
            f"total_bops_simple={self.total_bops_simple})"
        )


CSV_COLUMNS = (
    "name", "type", "output_shape", "params", "weight_bits", "activation_bits",
    "codebook_size", "codebooks", "macs", "bops", "bops_simple", "weight_memory_bits",
)


def summary(
    model,
    weight_bits: int | None = None,
    activation_bits: int | None = None,
    *,
    layer_bits: Mapping[str, tuple[int | None, int | None]] | None = None,
    skip_layers: Iterable[str] = (),
    per_channel: bool = False,
    input_bits: int = 8,
    max_bops: float | None = None,
    max_weight_bytes: float | None = None,
) -> BopsReport:
    """Per-layer MACs, BOPs (paper and MACs x b_w x b_a), bit widths and weight memory.

    For a model made by ``uniq_tf.quantize_model`` the bit widths are read from its quantizers
    and no bit arguments are allowed. For a float model, pass the plan you would give
    ``quantize_model`` (``weight_bits``, ``activation_bits``, ``layer_bits``, ``skip_layers``,
    ``per_channel``), resolved by the same rules, to price it before training; with no bits
    the float model is priced at 32 x 32 everywhere. See the module docstring for how each
    layer's activation width is found. ``print(report)`` shows the table.

    Args:
        model: a built tf_keras Sequential/Functional model with a fixed input shape, or a
            ``uniq_tf.QuantizedModel`` (read once, as the exporters read it).
        input_bits: the width of the model input (8 for image data), 1..32.
        weight_bits, activation_bits, layer_bits, skip_layers, per_channel: a float model's
            plan, as for ``uniq_tf.quantize_model`` (not allowed for a quantized model).
        max_bops, max_weight_bytes: budgets (e.g. those given to ``uniq_tf.allocate_bits``)
            the table's totals are shown against.

    Returns:
        A :class:`BopsReport`: one row per layer call, totals (``total_bops``,
        ``total_bops_simple``, ``total_macs``, ``total_weight_memory_bits``), ``to_json``,
        ``to_csv`` and ``table()``.

    Raises:
        TypeError: ``model`` is not a tf_keras model.
        ValueError: the model has no graph with known shapes, holds another library's quantize
            wrappers, is quantized and bit arguments were given, or an argument is invalid.
    """
    quantized = model if isinstance(model, QuantizedModel) else None
    model = require_keras2_model(model.model if quantized else model)
    _check_priceable(model, f"model {model.name!r}")
    input_bits = check_bits(input_bits, "input_bits")
    spec_given = (
        weight_bits is not None or activation_bits is not None or layer_bits is not None
        or bool(skip_layers) or per_channel
    )
    found = quantized.wrappers if quantized else wrappers(model)
    foreign = [w.name for w in found if not is_uniq_wrapper(w)]
    if foreign:
        raise ValueError(
            f"Model {model.name!r} has quantize wrappers uniq_tf did not make ({foreign[:3]}"
            f"{'...' if len(foreign) > 3 else ''}), e.g. TFMOT's own 8-bit quantize_model. "
            "summary prices float models and models from uniq_tf.quantize_model; price TFMOT's "
            "8-bit QAT as summary(float_model, weight_bits=8, activation_bits=8)."
        )
    if is_quantized_model(model):
        if spec_given:
            raise ValueError(
                f"Model {model.name!r} is already quantized: summary reads its bit widths from "
                "its quantizers. Bit arguments (weight_bits, activation_bits, layer_bits, "
                "skip_layers, per_channel) apply to float models only."
            )
        configs = quantized.configs if quantized else {w.name: w.quantize_config for w in found}
    elif spec_given:
        configs = _plan(model, weight_bits, activation_bits, layer_bits, skip_layers, per_channel)
    else:
        configs = {}
    return BopsReport(model.name, input_bits, _rows(model, BitResolver(configs, input_bits)),
                      max_bops, max_weight_bytes)


def _check_priceable(model, where: str) -> None:
    for each in (model, *graph.nested_models(model)):
        name = where if each is model else f"nested model {each.name!r}"
        if not each.built or not internals.is_graph_network(each):
            raise ValueError(
                f"{name} ({type(each).__name__}) has no graph with known shapes: it is "
                f"{'not built' if not each.built else 'subclassed or built without an Input'}. "
                f"BOPs need every layer's output shape. {FIXED_SHAPE_ADVICE}"
            )


def _plan(model, weight_bits, activation_bits, layer_bits, skip_layers, per_channel) -> dict:
    """The QuantizeConfigs quantize_model would give ``model``, by layer name."""
    if weight_bits is None or activation_bits is None:
        raise ValueError(
            "To price a float model as quantized, give both weight_bits and activation_bits "
            f"(got weight_bits={weight_bits!r}, activation_bits={activation_bits!r}); "
            "layer_bits then overrides them per layer. Give none of them to price it in float."
        )
    settings = UniqSettings(weight_bits, activation_bits, per_channel=bool(per_channel))
    return planning.plan(model, planning.annotations_for(model, layer_bits, skip_layers),
                         settings)


def _rows(model, resolver: BitResolver) -> list[dict]:
    rows, seen, unpriced = [], {}, []
    for layer, node, scope in model_nodes(model):
        seen[layer.name] = seen.get(layer.name, 0) + 1
        name = layer.name if seen[layer.name] == 1 else f"{layer.name}[call {seen[layer.name]}]"
        inner = inner_layer(layer)
        output_shape = tuple(tf.nest.flatten(node.outputs)[0].shape)
        params = _param_count(inner)
        row = {
            "name": name, "type": type(inner).__name__, "output_shape": list(output_shape),
            "params": params, "weight_bits": None, "activation_bits": None,
            "codebook_size": None, "codebooks": 0, "macs": 0, "bops": 0.0, "bops_simple": 0,
            "weight_memory_bits": params * FLOAT_BITS,
        }
        if registry.kernel_attributes(inner) is not None:
            row.update(_kernel_row(inner, resolver.config(layer), output_shape,
                                   resolver.input_width(node, scope)))
        elif inner.weights and not isinstance(inner, registry.PASS_THROUGH_TYPES):
            unpriced.append(f"{name} ({type(inner).__name__})")
        rows.append(row)
    if unpriced:
        warnings.warn(
            "BOPs count Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D and Dense layers only; "
            "these layers hold weights but are not counted: " + ", ".join(unpriced),
            stacklevel=3,
        )
    return rows


def _param_count(layer) -> int:
    """Parameters of ``layer``, kernels included also when a QuantizeWrapper took them over."""
    attrs = registry.kernel_attributes(layer) or {}
    kernels = sum(math.prod(getattr(layer, attr).shape) for attr in attrs)
    others = [w for w in layer.weights if graph.weight_name(w) not in attrs]
    return kernels + sum(math.prod(w.shape) for w in others)


def _kernel_row(layer, config, output_shape, b_a: int) -> dict:
    attrs = registry.kernel_attributes(layer)
    if isinstance(config, KernelQuantizeConfig):
        quantizers = config.weight_quantizers
        weight_bits = {attr: quantizers[attr].bits for attr in attrs}
    else:
        quantizers, b_a = {}, FLOAT_BITS
        weight_bits = dict.fromkeys(attrs, FLOAT_BITS)
    # SeparableConv2D's depthwise output has no quantizer of its own: a float intermediate.
    ops = kernel_ops(layer, output_shape, weight_bits, b_a, FLOAT_BITS)
    memory, codebooks, kernel_params = 0, 0, 0
    for attr in attrs:
        shape = tuple(getattr(layer, attr).shape)
        size = math.prod(shape)
        kernel_params += size
        quantizer = quantizers.get(attr)
        if quantizer is None:
            memory += size * FLOAT_BITS
            continue
        count = math.prod(shape[a] for a in quantizer.channel_axes or ())
        codebooks += count
        memory += size * quantizer.bits + count * 2**quantizer.bits * CODEBOOK_ENTRY_BITS
    memory += (_param_count(layer) - kernel_params) * FLOAT_BITS
    first = ops[0]
    return {
        "weight_bits": first.b_w,
        "activation_bits": first.b_a,
        "codebook_size": 2**first.b_w if quantizers else None,
        "codebooks": codebooks,
        "macs": sum(op.macs for op in ops),
        "bops": sum(op.bops for op in ops),
        "bops_simple": sum(op.bops_simple for op in ops),
        "weight_memory_bits": memory,
        "parts": [op.to_dict() for op in ops],
    }


# --------------------------------------------------------------------------- table


def si(value: float) -> str:
    """``value`` with an SI suffix (k, M, G, T, P) and 4 significant digits."""
    if value == 0:
        return "0"
    for exponent, suffix in ((15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")):
        if abs(value) >= 10**exponent:
            return f"{value / 10**exponent:.4g}{suffix}"
    return f"{value:.4g}"


def _bits_text(row: dict, key: str) -> str:
    values = [part[key] for part in row.get("parts", [])]
    return "/".join(dict.fromkeys(str(v) for v in values)) if values else ""


_COLUMNS = (
    ("Layer", "<"), ("Type", "<"), ("Output shape", "<"), ("Params", ">"), ("W bits", ">"),
    ("A bits", ">"), ("Codebook", ">"), ("MACs", ">"), ("BOPs", ">"), ("MACs*bw*ba", ">"),
    ("W memory", ">"),
)


def _format_table(report: BopsReport) -> str:
    cells = [
        (
            row["name"], row["type"],
            "(" + ", ".join("?" if d is None else str(d) for d in row["output_shape"][1:]) + ")",
            f"{row['params']:,}", _bits_text(row, "weight_bits"),
            _bits_text(row, "activation_bits"),
            "" if row["codebook_size"] is None else str(row["codebook_size"]),
            si(row["macs"]), si(row["bops"]), si(row["bops_simple"]),
            si(row["weight_memory_bits"]),
        )
        for row in report.layers
    ]
    totals = (
        "Total", "", "", f"{report.total_params:,}", "", "", "", si(report.total_macs),
        si(report.total_bops), si(report.total_bops_simple),
        si(report.total_weight_memory_bits),
    )
    widths = [
        max(len(title), *(len(c[i]) for c in [*cells, totals]))
        for i, (title, _) in enumerate(_COLUMNS)
    ]

    def line(values):
        return "  ".join(
            f"{v:{align}{w}}" for v, (_, align), w in zip(values, _COLUMNS, widths, strict=True)
        ).rstrip()

    rule = "-" * len(line([title for title, _ in _COLUMNS]))
    float_bits = report.total_params * FLOAT_BITS
    ratio = float_bits / report.total_weight_memory_bits if report.total_weight_memory_bits else 0
    return "\n".join([
        f"BOPs summary of {report.model!r} (model input: {report.input_bits} bits; "
        "A bits = width of the activations a layer multiplies)",
        rule, line([title for title, _ in _COLUMNS]), rule,
        *(line(c) for c in cells), rule, line(totals), rule,
        f"Total MACs: {report.total_macs:,}",
        f"Total BOPs (paper, m n k^2 (b_a b_w + b_a + b_w + log2 n k^2) P): "
        f"{report.total_bops:.6g}",
        f"Total BOPs (MACs x b_w x b_a): {report.total_bops_simple:,}",
        f"Weight memory: {report.total_weight_memory_bits / 8 / 2**20:.3f} MiB "
        f"({ratio:.2f}x smaller than float32's {float_bits / 8 / 2**20:.3f} MiB)",
        *_budget_lines(report),
    ])


def _budget_lines(report: BopsReport) -> list[str]:
    lines = []
    for what, used, budget in (
        ("BOPs", report.total_bops, report.max_bops),
        ("weight bytes", report.total_weight_memory_bits / 8, report.max_weight_bytes),
    ):
        if budget is not None:
            verdict = "within" if used <= budget else "OVER"
            lines.append(f"Budget of {what}: {budget:.6g}; the plan uses {used:.6g} "
                         f"({100 * used / budget:.1f} %, {verdict} budget)")
    return lines
