"""fpga_export: UNIQ-quantized tf_keras models as FINN-ready QONNX bundles.

``export_finn(model, out_dir)`` writes model.onnx (weights on an integer grid through QONNX
Quant nodes, activations through Quant nodes FINN turns into thresholds), the codebooks and
indices beside it, a descriptor with per-layer costs, and FINN's build and folding configs.
Each layer's integer grid width B comes from the grid it was fine-tuned on
(``uniq_tf.set_grid_bits``), a level-error rule, ``weight_grid_bits``, or measured accuracy
(``weight_grid_bits="auto"``, :mod:`fpga_export.autogrid`).
"""

from fpga_export.export import FinnExport, export_finn
from fpga_export.grid import GRID_TOLERANCE, IntegerGrid, snap_codebook

__all__ = ["GRID_TOLERANCE", "FinnExport", "IntegerGrid", "export_finn", "snap_codebook"]
