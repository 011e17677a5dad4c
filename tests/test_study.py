"""`python -m cifar_lab.study` on a real 2x2 sweep of tiny runs: every finished run scored once by a
predict multirun on a generated corruption set, a second call that scores nothing, killed and
stopped runs shown as such, a table whose every number is a run's own metrics.json, and the
corruption probe's learning curve agreeing with predict."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import compose_config, run_module, run_sweep

from cifar_lab.study import generate_corruptions, main
from cifar_lab.sweeps.study_runs import (
    StudyRun,
    plan_scoring,
    resolve_settings,
    scoring_status,
    study_runs,
)
from cifar_lab.sweeps.study_table import unseen_gain, write_study_table
from cifar_lab.sweeps.sweep_report import read_csv_log

pytestmark = pytest.mark.xdist_group("study")

CORRUPT = ["corrupt.n=10", "corrupt.names=[gaussian_noise,fog]", "corrupt.grid_images=0"]
SCORED = ["grid/0", "grid/1", "grid/2", "grid/3"]
BROKEN = {"broken/killed": "killed", "broken/no_best": "finished", "broken/stopped": "terminated"}


def data_args(root: Path) -> list[str]:
    return [f"data.root={root}", "data.download=false", "data.check_integrity=false"]


def dead_pid() -> int:
    """The pid of a process that has ended (a run killed by SIGKILL leaves one in its record)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def killed_record() -> dict:
    """What a run's record says after a SIGKILL: running, by a process that is gone."""
    return {"status": "running", "pid": dead_pid(), "host": socket.gethostname()}


def copy_run(source: Path, target: Path, **record: object) -> None:
    """A copy of a finished run whose record says something else (`record` replaces keys)."""
    shutil.copytree(source, target)
    metrics = json.loads((target / "metrics.json").read_text())
    (target / "metrics.json").write_text(json.dumps({**metrics, **record}))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, cifar10_root: Path) -> Path:
    """A 2x2 sweep (augment=seed,none x model.drop_rate=0,0.1) of 2-epoch tiny runs, each with
    the corruption probe on a set `corrupt` wrote first; and a second sweep of runs as training
    leaves them when killed (SIGKILL), stopped (SIGTERM) or finished without best.ckpt."""
    base = tmp_path_factory.mktemp("study")
    probe_set = base / "probe_set"
    made = run_module(
        "cifar_lab.corrupt", "data=cifar10", *data_args(cifar10_root), *CORRUPT,
        f"corrupt.out={probe_set}", f"hydra.run.dir={base / 'corrupt_job'}", cwd=base,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    grid = run_sweep(
        cifar10_root, base / "grid", "augment=seed,none", "model.drop_rate=0,0.1",
        "trainer.max_epochs=2", "trainer.limit_train_batches=6", "optim.optimizer.lr=0.03",
        "logger=csv", "callbacks=[default,corruption_probe]",
        f"callbacks.corruption_probe.root={probe_set}",
        "callbacks.corruption_probe.every_n_epochs=1",
        "callbacks.corruption_probe.per_severity=null",
    )  # fmt: skip
    assert grid.returncode == 0, grid.stderr[-3000:]
    broken = base / "broken"
    copy_run(base / "grid" / "0", broken / "killed", status="running", pid=dead_pid())
    copy_run(base / "grid" / "0", broken / "stopped", status="terminated", signal="SIGTERM")
    copy_run(base / "grid" / "0", broken / "no_best")
    (broken / "no_best" / "checkpoints" / "best.ckpt").unlink()
    return base


@pytest.fixture(scope="module")
def study(sweeps: Path, cifar10_root: Path) -> dict:
    """Two `score` calls (the second with no settings: the stored ones) and what lay in the
    scoring folders between them."""
    study_dir = sweeps / "study"
    first = run_module(
        "cifar_lab.study", "score", str(study_dir), "--sweep", str(sweeps / "grid"),
        "--sweep", str(sweeps / "broken"), "--corrupt", *CORRUPT, *data_args(cifar10_root),
        "data.num_workers=0", "trainer.enable_progress_bar=false", cwd=sweeps,
    )  # fmt: skip
    scores = study_dir / "scores"
    files = {path: path.stat().st_mtime_ns for path in scores.rglob("*") if path.is_file()}
    second = run_module("cifar_lab.study", "score", str(study_dir), cwd=sweeps)
    return {"dir": study_dir, "first": first, "second": second, "files": files}


def score_of(study_dir: Path, name: str) -> dict:
    return json.loads((study_dir / "scores" / name / "metrics.json").read_text())


def training_of(sweeps: Path, name: str) -> dict:
    return json.loads((sweeps / name / "metrics.json").read_text())


def read_table(study_dir: Path) -> dict[str, dict[str, str]]:
    with (study_dir / "study.csv").open(newline="") as f:
        return {row["run"]: row for row in csv.DictReader(f)}


def test_every_finished_run_is_scored_once_and_a_second_call_scores_nothing(study) -> None:
    first, second, study_dir = study["first"], study["second"], study["dir"]

    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert all(f"scoring {i}/4: {name}" in log for i, name in enumerate(SCORED, start=1))
    assert "not scored: broken/killed (training killed)" in log
    assert "not scored: broken/stopped (training terminated)" in log
    assert "not scored: broken/no_best (finished without checkpoints/best.ckpt)" in log
    assert [score_of(study_dir, name)["status"] for name in SCORED] == ["finished"] * 4
    assert not (study_dir / "scores" / "broken").exists()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "skipped 4 already scored: grid/0, grid/1, grid/2, grid/3" in second.stderr
    assert "reusing" not in second.stderr and "scoring" not in second.stderr  # nothing launched
    scores = study_dir / "scores"
    after = {path: path.stat().st_mtime_ns for path in scores.rglob("*") if path.is_file()}
    assert after == study["files"]


def test_the_corruption_set_is_generated_once_as_corrupt_writes_it(sweeps, study) -> None:
    generated = study["dir"] / "corruptions"

    assert "generating the corruption set" in study["first"].stderr
    for name in ("gaussian_noise.npy", "fog.npy", "labels.npy"):  # same settings, same bytes
        assert (generated / name).read_bytes() == (sweeps / "probe_set" / name).read_bytes()
    assert score_of(study["dir"], "grid/0")["ood"] == "cifar10c"


def test_the_table_holds_each_runs_own_metrics_and_no_numbers_for_unfinished_runs(
    sweeps, study
) -> None:
    study_dir = study["dir"]
    fake = {  # detection and attack metrics by the contract's names, to test their columns
        "detect/energy/mean_near/auroc": 0.91, "detect/msp/mean_near/auroc": 0.81,
        "detect/msp/mean_far/auroc": 0.82, "adv/pgd/eps8/acc": 0.05, "adv/pgd/eps2/acc": 0.3,
        "adv/fgsm/eps8/acc": 0.2,
    }  # fmt: skip
    faked = study_dir / "scores" / "grid" / "1" / "metrics.json"
    faked.write_text(json.dumps({**json.loads(faked.read_text()), **fake}))

    text = write_study_table(study_dir)
    table = read_table(study_dir)

    assert list(table) == [*SCORED, "broken/killed", "broken/no_best", "broken/stopped"]
    assert "detector msp (auto), attack pgd at eps 8 (auto)" in text
    columns = [
        "clean/acc", "clean/ece", "clean/ts/ece", "ood/acc/mean_unseen", "ood/acc/mean_present",
        "detect/msp/mean_near/auroc", "detect/msp/mean_far/auroc", "adv/pgd/eps8/acc",
    ]  # fmt: skip
    for name in SCORED:
        row, score, training = table[name], score_of(study_dir, name), training_of(sweeps, name)
        assert (row["train"], row["score"], row["epochs"]) == ("finished", "scored", "2")
        for column in columns:
            if column in score:
                assert float(row[column]) == pytest.approx(score[column], abs=1e-6), column
            else:
                assert row[column] == "", column
        assert row["ood/seen"] == (", ".join(score["ood/seen"]) or "none")
        assert training["train/images"] == 2 * 90  # epochs x the 90 training images (10 val)
        assert float(row["train/wall_s"]) == pytest.approx(training["train/wall_s"], abs=1e-6)
        assert float(row["train/images_per_s"]) == pytest.approx(
            training["train/images"] / training["train/wall_s"], rel=1e-5
        )
    assert table["grid/1"]["adv/pgd/eps8/acc"] == "0.05"
    assert table["grid/0"]["augment"] == "seed" and table["grid/3"]["model.drop_rate"] == "0.1"
    assert table["grid/0"]["ood/seen"] == "gaussian_noise"  # augment=seed trains on noise
    assert table["grid/2"]["ood/seen"] == "none"
    assert table["broken/killed"]["train"] == "killed"
    assert table["broken/stopped"]["train"] == "terminated"
    assert table["broken/no_best"]["score"] == "no checkpoint"
    for name in BROKEN:  # no results; training cost only for the run that trained to its end
        assert all(table[name][column] == "" for column in columns)
    assert table["broken/killed"]["train/wall_s"] == table["broken/stopped"]["train/wall_s"] == ""
    assert table["broken/no_best"]["train/wall_s"] == table["grid/0"]["train/wall_s"]
    for figure in ("study.png", "curves.png"):
        assert (study_dir / figure).read_bytes()[:4] == b"\x89PNG"

    write_study_table(study_dir, detector="energy")
    assert read_table(study_dir)["grid/1"]["detect/energy/mean_near/auroc"] == "0.91"


def test_the_probe_logs_the_corruption_accuracy_predict_measures(sweeps, study) -> None:
    for name in SCORED:
        log = read_csv_log(sweeps / name)
        val = [(row["epoch"], row["val/acc"]) for row in log if "val/acc" in row]
        probe = {row["epoch"]: row for row in log if "probe/corrupt_acc" in row}
        assert sorted(probe) == [0.0, 1.0]  # every epoch (every_n_epochs=1)
        best_epoch = next(epoch for epoch, acc in val if acc == max(a for _, a in val))
        score = score_of(study["dir"], name)  # predict on best.ckpt, the same images
        assert probe[best_epoch]["probe/corrupt_acc"] == pytest.approx(
            score["ood/acc/mean_present"], abs=1e-6
        )
        assert probe[best_epoch]["probe/corrupt_acc/noise"] == pytest.approx(
            score["ood/acc/gaussian_noise/mean"], abs=1e-6
        )
        assert probe[best_epoch]["probe/corrupt_acc/weather"] == pytest.approx(
            score["ood/acc/fog/mean"], abs=1e-6
        )


def test_a_complete_corruption_set_is_reused_without_running_corrupt(study, monkeypatch, capsys):
    def no_process(*args, **kwargs):
        raise AssertionError(f"ran {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    settings = resolve_settings(study["dir"], [], [], corrupt=False)

    generate_corruptions(study["dir"], settings, "cifar10")

    err = capsys.readouterr().err
    assert f"reusing the corruption set in {study['dir'] / 'corruptions'}" in err


# --- fast: what a call does with each run, and its one-line errors -----------------------------
def fake_run(folder: Path, record: dict | None, checkpoint: bool = True) -> StudyRun:
    """A run folder with a training record and (if asked) a best.ckpt file."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("- augment=basic\n")
    if record is not None:
        (folder / "metrics.json").write_text(json.dumps(record))
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "best.ckpt").write_bytes(b"")
    return StudyRun(f"sweep/{folder.name}", folder.parent, folder)


def write_score(study_dir: Path, run: StudyRun, record: dict) -> None:
    folder = study_dir / "scores" / run.name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(record))


def test_a_call_scores_again_only_what_did_not_finish_or_changed(tmp_path: Path) -> None:
    study_dir, sweep = tmp_path / "study", tmp_path / "sweep"
    finished = {"status": "finished"}
    later = "2999-01-01T00:00:00+00:00"  # scored after the checkpoint was written
    runs = {
        name: fake_run(sweep / name, finished)
        for name in ("done", "failed", "killed", "new", "busy", "stale")
    }
    write_score(study_dir, runs["done"], {"status": "finished", "start_time": later})
    write_score(study_dir, runs["failed"], {"status": "failed", "error": "OSError: disk"})
    here = {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    write_score(study_dir, runs["killed"], killed_record())
    write_score(study_dir, runs["busy"], here)
    write_score(study_dir, runs["stale"], {"status": "finished", "start_time": "2000-01-01"})
    running = fake_run(sweep / "training", {**here})
    no_best = fake_run(sweep / "no_best", finished, checkpoint=False)

    plan = plan_scoring(study_dir, [*runs.values(), running, no_best])

    assert [run.name for run in plan.scored] == ["sweep/done"]
    assert [run.name for run in plan.todo] == ["sweep/failed", "sweep/killed", "sweep/new",
                                               "sweep/stale"]  # fmt: skip
    assert [run.name for run in plan.busy] == ["sweep/busy"]
    assert [(run.name, why) for run, why in plan.unscorable] == [
        ("sweep/training", "training running"),
        ("sweep/no_best", "finished without checkpoints/best.ckpt"),
    ]
    assert scoring_status(study_dir, runs["stale"]) == "stale"
    assert scoring_status(study_dir, running) == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["table", "{tmp}"], "{tmp} is not a study folder (no study.json)"),
        (["score", "{tmp}/study"], "is not a study yet (no study.json); name the sweeps"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/nothing"], "{tmp}/nothing is not a folder"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/empty"], "holds no job folder"),
        (["score", "{tmp}/sweep/study", "--sweep", "{tmp}/sweep"], "are inside one another"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/sweep", "tta=none,shift"], "is a sweep"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/sweep", "ckpt=x.ckpt"], "sets ckpt itself"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/sweep", "corrupt.n=5"], "add --corrupt"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/sweep", "--corrupt", "ood=cifar10c"],
         "--corrupt scores the set it generates"),
        (["score", "{tmp}/study", "--sweep", "{tmp}/sweep", "tta=shfit"],
         "did you mean tta=shift?"),
    ],
    ids=["table-no-study", "no-sweeps", "missing-sweep", "not-a-sweep", "study-in-sweep",
         "swept-setting", "own-key", "corrupt-key", "corrupt-and-ood", "predict-typo"],
)  # fmt: skip
def test_a_bad_study_call_is_one_line(tmp_path: Path, capsys, args, expected) -> None:
    fake_run(tmp_path / "sweep" / "0", killed_record())
    (tmp_path / "empty").mkdir()

    with pytest.raises(SystemExit) as exited:
        main([arg.format(tmp=tmp_path) for arg in args])

    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("error: ") and expected.format(tmp=tmp_path) in err, err
    assert err.count("\n") == 1


def test_a_study_keeps_its_settings(tmp_path: Path, capsys) -> None:
    """A later call with other scoring settings would compare runs scored differently."""
    fake_run(tmp_path / "sweep" / "0", killed_record())
    study_dir = tmp_path / "study"
    with pytest.raises(SystemExit) as exited:
        main(["score", str(study_dir), "--sweep", str(tmp_path / "sweep"), "tta=shift"])
    assert exited.value.code == 0  # nothing to score: its only run is not trained
    assert "not scored: sweep/0 (training killed)" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        main(["score", str(study_dir), "tta=flip"])

    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert f"error: {study_dir} scores its runs with tta=shift; give the same settings" in err
    main_again = ["score", str(study_dir), "data.num_workers=0"]  # a launch setting: allowed
    with pytest.raises(SystemExit) as exited:
        main(main_again)
    assert exited.value.code == 0


@pytest.mark.parametrize("launcher", ["local", "slurm"])
def test_predict_composes_the_training_launchers(launcher: str) -> None:
    """A study's scoring goes through the same launcher configs as training."""
    cfg = compose_config("predict", [f"hydra/launcher={launcher}"], return_hydra_config=True)

    assert cfg.hydra.launcher._target_.endswith(
        "LocalLauncher" if launcher == "local" else "SlurmLauncher"
    )
    assert cfg.hydra.launcher.gpus_per_node == 1


def test_a_run_trained_before_train_recorded_its_cost_gets_an_estimate(tmp_path: Path) -> None:
    record = {
        "status": "finished", "start_time": "2026-01-01T12:00:00+00:00",
        "end_time": "2026-01-01T12:00:50+00:00", "global_step": 100,
    }  # fmt: skip
    run = fake_run(tmp_path / "sweep" / "0", record)
    (run.path / ".hydra" / "config.yaml").write_text("data: {batch_size: 64}\n")
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    (study_dir / "study.json").write_text(json.dumps({"sweeps": [str(tmp_path / "sweep")]}))

    write_study_table(study_dir)

    row = read_table(study_dir)["sweep/0"]
    assert (row["train/wall_s"], row["train/images_per_s"]) == ("50.0", "128.0")  # 100 x 64 / 50
    assert "cost estimated from start/end time" in row["note"] and row["score"] == "not scored"


def test_a_predict_run_saved_inside_a_sweep_is_not_one_of_its_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for name, entry_point in (("0", "train"), ("eval/pgd", "predict"), ("1", None)):
        fake_run(sweep / name, {"status": "finished"})
        if entry_point:
            hydra_yaml = {"hydra": {"job": {"name": entry_point}}}
            (sweep / name / ".hydra" / "hydra.yaml").write_text(json.dumps(hydra_yaml))

    assert [run.name for run in study_runs([sweep])] == ["sweep/0", "sweep/1"]


def test_the_unseen_gain_compares_each_run_with_the_reference_on_the_same_corruptions() -> None:
    reference = {"ood/acc/fog/mean": 0.5, "ood/acc/snow/mean": 0.4, "ood/acc/contrast/mean": 0.3}
    run = {
        "ood/acc/fog/mean": 0.6, "ood/acc/snow/mean": 0.7, "ood/acc/contrast/mean": 0.9,
        "ood/acc/mean_unseen": 0.65, "ood/seen": ["contrast"],
    }  # fmt: skip

    # contrast is left out: the run's augmentation covers it (its +0.6 would flatter the run)
    assert unseen_gain(run, reference) == pytest.approx(((0.6 - 0.5) + (0.7 - 0.4)) / 2)
    assert unseen_gain(reference, reference) == 0
    assert unseen_gain({"ood/acc/fog/mean": 0.6, "ood/seen": ["fog"]}, reference) is None
