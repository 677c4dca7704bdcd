"""The hardware section: FINN's resource estimates for UNIQ's FPGA bundles.

Run by hand, outside CI, from the repository root as a module, in two environments (FINN's
``finn-plus`` lives in its own venv, see examples/finn_estimate.py for its setup):

    .venv/bin/python -m bench.fpga export --weight_bits=2,3,4          # ~1 min / width
    .venv/bin/python -m bench.fpga export --models=resnet20            # W4, ~5 min
    .venv/bin/python -m bench.fpga sweep --models=small_cnn,resnet20   # ~2 + ~10 min
    finn-venv/bin/python -m bench.fpga estimate   # per bundle ~10 s, resnet20 ~1 min
    .venv/bin/python -m bench.fpga table --plot=docs/img/fpga_bops_lut.png \
        --docs=docs/benchmarks.md

(outputs in ``outputs/bench/fpga``; an export keeps the rows of the models and widths it did
not run, a sweep those of the models it did not run; every step prints its progress with the
seconds since it started and records its wall time). ``export`` (project venv) trains each
model once per weight width b on the digits (seed 0, op determinism): 5 float epochs (Adam
3e-3), then UNIQ W{b}A8 (``quantize_model``'s defaults), activations calibrated, 2 epochs (Adam
5e-4), then 2 epochs in QUANTIZED mode (Adam 1e-4), all on the training split less its last
``VALIDATION_SIZE`` images, which are the validation data of "auto" and the check data of
every export. The input quantizer is the digits' exact one (``DIGITS_INPUT``: 5 bits, scale
1/16, unsigned). The last two epochs are the same for every UNIQ variant (same seed and data
order) but for the grid:

    default     no grid in training; export_finn's data-free rule (smallest B within 1% of
                each codebook's level gap)
    auto        no grid in training; export_finn(validation_data=...), which selects
                weight_grid_bits="auto": top-1 agreement with Keras within 0.5% on the
                validation images
    grid_b+1    the last two epochs on the (b + 1)-bit grid (uniq_tf.set_grid_bits); the
                default export keeps that grid
    grid_b      the same on the b-bit grid (B = b: 2^b levels on 2^b - 1 integers)
    uniform     the baseline: TFMOT's uniform b-bit QAT (bench.peers.uniform_qat: per
                channel, symmetric, narrow range from 3 bits, full range at 2) from the same
                float model with the same schedule (2 epochs Adam 5e-4, 2 epochs Adam 1e-4),
                exported through the same path: its weights, activation ranges and batch
                norms moved into a UNIQ-layout model and its kernels, exactly as TFMOT
                quantizes them, given as per-channel uniform codebooks
                (export_finn(codebooks=...)), so the bundle computes what the TFMOT model does

it writes one bundle per target throughput and records the widths, the Keras and ONNX test
accuracy (qonnx's executor on the 450 test images) and the weight memory in export.json.
``sweep`` (BOPs against logic) exports, for each model of ``--models``, post-training UNIQ
W{b}A{a} models (b = 2..8, a = 4, 8; no fine-tune) on the b-bit grid with one folding for all
points of the model, and records the BOPs ``uniq_tf.summary`` reports and the threshold count T
(over the activation quantizers and the input quantizer, channels x (2^bits - 1)). ``estimate``
(FINN's venv; no TensorFlow needed) runs examples/finn_estimate.py on every bundle not
estimated since it was written, one process at a time, and collects total LUT, the LUT of the
MVAUs and by node kind, BRAM_18K, FINN's estimated throughput, the thresholds of FINN's graph,
and whether FINN's MVAUs have the sizes and folding the descriptor gives the layers the folding
config names (FINN numbers them in its own graph order) in estimate.json. ``table`` prints
section 6 of docs/benchmarks.md: captions of what was run (models, settings, dates, machine,
wall times), the tables, the least-squares fits of LUT against BOPs and against BOPs and T (per
model, per activation width and across) with their R^2; ``--plot`` draws them (one panel per
model), and ``--docs`` rewrites the page's section between its ``fpga`` markers
(bench.common.splice_section). The generated text states no interpretation: that is
hand-written in bench/findings.md.

ResNet-20 runs on the 8x8 digits (``--models=resnet20``; CIFAR-10 is not available
offline). Its option-A shortcuts export as 1x1 stride-2 convs with constant [I; 0] weights
(fpga_export.onnx_graph), fixed 2-bit MVAUs in FINN.

Modules (none imports TensorFlow or uniq_tf when imported: train, export and sweep do inside
their functions, so FINN's venv, which has neither, runs ``estimate``):

    __main__.py   the command line (argparse), ``python -m bench.fpga PHASE``
    settings.py   the data split, the digits' input quantizer, the board, the progress line
    results.py    export.json, sweep.json, estimate.json: written atomically, read back
    train.py      the float, UNIQ, fine-tuned and uniform models (TensorFlow)
    export.py     ``export``: the variants, trained and exported at every throughput
    sweep.py      ``sweep``: BOPs against logic, and the threshold count T
    estimate.py   ``estimate``: FINN's builds and the checks of its folded graph
    fits.py       the least-squares fits of LUT on BOPs (and T) and their R^2
    tables.py     the markdown tables of section 6
    docs.py       section 6: captions, the section text, the splice into docs/benchmarks.md
    plot.py       the sweep's figure (``table --plot``)
"""
