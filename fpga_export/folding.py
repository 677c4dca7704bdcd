"""FINN folding (PE, SIMD) of each compute layer for a target frame rate.

FINN runs a quantized Conv/Dense as an MVAU (matrix-vector unit: MW = (C_in / groups) k_h k_w
inputs, MH = C_out outputs per pixel) and a depthwise conv as a VVAU (MH = channels, MW = k_h
k_w). PE must divide MH and SIMD must divide MW; one frame takes about

    cycles = (MH / PE) * (MW / SIMD) * output pixels

clock cycles. For ``target_fps`` at a clock of 1000 / synth_clk_period_ns MHz a layer needs
cycles <= f_clk / target_fps; we choose the pair with the smallest PE * SIMD (the fewest
multipliers) that meets it, preferring the larger SIMD on ties (FINN's own SetFolding widens
SIMD first). As in SetFolding, an MVAU's weight stream per PE stays within
``MVAU_WWIDTH_MAX`` bits (SIMD * B <= 36, DataflowBuildConfig.mvau_wwidth_max's default); a
layer that cannot meet the target gets its fastest allowed folding. Without a target every
layer gets PE = SIMD = 1, the smallest design.

Node names: FINN renames nodes ``<op_type>_<i>`` in graph order. The build config's
specialize-layers file asks for the HLS variant of every MVAU/VVAU, so the compute layers are
``MVAU_hls_<i>`` and ``VVAU_hls_<i>`` in the order of the exported graph (checked against a
finn-plus 1.6.1 estimate build, see examples/finn_estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from fpga_export.onnx_graph import ComputeLayer

IMPL_STYLE = "hls"
MVAU_WWIDTH_MAX = 36


@dataclass(frozen=True)
class Folding:
    layer: str
    node: str
    mh: int
    mw: int
    pe: int
    simd: int
    pixels: int

    @property
    def cycles(self) -> int:
        return (self.mh // self.pe) * (self.mw // self.simd) * self.pixels


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def is_vvau(layer: ComputeLayer) -> bool:
    """A depthwise conv: one group per input channel."""
    return layer.onnx_op == "Conv" and layer.groups == layer.in_channels and layer.groups > 1


def choose(
    mh: int, mw: int, pixels: int, max_cycles: float | None, max_simd: int | None = None
) -> tuple[int, int]:
    """(PE, SIMD): the smallest PE * SIMD with cycles <= max_cycles and SIMD <= max_simd,
    else the fastest such pair (module docstring)."""
    if max_cycles is None:
        return 1, 1
    simds = [s for s in _divisors(mw) if max_simd is None or s <= max(max_simd, 1)]
    pairs = [(pe, simd) for pe in _divisors(mh) for simd in simds]
    fits = [(pe * simd, -simd, pe, simd) for pe, simd in pairs
            if (mh // pe) * (mw // simd) * pixels <= max_cycles]
    if not fits:
        return mh, max(simds)
    _, _, pe, simd = min(fits)
    return pe, simd


def fold(
    layers: list[ComputeLayer], target_fps: float | None, clock_period_ns: float
) -> list[Folding]:
    """The folding of every quantized compute layer (float layers do not become MVAUs)."""
    max_cycles = None if target_fps is None else 1e9 / clock_period_ns / target_fps
    counters = {"MVAU": 0, "VVAU": 0}
    out = []
    for layer in layers:
        if layer.grid is None:
            continue
        kind = "VVAU" if is_vvau(layer) else "MVAU"
        node = f"{kind}_{IMPL_STYLE}_{counters[kind]}"
        counters[kind] += 1
        mh, mw = layer.out_channels, layer.fan_in
        max_simd = None if kind == "VVAU" else MVAU_WWIDTH_MAX // layer.grid.bits
        pe, simd = choose(mh, mw, layer.out_pixels, max_cycles, max_simd)
        out.append(Folding(layer.name, node, mh, mw, pe, simd, layer.out_pixels))
    return out


def folding_config(foldings: list[Folding]) -> dict:
    """FINN's folding config JSON: {"Defaults": {}, node: {"PE", "SIMD", "ram_style"}}."""
    config: dict = {"Defaults": {}}
    for f in foldings:
        config[f.node] = {"PE": f.pe, "SIMD": f.simd, "ram_style": "auto"}
    return config
