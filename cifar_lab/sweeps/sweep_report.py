"""The sweep report: one table and one figure for a whole multirun (`python -m cifar_lab.report`).

Reads each job's overrides (`.hydra/overrides.yaml`), `metrics.json` and CSV log, and writes the
jobs sorted by the metric (markdown on stdout, `report.csv` in the sweep folder) with failed and
unfinished jobs listed after them, plus `report.png`: the metric against every swept parameter
and the validation curves of the best jobs. A sweep that is still running reads fine: its
unfinished jobs show the best value their CSV log holds so far.

    python -m cifar_lab.report outputs/train/multirun/2026-01-31_12-00-00
    python -m cifar_lab.report <dir> --metric val/loss --mode min --top 5
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_csv
from cifar_lab.runs.record import read_record, run_state
from cifar_lab.sweeps.jobs import JOB_OVERRIDES, find_jobs

DEFAULT_METRIC = "val/acc_best"
# killed: `running` in metrics.json but its process is gone (SIGKILL, out of memory);
# terminated / interrupted: stopped by SIGTERM/SIGUSR1 / Ctrl-C after saving last.ckpt,
# resumable; diverged: its loss became NaN or infinite
STATUS_ORDER = {
    "finished": 0,
    "unfinished": 1,
    "terminated": 2,
    "interrupted": 3,
    "killed": 4,
    "diverged": 5,
    "failed": 6,
}


@dataclass
class Job:
    """One job of a sweep as it stands on disk."""

    name: str
    path: Path
    status: str  # a STATUS_ORDER key; unfinished = running, or no metrics.json yet
    value: float | None
    params: dict[str, Any]
    epochs: int | None = None
    note: str = ""
    log: list[dict[str, float]] = field(default_factory=list, repr=False)


# --- reading a job ----------------------------------------------------------------------
# What a damaged or half-written job file raises when read (it is shown, never a traceback).
UNREADABLE = (
    OSError,
    ValueError,
    TypeError,
    yaml.YAMLError,
    OmegaConfBaseException,
    HydraException,
)


def number(value: Any) -> float | int | None:
    """A value of a job's record as a number, None unless it is one (a damaged record)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_overrides(job_dir: Path) -> dict[str, Any]:
    """The job's command-line overrides as {key: value}, parsed by Hydra's own grammar; {} when
    the file is damaged."""
    try:
        lines = OmegaConf.to_container(OmegaConf.load(job_dir / JOB_OVERRIDES))
        parsed = OverridesParser.create().parse_overrides([str(line) for line in lines or []])
    except UNREADABLE:
        return {}
    return {override.key_or_group: override.value() for override in parsed}


def read_csv_log(job_dir: Path) -> list[dict[str, float]]:
    """Rows of Lightning's CSV log (csv/metrics.csv), numbers only; [] when there is none."""
    path = next(iter(sorted(job_dir.glob("csv/**/metrics.csv"))), None)
    if path is None:
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            numbers = {}
            for key, text in row.items():
                try:
                    numbers[key] = float(text)
                except (TypeError, ValueError):  # empty cell, or a row still being written
                    continue
            rows.append(numbers)
    return rows


def curve(log: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of `key` in a CSV log."""
    points = [(row.get("epoch", i), row[key]) for i, row in enumerate(log) if key in row]
    return [p[0] for p in points], [p[1] for p in points]


def read_job(job_dir: Path, sweep_dir: Path, metric: str) -> Job:
    """A job's status and metric from metrics.json; without one (still running, or killed), the
    metric's latest value in the CSV log."""
    log = read_csv_log(job_dir)
    metrics = read_record(job_dir)
    epochs, values = curve(log, metric)
    status = run_state(metrics)
    notes = {
        "failed": first_line(metrics.get("error")),
        "terminated": f"{metrics.get('signal')}; resume: {metrics.get('resume_command')}",
        "interrupted": f"{metrics.get('signal')}; resume: {metrics.get('resume_command')}",
        "diverged": first_line(metrics.get("error")),
        "killed": f"process {metrics.get('pid')} on {metrics.get('host')} is gone",
        "running": f"running (pid {metrics.get('pid')} on {metrics.get('host')})",
        None: "no metrics.json yet",
    }
    return Job(
        name=str(job_dir.relative_to(sweep_dir)),
        path=job_dir,
        status=status if status in STATUS_ORDER else "unfinished",
        value=number(metrics.get(metric, values[-1] if values else None)),
        params=read_overrides(job_dir),
        epochs=number(metrics.get("epochs_completed", int(epochs[-1]) + 1 if epochs else None)),
        note=notes.get(status, ""),
        log=log,
    )


# --- a sweep ------------------------------------------------------------------------------
def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a multirun folder, or an error that says what was expected."""
    expected = "give the hydra.sweep.dir of a multirun, e.g. outputs/train/multirun/<date>_<time>"
    if not sweep_dir.is_dir():
        raise CifarLabError(f"{sweep_dir} is not a folder; {expected}")
    job_dirs = find_jobs(sweep_dir)
    if not job_dirs:
        raise CifarLabError(
            f"{sweep_dir} holds no job folder (none has {JOB_OVERRIDES}); {expected}"
        )
    return job_dirs


def swept_keys(jobs: Sequence[Job]) -> list[str]:
    """The overrides that differ between jobs (or that some jobs lack), in command-line order."""
    keys = list(dict.fromkeys(key for job in jobs for key in job.params))
    return [key for key in keys if len({repr(job.params.get(key)) for job in jobs}) > 1]


def ranked(jobs: Sequence[Job], mode: str) -> list[Job]:
    """Finished jobs best first, then unfinished ones (by their value so far), then failed ones;
    ties keep job order."""
    sign = -1.0 if mode == "max" else 1.0

    def key(job: Job) -> tuple[int, float]:
        missing = job.value is None or math.isnan(job.value)
        return STATUS_ORDER[job.status], math.inf if missing else sign * job.value

    return sorted(jobs, key=key)


def default_metric_and_mode(job_dir: Path) -> tuple[str, str]:
    """The sweep's own `optimized_metric` and the sweeper's direction (maximize unless it says
    minimize), from the job's saved Hydra config."""
    try:
        config = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        hydra_cfg = OmegaConf.load(job_dir / ".hydra" / "hydra.yaml")
        metric = config.get("optimized_metric") or DEFAULT_METRIC
        direction = OmegaConf.select(hydra_cfg, "hydra.sweeper.direction", default="maximize")
    except UNREADABLE:  # a damaged job: the defaults
        return DEFAULT_METRIC, "max"
    metric = metric if isinstance(metric, str) else DEFAULT_METRIC
    return metric, "min" if str(direction).lower().startswith("min") else "max"


def first_line(text: Any) -> str:
    """The first line of a (multi-line) text: one table row per job."""
    return (str(text or "").strip().splitlines() or [""])[0]


def logged_metrics(jobs: Sequence[Job]) -> list[str]:
    """Every metric name a job's record or CSV log holds (`val/acc`, `test/acc`, ...)."""
    names = {key for job in jobs for key in read_record(job.path) if "/" in key}
    names |= {key for job in jobs for row in job.log for key in row if "/" in key}
    return sorted(names)


def check_metric(metric: str, jobs: Sequence[Job], sweep_dir: Path) -> None:
    """A one-line error, before anything is written, when no job logged `metric` (a typo)."""
    logged = logged_metrics(jobs)
    if metric in logged or not logged:
        return
    close = difflib.get_close_matches(metric, logged, n=1)
    guess = f"did you mean --metric {close[0]}? " if close else ""
    raise CifarLabError(
        f"no job of {sweep_dir} logged {metric!r}; {guess}logged: {', '.join(logged)}"
    )


# --- output -------------------------------------------------------------------------------
def show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(jobs: Sequence[Job], metric: str, keys: Sequence[str]) -> tuple[list[str], list[list]]:
    """Header and rows (raw values) of the report, in the order of `jobs`."""
    header = ["rank", "job", "status", metric, *keys, "epochs", "note"]
    rows, rank = [], 0
    for job in jobs:
        rank += job.status == "finished"
        rows.append(
            [
                rank if job.status == "finished" else None,
                job.name,
                job.status,
                job.value,
                *(job.params.get(key) for key in keys),
                job.epochs,
                job.note,
            ]
        )
    return header, rows


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    # Hand-written: a markdown table is a few joins, not worth a dependency (tabulate/pandas).
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(first_line(cell).replace("|", "/") for cell in cells) + " |"

    return "\n".join(
        [line(header), line(["---"] * len(header)), *(line([show(v) for v in row]) for row in rows)]
    )


def plot_param(ax: Any, jobs: Sequence[Job], key: str, metric: str) -> None:
    """The metric against one swept parameter: numbers on a numeric axis (log when they span
    decades), anything else as categories; unfinished jobs hollow."""
    points = [(job.params.get(key), job) for job in jobs if job.value is not None]
    values = [value for value, _ in points]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    categories = [] if numeric else list(dict.fromkeys(show(v) for v in values))
    for value, job in points:
        x = value if numeric else categories.index(show(value))
        ax.plot(x, job.value, "o", color="C0", mfc="C0" if job.status == "finished" else "none")
    if categories:
        ax.set_xticks(range(len(categories)), categories, rotation=30)
    elif values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(key)
    ax.set_ylabel(metric)


def plot_curves(ax: Any, jobs: Sequence[Job], key: str, top: int) -> None:
    """`key` per epoch for the first `top` jobs that logged it."""
    shown = [job for job in jobs if curve(job.log, key)[1]][:top]
    for job in shown:
        epochs, values = curve(job.log, key)
        ax.plot([e + 1 for e in epochs], values, "o-", label=f"job {job.name}")  # 1 = the first
    ax.set_xlabel("epoch")
    ax.set_ylabel(key)
    ax.set_title(f"{key} of the top {len(shown)}")
    if shown:
        ax.legend(fontsize="small")


def plot(
    jobs: Sequence[Job], keys: Sequence[str], metric: str, curve_key: str, top: int, title: str
) -> Figure:
    """The metric against each swept parameter, and the curves of the top jobs, under `title`."""
    panels = len(keys) + 1
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(4.5 * cols, 3.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):  # the last panels hold the curves
        plot_param(ax, jobs, key, metric)
    plot_curves(axes[len(keys)], jobs, curve_key, top)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(title)
    return fig


def summary(jobs: Sequence[Job], metric: str, mode: str) -> str:
    counts = {status: sum(job.status == status for job in jobs) for status in STATUS_ORDER}
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"{len(jobs)} jobs ({done}), sorted by {metric} ({mode})"


def write_sweep_report(
    sweep_dir: Path,
    metric: str | None = None,
    mode: str | None = None,
    curve_key: str = "val/acc",
    top: int = 3,
) -> str:
    """Write report.csv and report.png into `sweep_dir`; return the markdown table."""
    sweep_dir = Path(sweep_dir)
    job_dirs = sweep_jobs(sweep_dir)
    default_metric, default_mode = default_metric_and_mode(job_dirs[0])
    asked, metric, mode = metric, metric or default_metric, mode or default_mode
    jobs = ranked([read_job(job_dir, sweep_dir, metric) for job_dir in job_dirs], mode)
    if asked:  # a typo of --metric; the sweep's own metric may not be logged yet
        check_metric(metric, jobs, sweep_dir)
    keys = swept_keys(jobs)
    header, rows = table(jobs, metric, keys)
    write_csv(sweep_dir / "report.csv", header, rows)
    title = f"{sweep_dir.name}: {summary(jobs, metric, mode)}"
    plot(jobs, keys, metric, curve_key, top, title).savefig(sweep_dir / "report.png", dpi=100)
    return f"{summary(jobs, metric, mode)}\n\n{markdown(header, rows)}"
