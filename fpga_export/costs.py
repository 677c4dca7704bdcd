"""Per-layer cost figures of the exported graph, from uniq_tf.bops' formulas.

Bit widths: b (codebook index width, the paper's b_w, for a look-up-table design), B (the
integer grid width FINN computes with), and b_a = the width of the activation quantizer (or
the model input's) nearest upstream of the layer's input, through the layers that keep a bit
width (``uniq_tf.integration.registry.keeps_bit_width``): the rule and the counts of
``uniq_tf.summary``, so the descriptor's paper BOPs at b equal the summary's (called with the
bundle's input bits). A kernel layer left in float counts 32 x 32, as there.
``qonnx.util.inference_cost`` counts the same MACs; its BOPs take a tensor after batch norm, Add
or average pooling as float (32 bits), so they differ from ``MACs * B * b_a`` where such a
tensor feeds a layer without a quantizer in between (a classifier after global pooling).
"""

from __future__ import annotations

from fpga_export.onnx_graph import ComputeLayer
from uniq_tf.cost import bops

FLOAT_BITS = bops.FLOAT_BITS


def layer_costs(layer: ComputeLayer) -> dict:
    """MACs, BOPs by both formulas at b and at B, and weight memory of one compute layer."""
    grid_bits = layer.grid.bits if layer.grid is not None else FLOAT_BITS
    # A layer with fixed integer weights (an option-A shortcut) has no codebook: b = B.
    b = layer.codebook.bits if layer.codebook is not None else grid_bits
    # A float kernel layer counts 32 x 32, as uniq_tf.summary counts it.
    b_a = (layer.input_bits or FLOAT_BITS) if layer.grid is not None else FLOAT_BITS
    kh, kw = layer.kernel_size
    shape = (layer.out_channels, layer.in_channels, kh, kw)
    macs = bops.conv_macs(*shape, layer.out_pixels, layer.groups)

    def paper(b_w: int) -> float:
        return bops.conv_bops(*shape, b_w, b_a, layer.out_pixels, layer.groups)

    memory = {"grid_integers_bits": layer.weight_count * grid_bits}
    if layer.codebook is not None:
        rows, k = layer.grid.levels.shape
        memory.update(
            indices_bits=layer.weight_count * b,
            codebook_table_grid_bits=rows * k * grid_bits,
            codebook_table_float32_bits=rows * k * FLOAT_BITS,
        )
    return {
        "weight_index_bits": b,
        "weight_grid_bits": grid_bits,
        "input_bits": b_a,
        "macs": macs,
        "bops_paper_index_bits": paper(b),
        "bops_simple_index_bits": bops.simple_bops(macs, b, b_a),
        "bops_paper_grid_bits": paper(grid_bits),
        "bops_simple_grid_bits": bops.simple_bops(macs, grid_bits, b_a),
        "weight_memory": memory,
    }


def totals(rows: list[dict]) -> dict:
    """Sums of the per-layer figures over the model."""
    keys = ("macs", "bops_paper_index_bits", "bops_simple_index_bits", "bops_paper_grid_bits",
            "bops_simple_grid_bits")
    out = {key: sum(row[key] for row in rows) for key in keys}
    memory_keys = sorted({k for row in rows for k in row["weight_memory"]})
    out["weight_memory"] = {
        key: sum(row["weight_memory"].get(key, 0) for row in rows) for key in memory_keys
    }
    return out
