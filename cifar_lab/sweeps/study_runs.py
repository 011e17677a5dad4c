"""A robustness study: the runs of one or more sweeps, each scored once on the same stress tests,
in one folder (`python -m cifar_lab.study score`).

    <study>/study.json              the sweeps it reads and the settings every run is scored with
    <study>/corruptions/            the CIFAR-C-style set `--corrupt` generated, reused later
    <study>/scores/<sweep>/<job>/   one `python -m cifar_lab.predict` job per run (metrics.json...)
    <study>/jobs/corrupt/           the record of the job that generated the set

Scoring is ONE Hydra multirun of `cifar_lab.predict` over the runs' best checkpoints, so it goes
through the launcher the command line names, as training does (`hydra/launcher=local`: parallel
processes; `hydra/launcher=slurm`: a cluster), and each scoring folder is an ordinary predict run
that any tool reads. A hand-written loop of predict calls would have to re-implement both. Each
job is named after its run (`hydra.sweep.subdir`), so a later call finds what is done: a run
whose folder holds a finished metrics.json is skipped, one whose scoring failed, stopped or was
killed is set aside (kept as `<job>.attempt-<time>`) and scored again. Only runs whose training
finished are scored, from `checkpoints/best.ckpt` in their own folder (never a path a record
names); the others are listed as they stand.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cifar_lab.corruptions.writer import MANIFEST
from cifar_lab.errors import CifarLabError
from cifar_lab.files import write_json
from cifar_lab.runs.checkpoint import BEST, CHECKPOINT_DIR, best_checkpoint
from cifar_lab.runs.record import FINISHED, read_record, run_state
from cifar_lab.sweeps.sweep_report import UNREADABLE, sweep_jobs

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
SCORES, CORRUPTIONS, JOBS = "scores", "corruptions", "jobs"
# What the study sets on predict's command line itself.
OWN_KEYS = ("ckpt", "overwrite", "study", "hydra.sweep", "hydra.run", "hydra/sweeper")
# Overrides that change how the runs are scored, not what: passed on, not held in study.json.
LAUNCH_KEYS = (
    "hydra",
    "data.num_workers",
    "data.batch_size",
    "data.eval_batch_size",
    "trainer.enable_progress_bar",
)
# The keys of predict's command line that the corruption set's generation shares.
SHARED_DATA_KEYS = ("data.root", "data.download", "data.check_integrity")


def under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether an override's key is one of `prefixes` or inside one (`hydra.launcher.x`)."""
    return any(key == p or key.startswith((f"{p}.", f"{p}/")) for p in prefixes)


# --- the runs -------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyRun:
    """One training run of a study: `name` is `<sweep folder name>/<job>` (a sweep of one run,
    given as its own folder, is named after it)."""

    name: str
    sweep: Path
    path: Path

    @property
    def checkpoint(self) -> Path:
        return best_checkpoint(self.path)

    def trained(self) -> bool:
        return run_state(read_record(self.path)) == FINISHED


def trained_by(job: Path) -> str | None:
    """The entry point that made a job folder (`hydra.job.name`: train, predict, ...)."""
    try:
        return OmegaConf.select(OmegaConf.load(job / ".hydra" / "hydra.yaml"), "hydra.job.name")
    except UNREADABLE:
        return None


def study_runs(sweeps: Sequence[Path]) -> list[StudyRun]:
    """Every training job folder of the sweeps, in sweep then job order (a predict or bench
    run saved inside a sweep folder is not one of its runs); a one-line error for a folder that
    is not a sweep or two runs of the same name."""
    runs = []
    for sweep in sweeps:
        for job in sweep_jobs(sweep):
            if trained_by(job) not in ("train", None):
                continue
            name = sweep.name if job == sweep else f"{sweep.name}/{job.relative_to(sweep)}"
            runs.append(StudyRun(name, sweep, job))
    seen: dict[str, StudyRun] = {}
    for run in runs:
        if run.name in seen:
            raise CifarLabError(
                f"two runs are both named {run.name} ({seen[run.name].path} and {run.path}): "
                f"the study names runs <sweep folder name>/<job>; give sweeps whose folders "
                f"have different names"
            )
        seen[run.name] = run
    return runs


def score_dir(study_dir: Path, run: StudyRun) -> Path:
    return study_dir / SCORES / run.name


def score_state(study_dir: Path, run: StudyRun) -> str | None:
    """The scoring job's record status (`finished`, `running`, `killed`, `failed`, ...)."""
    return run_state(read_record(score_dir(study_dir, run)))


def scored_before(study_dir: Path, run: StudyRun) -> bool:
    """Whether the run's best.ckpt is older than its scoring's start (not replaced since, by a
    resumed training); the record's start time is in whole seconds, hence the second's slack."""
    started = read_record(score_dir(study_dir, run)).get("start_time")
    try:
        start = datetime.fromisoformat(str(started)).timestamp()
        return run.checkpoint.stat().st_mtime < start + 1.0
    except (OSError, ValueError):
        return False


# What the study does with a run in each scoring status: score (again) or leave it.
RESCORED = ("not scored", "stale", "killed", "failed", "terminated", "interrupted")


def scoring_status(study_dir: Path, run: StudyRun) -> str:
    """`scored`; `not scored` (yet); `scoring` (a live process); `killed`, `failed`,
    `terminated`, `interrupted` (an attempt that did not finish); `stale` (scored, but the
    run's training has changed since: resumed, or a newer best.ckpt); `no checkpoint` (trained,
    without best.ckpt); `` (its training has not finished: nothing to score)."""
    state = score_state(study_dir, run)
    if not run.trained():
        return "" if state is None else "stale"
    if not run.checkpoint.is_file():
        return "no checkpoint"
    if state == FINISHED:
        return "scored" if scored_before(study_dir, run) else "stale"
    if state == "running":
        return "scoring"
    return state or "not scored"


@dataclass
class ScoringPlan:
    """What a `score` call does with each run."""

    todo: list[StudyRun] = field(default_factory=list)
    scored: list[StudyRun] = field(default_factory=list)
    busy: list[StudyRun] = field(default_factory=list)  # a live process is scoring it
    unscorable: list[tuple[StudyRun, str]] = field(default_factory=list)  # (run, why)
    stale: list[StudyRun] = field(default_factory=list)  # scored before its training changed


def plan_scoring(study_dir: Path, runs: Sequence[StudyRun]) -> ScoringPlan:
    plan = ScoringPlan()
    for run in runs:
        status = scoring_status(study_dir, run)
        training = run_state(read_record(run.path))
        if training != FINISHED:
            plan.unscorable.append((run, f"training {training or 'has no metrics.json yet'}"))
        elif status == "no checkpoint":
            plan.unscorable.append((run, f"finished without {CHECKPOINT_DIR}/{BEST}"))
        elif status == "scored":
            plan.scored.append(run)
        elif status == "scoring":
            plan.busy.append(run)
        else:
            plan.todo.append(run)
            if status == "stale":
                plan.stale.append(run)
    return plan


def set_aside(folder: Path) -> Path | None:
    """An earlier attempt's scoring folder (failed, stopped, killed, or a stale finished one)
    renamed beside it, so the new job starts in an empty folder and nothing of the attempt is
    lost or rewritten."""
    if not folder.exists():
        return None
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    kept = folder.with_name(f"{folder.name}.attempt-{stamp}")
    folder.rename(kept)
    return kept


# --- the settings ---------------------------------------------------------------------------
@dataclass
class StudySettings:
    """The sweeps and the settings of every run's scoring (held in study.json), and this call's
    launch settings (`launch`, not held: they change how, not what, is scored)."""

    sweeps: list[Path]
    predict: list[str]
    corrupt: list[str] | None  # the generated set's overrides; None: no generated set
    launch: list[str] = field(default_factory=list)

    def stored(self) -> dict[str, Any]:
        return {
            "sweeps": [str(sweep) for sweep in self.sweeps],
            "predict": self.predict,
            "corrupt": self.corrupt,
        }


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        first = (str(err).strip().splitlines() or ["a syntax error"])[0]
        raise CifarLabError(
            f"cannot read the overrides {' '.join(overrides)} ({first}); write them as on "
            f"predict's command line, e.g. ood=cifar10c ood.root=<folder>"
        ) from err


def split_overrides(
    overrides: Sequence[str], corrupt: bool
) -> tuple[list[str], list[str], list[str]]:
    """(scoring, corruption set, launch) overrides, each checked: no key the study sets itself,
    no sweep (each run is scored once), `corrupt.*` only with --corrupt."""
    scoring, corruption, launch = [], [], []
    for text, override in zip(overrides, parse_overrides(overrides), strict=True):
        key = override.key_or_group
        if under(key, OWN_KEYS):
            raise CifarLabError(
                f"{text}: the study sets {key} itself (each run's best.ckpt, scored into "
                f"<study>/{SCORES}/<run>); drop it"
            )
        if override.is_sweep_override():
            raise CifarLabError(
                f"{text} is a sweep; a study scores each run once with one setting: run one "
                f"study per setting, each in its own folder"
            )
        if under(key, ("corrupt",)):
            if not corrupt:
                raise CifarLabError(
                    f"{text} sets the generated corruption set, but --corrupt is not given; add "
                    f"--corrupt, or drop it and score an existing set (ood=cifar10c ood.root=...)"
                )
            corruption.append(text)
        elif under(key, LAUNCH_KEYS):
            launch.append(text)
        else:
            if corrupt and under(key, ("ood",)):
                raise CifarLabError(
                    f"{text}: --corrupt scores the set it generates (ood=<data>c ood.root="
                    f"<study>/{CORRUPTIONS}); drop {key}, or drop --corrupt to score another set"
                )
            scoring.append(text)
    return scoring, corruption, launch


def read_settings(study_dir: Path) -> dict[str, Any] | None:
    path = study_dir / STUDY_FILE
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CifarLabError(
            f"{path} is not readable JSON ({err}); it holds the study's settings: restore it or "
            f"start the study in a new folder"
        ) from err
    return stored if isinstance(stored, dict) else None


def resolve_settings(
    study_dir: Path, sweeps: Sequence[Path], overrides: Sequence[str], corrupt: bool
) -> StudySettings:
    """This call's settings: new sweeps join the stored ones; scoring settings given must equal
    the stored ones (a study compares runs scored alike), and none given means the stored."""
    scoring, corruption, launch = split_overrides(overrides, corrupt)
    asked = StudySettings(
        [Path(s).expanduser().resolve() for s in sweeps],
        scoring,
        corruption if corrupt else None,
        launch,
    )
    stored = read_settings(study_dir)
    if stored is None:
        if not asked.sweeps:
            raise CifarLabError(
                f"{study_dir} is not a study yet (no {STUDY_FILE}); name the sweeps to score: "
                f"python -m cifar_lab.study score {study_dir} --sweep <multirun dir> ..."
            )
        settings = asked
    else:
        before = StudySettings(
            [Path(s) for s in stored.get("sweeps", [])],
            list(stored.get("predict", [])),
            stored.get("corrupt"),
        )
        if (scoring or corrupt) and (
            sorted(scoring) != sorted(before.predict) or asked.corrupt != before.corrupt
        ):
            generated = [] if before.corrupt is None else ["--corrupt", *before.corrupt]
            was = " ".join(before.predict + generated) or "(no settings)"
            raise CifarLabError(
                f"{study_dir} scores its runs with {was}; give the same settings (or none, to "
                f"keep them), or start a study with other settings in a new folder"
            )
        new = [sweep for sweep in asked.sweeps if sweep not in before.sweeps]
        settings = StudySettings(before.sweeps + new, before.predict, before.corrupt, launch)
    check_placement(study_dir.resolve(), settings.sweeps)
    return settings


def check_placement(study_dir: Path, sweeps: Sequence[Path]) -> None:
    """A study inside a sweep folder would be read as jobs of that sweep (its predict jobs have
    `.hydra/` too), and a sweep inside the study is easy to delete with it."""
    for sweep in sweeps:
        if sweep == study_dir or sweep in study_dir.parents or study_dir in sweep.parents:
            raise CifarLabError(
                f"the study folder {study_dir} and the sweep {sweep} are inside one another; "
                f"put the study beside the sweeps, e.g. {sweep.parent / 'study'}"
            )


def save_settings(study_dir: Path, settings: StudySettings) -> None:
    write_json(study_dir / STUDY_FILE, settings.stored())


def saved_config_value(run_dir: Path, key: str) -> Any:
    """A key of the config Hydra saved for a run (`.hydra/config.yaml`); None if unreadable."""
    try:
        return OmegaConf.select(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), key)
    except UNREADABLE:
        return None


# --- the corruption set ---------------------------------------------------------------------
def runs_dataset(runs: Sequence[StudyRun]) -> str:
    """The dataset (`cifar10`/`cifar100`) the finished runs trained on, from their saved Hydra
    config: the set --corrupt generates is made from its test split."""
    names = {}
    for run in runs:
        if not run.trained():
            continue
        name = saved_config_value(run.path, "data.name")
        if name is not None:
            names.setdefault(str(name), run.name)
    if len(names) != 1:
        found = ", ".join(f"{name} ({run})" for name, run in names.items()) or "none"
        raise CifarLabError(
            f"--corrupt makes one set from the test split of the runs' dataset, but the finished "
            f"runs name {found}; score runs of one dataset, or give ood=... yourself"
        )
    name = next(iter(names))
    if name not in ("cifar10", "cifar100"):
        raise CifarLabError(f"--corrupt needs runs of cifar10 or cifar100, not {name!r}")
    return name


def corruption_set_complete(folder: Path) -> bool:
    """Whether `python -m cifar_lab.corrupt` finished writing the set in `folder`."""
    try:
        return json.loads((folder / MANIFEST).read_text()).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


def corrupt_command(
    study_dir: Path, dataset: str, scoring: Sequence[str], corruption: Sequence[str]
) -> list[str]:
    """`python -m cifar_lab.corrupt` writing the study's set from the runs' test split: where the
    data lives comes from the scoring settings (`data.root`, ...), the rest from `corrupt.*`."""
    shared = [text for text in scoring if under(text.split("=")[0].lstrip("+~"), SHARED_DATA_KEYS)]
    return [
        sys.executable, "-m", "cifar_lab.corrupt", f"data={dataset}", *shared, *corruption,
        f"corrupt.out={hydra_quoted(str(study_dir / CORRUPTIONS))}",
        f"hydra.run.dir={hydra_quoted(str(study_dir / JOBS / 'corrupt'))}",
    ]  # fmt: skip


def scored_set_overrides(study_dir: Path, dataset: str) -> list[str]:
    """predict's settings for the generated set: `ood=cifar10c ood.root=<study>/corruptions`."""
    return [f"ood={dataset}c", f"ood.root={hydra_quoted(str(study_dir / CORRUPTIONS))}"]


# --- scoring --------------------------------------------------------------------------------
def hydra_quoted(text: str) -> str:
    """`text` (a path, a run name) as a quoted value of Hydra's override grammar, checked by
    parsing it back; a one-line error for what cannot pass (an interpolation `${`)."""
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    try:
        value = OverridesParser.create().parse_override(f"key={quoted}").value()
    except HydraException:
        value = None
    if value != text or "${" in text:
        raise CifarLabError(
            f"{text!r} cannot be given to Hydra as a value (its quotes, backslashes or ${{...}} "
            f"do not survive); rename that folder"
        )
    return quoted


def predict_command(
    study_dir: Path, runs: Sequence[StudyRun], overrides: Sequence[str]
) -> list[str]:
    """One multirun of predict: job i scores run i's best.ckpt into <study>/scores/<run name>.

    The runs' checkpoints and names are lists on the command line and each job picks its own by
    `study.run` (a string: OmegaConf takes only strings as keys inside an interpolation), so the
    job folders are named after the runs whatever the launcher."""
    checkpoints = ",".join(hydra_quoted(str(run.checkpoint.resolve())) for run in runs)
    names = ",".join(hydra_quoted(run.name) for run in runs)
    progress = f"{ScoringProgress.__module__}.{ScoringProgress.__qualname__}"
    return [
        sys.executable, "-m", "cifar_lab.predict", "--multirun",
        f"+study.checkpoints=[{checkpoints}]",
        f"+study.names=[{names}]",
        "+study.run=" + ",".join(f"'{i}'" for i in range(len(runs))),
        "ckpt='${study.checkpoints.${study.run}}'",
        f"hydra.sweep.dir={hydra_quoted(str(study_dir / SCORES))}",
        "hydra.sweep.subdir='${study.names.${study.run}}'",
        f"+hydra.callbacks.study_progress._target_={progress}",
        *overrides,
    ]  # fmt: skip


class ScoringProgress(Callback):
    """`scoring 3/6: recipes/2` as each predict job of a study starts (in its log too)."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        study = config.get("study")
        if study is None or study.get("run") is None:
            return
        index = int(study.run)
        log.info("scoring %d/%d: %s", index + 1, len(study.names), study.names[index])
