"""`python -m cifar_lab.study`: which recipe makes a model more robust, over whole sweeps.

    python -m cifar_lab.study score <study dir> --sweep <multirun dir> [--sweep ...] [--corrupt]
        [predict's settings: ood=... ood.root=... detect=... attack=... tta=... data.root=...]
        [hydra/launcher=local|slurm hydra.launcher.*=...] [corrupt.*=... with --corrupt]
    python -m cifar_lab.study table <study dir> [--detector energy] [--attack pgd] [--eps 8]

`score` scores every finished run's best.ckpt with the same settings, as one Hydra multirun of
`cifar_lab.predict` (through the launcher given, as training went), skipping runs already
scored, then writes the table; `table` writes it again (study.csv, study.md, study.png,
curves.png in the study folder), e.g. for another detector. See `cifar_lab.sweeps.study_runs`
and `cifar_lab.sweeps.study_table`, and the README (Robustness study).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from cifar_lab.cli import check_command_line, exit_on_user_error
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.record import FINISHED, read_record
from cifar_lab.sweeps.study_runs import (
    CORRUPTIONS,
    SCORES,
    StudySettings,
    corrupt_command,
    corruption_set_complete,
    plan_scoring,
    predict_command,
    resolve_settings,
    runs_dataset,
    save_settings,
    score_dir,
    score_state,
    scored_set_overrides,
    set_aside,
    study_runs,
)
from cifar_lab.sweeps.study_table import OUTPUTS, write_study_table

EXAMPLES = """examples:
  python -m cifar_lab.study score outputs/study/robustness --sweep outputs/study/recipes \\
      --sweep outputs/study/adv --corrupt data.root=data/cifar10 detect=standard attack=pgd
  python -m cifar_lab.study score outputs/study/robustness     # again: only what is left
  python -m cifar_lab.study table outputs/study/robustness --detector energy
"""


def say(text: str) -> None:
    """A progress line: on stderr, so stdout holds only the table."""
    print(text, file=sys.stderr, flush=True)


def add_table_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--detector", help="the detector of the detection columns (default: the first of msp, "
        "maxlogit, energy, odin, mahalanobis, knn, vim, react_energy that was scored)"
    )  # fmt: skip
    parser.add_argument(
        "--attack", help="the attack of the robust-accuracy column (default: the strongest run: "
        "autoattack, apgd, pgd, fgsm)"
    )  # fmt: skip
    parser.add_argument(
        "--eps", help="its eps as in the metric names, e.g. 8 (/255 for linf; default: the "
        "largest it was run at)"
    )  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m cifar_lab.study",
        description=__doc__.split("\n")[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{score,table}")
    score = commands.add_parser(
        "score",
        usage="python -m cifar_lab.study score STUDY_DIR --sweep DIR [--sweep DIR ...] "
        "[--corrupt] [key=value ...]",
        description="key=value: predict's settings for every run (ood=, detect=, attack=, tta=, "
        "data.root=, ...; held in study.json: a later call gives the same or none), the "
        "launcher's (hydra/launcher=local|slurm, hydra.launcher.*, data.num_workers, "
        "data.eval_batch_size: per call) and, with --corrupt, corrupt.* for the generated set.",
        help="score every finished run of the sweeps (skipping those already scored), then "
        "write the table",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("study_dir", type=Path, help="the study's folder (made if missing)")
    score.add_argument(
        "--sweep", type=Path, action="append", default=[], help="a multirun folder "
        "(hydra.sweep.dir) or one run's folder; repeat it for several; later calls add to them"
    )  # fmt: skip
    score.add_argument(
        "--corrupt", action="store_true", help="generate a CIFAR-C-style set from the runs' test "
        f"split into <study>/{CORRUPTIONS} once (python -m cifar_lab.corrupt, corrupt.* keys "
        "pass to it) and score it (ood=<data>c)"
    )  # fmt: skip
    add_table_options(score)
    table = commands.add_parser("table", help="write the study's table and figures")
    table.add_argument("study_dir", type=Path, help="a folder `score` wrote")
    add_table_options(table)
    # key=value overrides may stand anywhere (argparse's intermixed parsing has no subcommands)
    args, extra = parser.parse_known_args(argv)
    args.overrides = [arg for arg in extra if "=" in arg and not arg.startswith("-")]
    unknown = [arg for arg in extra if arg not in args.overrides]
    if unknown or (args.overrides and args.command != "score"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    return args


def generate_corruptions(study_dir: Path, settings: StudySettings, dataset: str) -> None:
    """The study's corruption set, written once: a later call finds it complete and reuses it
    (study.json fixes the settings it was made with)."""
    out = study_dir / CORRUPTIONS
    if corruption_set_complete(out):
        say(f"reusing the corruption set in {out}")
        return
    command = corrupt_command(study_dir, dataset, settings.predict, settings.corrupt or [])
    say(f"generating the corruption set: python {' '.join(command[1:])}")
    if subprocess.run(command).returncode != 0:
        raise CifarLabError(
            f"generating the corruption set into {out} failed (its error is above); fix it and "
            f"run the study again (a rerun completes the set)"
        )


def score(args: argparse.Namespace) -> int:
    """Score what is left; the exit code: 0, or 1 when a run's scoring did not finish."""
    study_dir = args.study_dir.expanduser().resolve()
    settings = resolve_settings(study_dir, args.sweep, args.overrides, args.corrupt)
    runs = study_runs(settings.sweeps)
    scored_set = []
    if settings.corrupt is not None:
        dataset = runs_dataset(runs)
        scored_set = scored_set_overrides(study_dir, dataset)
        check_command_line("corrupt", [f"data={dataset}", *settings.corrupt])
    overrides = [*settings.predict, *scored_set, *settings.launch]
    check_command_line("predict", overrides)
    save_settings(study_dir, settings)
    plan = plan_scoring(study_dir, runs)
    if plan.scored:
        say(f"skipped {len(plan.scored)} already scored: {', '.join(r.name for r in plan.scored)}")
    for run in plan.busy:
        say(f"skipped {run.name}: being scored now ({score_dir(study_dir, run)})")
    for run, why in plan.unscorable:
        say(f"not scored: {run.name} ({why})")
    if not plan.todo:
        say("nothing to score" if plan.scored or plan.unscorable else "no runs to score")
        return 0
    if settings.corrupt is not None:
        generate_corruptions(study_dir, settings, dataset)
    for run in plan.todo:
        kept = set_aside(score_dir(study_dir, run))
        if kept is not None:
            why = "stale" if run in plan.stale else score_state_text(kept)
            say(f"{run.name}: the earlier attempt ({why}) is kept in {kept}")
    say(f"scoring {len(plan.todo)} runs into {study_dir / SCORES}")
    subprocess.run(predict_command(study_dir, plan.todo, overrides))
    failed = [run for run in plan.todo if score_state(study_dir, run) != FINISHED]
    for run in failed:
        say(
            f"error: scoring {run.name} did not finish; see {score_dir(study_dir, run)}/predict.log"
        )
    return 1 if failed else 0


def score_state_text(folder: Path) -> str:
    return str(read_record(folder).get("status") or "no metrics.json")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    code = 0
    with exit_on_user_error():
        if args.command == "score":
            code = score(args)
        text = write_study_table(args.study_dir, args.detector, args.attack, args.eps)
    print(text)
    say(f"wrote {', '.join(OUTPUTS)} in {args.study_dir}")
    raise SystemExit(code)


if __name__ == "__main__":
    main()
