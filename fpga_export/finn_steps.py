"""FINN build steps for uniq_tf bundles. Runs inside a FINN (finn-plus) environment, never in
the project's own: export_finn copies this file into every bundle, and a build imports it
from there before it reads dataflow_build_config.json.

Importing registers ``step_uniq_streamline`` in FINN's step table; the bundle's build config
names it in place of ``step_streamline``. It is FINN's step_streamline plus two things the
graphs exported from Keras need (checked with finn-plus 1.6.1):

- before: MoveLinearPastFork. An activation quantizer's output scale (a Mul after FINN's
  MultiThreshold) that feeds two consumers, a conv and a residual shortcut, is copied into
  both branches, so that the conv's input streamlines to integers and becomes an MVAU.
- after: GlobalAveragePool -> GlobalAccPool + Mul(1/N) (FINN's InferGlobalAccPoolLayer) and
  streamlining again, which absorbs the Mul into the thresholds of the exact quantizer the
  exporter puts after the pooling. Stock FINN converts GlobalAveragePool only after the
  thresholds became hardware layers, and the Mul is then left unmapped in the middle of the
  dataflow graph.
"""

from finn.builder.build_dataflow_steps import build_dataflow_step_lookup, step_streamline
from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (
    InferGlobalAccPoolLayer,
)
from finn.transformation.streamline import Streamline
from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
from finn.transformation.streamline.reorder import MoveLinearPastFork
from qonnx.transformation.infer_data_layouts import InferDataLayouts

STEP_NAME = "step_uniq_streamline"


def step_uniq_streamline(model, cfg):
    """FINN's step_streamline with the additions of the module docstring."""
    model = model.transform(MoveLinearPastFork())
    model = step_streamline(model, cfg)
    if model.get_nodes_by_op_type("GlobalAveragePool"):
        model = model.transform(InferGlobalAccPoolLayer())
        model = model.transform(Streamline())
        model = model.transform(AbsorbConsecutiveTransposes())
        model = model.transform(InferDataLayouts())
    return model


build_dataflow_step_lookup.setdefault(STEP_NAME, step_uniq_streamline)
