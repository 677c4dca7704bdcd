"""The command line: ``python -m bench.fpga export|sweep|estimate|table`` (see bench.fpga)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench import fpga
from bench.fpga.docs import FIGURE, section_text, write_docs
from bench.fpga.estimate import estimate
from bench.fpga.export import export
from bench.fpga.plot import plot_sweep
from bench.fpga.results import load, sweep_points
from bench.fpga.sweep import sweep
from bench.fpga.tables import sweep_table, variants_table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fpga",
                                     description=fpga.__doc__.splitlines()[0])
    parser.add_argument("phase", choices=("export", "sweep", "estimate", "table"))
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/bench/fpga"))
    parser.add_argument("--models", default="small_cnn",
                        help="comma-separated uniq_tf.models names (8x8 digits input); sweep: "
                             "each in turn")
    parser.add_argument("--weight_bits", default="4", help="comma-separated b")
    parser.add_argument("--target_fps", default="1000,10000", help="comma-separated")
    parser.add_argument("--sweep_weight_bits", default="2,3,4,5,6,7,8")
    parser.add_argument("--sweep_activation_bits", default="4,8")
    parser.add_argument("--sweep_fps", type=float, default=10000.0)
    parser.add_argument("--plot", type=Path, default=None,
                        help="table: write the sweep's LUT-against-BOPs plot here (PNG)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="table: rewrite section 6 of this page (docs/benchmarks.md) "
                             "between its fpga markers")
    args = parser.parse_args(argv)
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    if args.phase == "export":
        export(output_dir, args.models.split(","),
               [int(b) for b in args.weight_bits.split(",")],
               [float(f) for f in args.target_fps.split(",")])
    elif args.phase == "sweep":
        sweep(output_dir, args.models.split(","),
              [int(b) for b in args.sweep_weight_bits.split(",")],
              [int(b) for b in args.sweep_activation_bits.split(",")], args.sweep_fps)
        return
    elif args.phase == "estimate":
        estimate(output_dir)
    data = load(output_dir)
    if args.phase != "table":
        if data["export"]:
            print(variants_table(data, output_dir))
        if data["sweep"]:
            print(sweep_table(data))
        return
    figure = FIGURE
    if args.plot is not None and sweep_points(data):
        plot_sweep(data, args.plot)
        if args.docs is not None:
            figure = os.path.relpath(args.plot.resolve(), args.docs.resolve().parent)
    print(section_text(data, output_dir, figure))
    if args.docs is not None:
        write_docs(output_dir, args.docs, figure)


if __name__ == "__main__":
    main()
