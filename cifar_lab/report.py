"""`python -m cifar_lab.report <multirun dir>`: rank a sweep's jobs in one table and one figure.

    python -m cifar_lab.report outputs/train/multirun/2026-01-31_12-00-00
    python -m cifar_lab.report <dir> --metric val/loss --mode min --top 5

Writes report.csv and report.png into the sweep folder (see `cifar_lab.sweeps.sweep_report`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_lab.cli import exit_on_user_error
from cifar_lab.sweeps.sweep_report import write_sweep_report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_lab.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun folder (hydra.sweep.dir)")
    parser.add_argument(
        "--metric", help="rank by this metric (default: the sweep's optimized_metric)"
    )
    parser.add_argument(
        "--mode", choices=["max", "min"], help="default: the sweeper's direction, else max"
    )
    parser.add_argument(
        "--curve", default="val/acc", help="metric plotted per epoch for the top jobs"
    )
    parser.add_argument("--top", type=int, default=3, help="how many jobs' curves to plot")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        text = write_sweep_report(args.sweep_dir, args.metric, args.mode, args.curve, args.top)
    print(text)
    written = f"{args.sweep_dir / 'report.csv'} and {args.sweep_dir / 'report.png'}"
    print(f"wrote {written}", file=sys.stderr)


if __name__ == "__main__":
    main()
