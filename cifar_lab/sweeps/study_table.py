"""The table and figures of a robustness study (`python -m cifar_lab.study table`).

One row per run of the study's sweeps, in sweep and job order: the overrides that differ between
runs, the training's status, length and cost, the scoring's status, and the stress-test metrics
of the run's scoring folder under their metrics.json names (README, Robustness study):

    clean/acc, clean/ece, clean/ts/ece          accuracy; calibration before/after temperature
    ood/acc/mean_unseen, ood/acc/mean_all       corruption means (mean_present for a partial set)
    ood/seen                                    the corruptions the run's augmentation covers
    ood/unseen_gain                             mean over the run's unseen corruptions of its
                                                accuracy minus the first scored run's on the same
                                                ones (each run's unseen set differs, so the
                                                means alone do not compare)
    detect/<detector>/mean_near|far/auroc       OOD detection, one detector (--detector)
    adv/<attack>/eps<e>/acc                     robust accuracy, one attack and eps (--attack/--eps)
    train/wall_s, train/images_per_s            what training cost

A metric a run's scoring did not produce is an empty cell; a run whose training or scoring has
not finished (running, killed, stopped, failed, no best.ckpt) shows its status and no numbers,
never partial results. Written into the study folder: study.csv, study.md, study.png (clean
accuracy against each robustness axis, runs as labelled points) and curves.png (each run's
val/acc per epoch, solid, and its `probe/corrupt_acc`, dashed, where it trained with the
corruption probe).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cifar_lab.errors import CifarLabError
from cifar_lab.files import atomic_write, write_csv
from cifar_lab.runs.record import FINISHED, read_record
from cifar_lab.sweeps.study_runs import (
    STUDY_FILE,
    StudyRun,
    read_settings,
    saved_config_value,
    score_dir,
    scoring_status,
    study_runs,
)
from cifar_lab.sweeps.sweep_report import (
    Job,
    curve,
    first_line,
    markdown,
    number,
    read_job,
    swept_keys,
)

# The contract's detector names, the usual baseline first (the default when several are there).
DETECTORS = ("msp", "maxlogit", "energy", "odin", "mahalanobis", "knn", "vim", "react_energy")
# Strongest first: robust accuracy is the worst case, so the default is the strongest attack run.
ATTACKS = ("autoattack", "apgd", "pgd", "fgsm")
DEFAULT_DETECTOR, DEFAULT_ATTACK, DEFAULT_EPS = "msp", "pgd", "8"
PROBE_CURVE, CLEAN_CURVE = "probe/corrupt_acc", "val/acc"
OUTPUTS = ("study.csv", "study.md", "study.png", "curves.png")


@dataclass
class StudyRow:
    """A run as the study sees it: its training (the sweep report's reading of the job folder),
    the status of its scoring and, once finished, the scoring's metrics."""

    run: StudyRun
    job: Job
    training: dict[str, Any]
    score_status: str
    score: dict[str, Any]

    @property
    def scored(self) -> bool:
        return self.score_status == "scored"


def read_rows(study_dir: Path, runs: Sequence[StudyRun]) -> list[StudyRow]:
    rows = []
    for run in runs:
        status = scoring_status(study_dir, run)
        score = read_record(score_dir(study_dir, run)) if status == "scored" else {}
        job = read_job(run.path, run.sweep, "val/acc_best")
        rows.append(StudyRow(run, job, read_record(run.path), status, score))
    return rows


# --- which detector and attack --------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    detector: str
    attack: str
    eps: str


def logged_keys(rows: Iterable[StudyRow]) -> set[str]:
    return {key for row in rows for key in row.score}


def choose(
    rows: Sequence[StudyRow], detector: str | None, attack: str | None, eps: str | None
) -> Choice:
    """The detector and attack of the table: as asked, else the first in `DETECTORS` /
    `ATTACKS` that a run was scored with (the largest eps it was run at), else the defaults."""
    keys = logged_keys(rows)
    if detector is None:
        found = [d for d in DETECTORS if any(k.startswith(f"detect/{d}/mean_") for k in keys)]
        detector = found[0] if found else DEFAULT_DETECTOR
    if attack is None:
        found = [a for a in ATTACKS if any(k.startswith(f"adv/{a}/eps") for k in keys)]
        attack = found[0] if found else DEFAULT_ATTACK
    if eps is None:
        pattern = re.compile(rf"adv/{re.escape(attack)}/eps([^/]+)/acc")
        found_eps = [m.group(1) for k in keys if (m := pattern.fullmatch(k))]
        eps = max(found_eps, key=eps_value) if found_eps else DEFAULT_EPS
    return Choice(detector, attack, eps)


def eps_value(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return -math.inf


def metric_columns(rows: Sequence[StudyRow], choice: Choice) -> list[str]:
    """The stress-test columns, by their metrics.json names. The all-corruption mean is
    `mean_all` (every corruption scored) or, when no run has it, `mean_present` (a partial set):
    never a partial mean under the full mean's name."""
    keys = logged_keys(rows)
    corrupt_all = "ood/acc/mean_all"
    if corrupt_all not in keys and "ood/acc/mean_present" in keys:
        corrupt_all = "ood/acc/mean_present"
    d, a = choice.detector, choice.attack
    return [
        "clean/acc",
        "clean/ece",
        "clean/ts/ece",
        "ood/acc/mean_unseen",
        corrupt_all,
        "ood/seen",
        UNSEEN_GAIN,
        f"detect/{d}/mean_near/auroc",
        f"detect/{d}/mean_far/auroc",
        f"adv/{a}/eps{choice.eps}/acc",
    ]


UNSEEN_GAIN = "ood/unseen_gain"
CORRUPTION_MEAN = re.compile(r"ood/acc/(?!mean_)(\w+)/mean")


def corruption_means(score: Mapping[str, Any]) -> dict[str, float]:
    """Each scored corruption's mean accuracy over its severities, by name."""
    found = (CORRUPTION_MEAN.fullmatch(key) for key in score)
    return {match[1]: float(score[match[0]]) for match in found if match}


def unseen_gain(score: Mapping[str, Any], reference: Mapping[str, Any]) -> float | None:
    """The run's accuracy minus the reference run's, averaged over the corruptions the run's
    augmentation does not cover (`ood/seen`) that both scored; None without such corruptions."""
    mine, theirs = corruption_means(score), corruption_means(reference)
    seen = set(score.get("ood/seen") or ())
    shared = [name for name in mine if name in theirs and name not in seen]
    if not shared:
        return None
    return sum(mine[name] - theirs[name] for name in shared) / len(shared)


# Which columns study.png plots against clean accuracy: every robustness axis.
def robustness_axes(columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c.startswith(("ood/acc/", "detect/", "adv/"))]


COST_COLUMNS = ("train/wall_s", "train/images_per_s")


def metric_value(score: Mapping[str, Any], key: str, reference: Mapping[str, Any]) -> Any:
    if key == UNSEEN_GAIN:
        return unseen_gain(score, reference)
    value = score.get(key)
    if key == "ood/seen":  # a list of corruption names; an empty list is "none seen"
        return None if value is None else ", ".join(map(str, value)) or "none"
    return number(value)


# --- training cost --------------------------------------------------------------------------
def training_cost(row: StudyRow) -> tuple[float | None, float | None, str]:
    """(wall seconds, images/s, note) of the run's training: recorded by train
    (`train/wall_s`, `train/images_per_s`), or, for a finished run trained before train
    recorded them, estimated from its start/end time and steps x batch size (said in the note)."""
    record = row.training
    wall, rate = number(record.get("train/wall_s")), number(record.get("train/images_per_s"))
    if wall is not None or record.get("status") != FINISHED:
        return wall, rate, ""
    try:
        start = datetime.fromisoformat(str(record["start_time"]))
        wall = (datetime.fromisoformat(str(record["end_time"])) - start).total_seconds()
    except (KeyError, ValueError):
        return None, None, ""
    batch = number(saved_config_value(row.run.path, "data.batch_size"))
    steps = number(record.get("global_step"))
    rate = steps * batch / wall if steps is not None and batch and wall > 0 else None
    return wall, rate, "cost estimated from start/end time and steps x batch"


# --- the table ------------------------------------------------------------------------------
def table(
    rows: Sequence[StudyRow], columns: Sequence[str], study_dir: Path
) -> tuple[list[str], list[list[Any]]]:
    """Header and rows (raw values) of the study table."""
    keys = swept_keys([row.job for row in rows])
    header = ["run", "train", "score", *keys, "epochs", *columns, *COST_COLUMNS, "note"]
    reference = reference_row(rows)
    ref_score = reference.score if reference else {}
    out = []
    for row in rows:
        wall, rate, cost_note = training_cost(row)
        failure = ""
        if row.score_status in ("failed", "killed", "terminated", "interrupted"):
            error = first_line(read_record(score_dir(study_dir, row.run)).get("error"))
            failure = f"scoring {row.score_status}" + (f": {error}" if error else "")
        notes = [row.job.note if row.job.status != "finished" else "", failure, cost_note]
        out.append(
            [
                row.run.name,
                row.job.status,
                row.score_status,
                *(row.job.params.get(key) for key in keys),
                row.job.epochs,
                *(
                    metric_value(row.score, key, ref_score) if row.scored else None
                    for key in columns
                ),
                *((wall, rate) if row.job.status == "finished" else (None, None)),
                "; ".join(text for text in notes if text),
            ]
        )
    return header, out


def reference_row(rows: Sequence[StudyRow]) -> StudyRow | None:
    """The run the unseen-corruption gain is measured against: the first scored one (put the
    baseline recipe first in the sweep, e.g. augment=basic,augmix)."""
    return next((row for row in rows if row.scored), None)


def summary(
    rows: Sequence[StudyRow], choice: Choice, detector_auto: bool, attack_auto: bool
) -> str:
    scored = sum(row.scored for row in rows)
    trained = sum(row.job.status == "finished" for row in rows)
    detector = f"detector {choice.detector}{' (auto)' if detector_auto else ''}"
    attack = f"attack {choice.attack} at eps {choice.eps}{' (auto)' if attack_auto else ''}"
    reference = reference_row(rows)
    gain = f"; {UNSEEN_GAIN} against {reference.run.name}" if reference else ""
    return f"{len(rows)} runs ({trained} trained, {scored} scored); {detector}, {attack}{gain}"


# --- figures --------------------------------------------------------------------------------
def label_points(ax: Any, points: Sequence[tuple[float, float, str]]) -> None:
    for x, y, name in points:
        ax.plot(x, y, "o", color="C0")
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")


def plot_robustness(rows: Sequence[StudyRow], axes_keys: Sequence[str], title: str) -> Figure:
    """Clean accuracy (x) against each robustness axis (y), one labelled point per scored run."""
    cols = min(len(axes_keys), 3)
    fig = Figure(figsize=(4.6 * cols, 3.8 * math.ceil(len(axes_keys) / cols)), layout="constrained")
    grid = fig.subplots(math.ceil(len(axes_keys) / cols), cols, squeeze=False).ravel()
    for ax, key in zip(grid, axes_keys, strict=False):
        points = [
            (row.score["clean/acc"], row.score[key], row.run.name)
            for row in rows
            if row.scored
            and number(row.score.get("clean/acc")) is not None
            and number(row.score.get(key)) is not None
        ]
        label_points(ax, points)
        if not points:
            ax.text(
                0.5, 0.5, f"no run has\n{key}", ha="center", va="center", transform=ax.transAxes
            )
        ax.set_xlabel("clean/acc")
        ax.set_ylabel(key)
    for ax in grid[len(axes_keys) :]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def plot_curves(rows: Sequence[StudyRow], title: str) -> Figure:
    """Every run's val/acc per epoch (solid) and probe/corrupt_acc (dashed), one colour per run:
    a run still rising was not trained to the end of its gains, whatever its robustness."""
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(rows):
        colour = f"C{i % 10}"
        status = "" if row.job.status == "finished" else f" ({row.job.status})"
        for key, style in ((CLEAN_CURVE, "-"), (PROBE_CURVE, "--")):
            epochs, values = curve(row.job.log, key)
            if values:
                label = f"{row.run.name}{status}" if key == CLEAN_CURVE else None
                ax.plot([e + 1 for e in epochs], values, style, marker="o", ms=3, color=colour,
                        label=label)  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"{title}\nsolid: {CLEAN_CURVE}, dashed: {PROBE_CURVE}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    return fig


# --- writing --------------------------------------------------------------------------------
def study_sweeps(study_dir: Path) -> list[Path]:
    stored = read_settings(study_dir)
    if stored is None:
        raise CifarLabError(
            f"{study_dir} is not a study folder (no {STUDY_FILE}); score one first: python -m "
            f"cifar_lab.study score {study_dir} --sweep <multirun dir> [ood=...]"
        )
    return [Path(sweep) for sweep in stored.get("sweeps", [])]


def write_study_table(
    study_dir: Path,
    detector: str | None = None,
    attack: str | None = None,
    eps: str | None = None,
) -> str:
    """Write study.csv, study.md, study.png and curves.png into `study_dir`; return the
    markdown (a summary line, then the table)."""
    study_dir = Path(study_dir)
    rows = read_rows(study_dir, study_runs(study_sweeps(study_dir)))
    choice = choose(rows, detector, attack, eps)
    line = summary(rows, choice, detector is None, attack is None and eps is None)
    columns = metric_columns(rows, choice)
    header, values = table(rows, columns, study_dir)
    text = f"{line}\n\n{markdown(header, values)}"
    csv_path, md_path, figure_path, curves_path = (study_dir / name for name in OUTPUTS)
    write_csv(csv_path, header, values)
    with atomic_write(md_path) as f:
        f.write(text + "\n")
    title = f"{study_dir.name}: {line}"
    plot_robustness(rows, robustness_axes(columns), title).savefig(figure_path, dpi=100)
    plot_curves(rows, study_dir.name).savefig(curves_path, dpi=100)
    return text
