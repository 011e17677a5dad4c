"""`predict` end to end on a smoke checkpoint and tiny OOD files in both layouts: every output,
the submission format, clean == OOD for a copy of the test set, hand-computed accuracies, errors."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from ood_files import LEADERBOARD_NAMES, random_images, write_corruption_set, write_leaderboard
from support import compose_config, predict_cfg, run_module
from torch import nn

from cifar_lab.data.datamodule import CIFARDataModule
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.ood import CorruptionSet
from cifar_lab.data.transforms import NORMALIZATION_STATS
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.evaluate import evaluate_corruptions
from cifar_lab.evaluation.scoring import score_sets
from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.models.tta import TestTimeAugmentation
from cifar_lab.predict import predict, prepare, run_config
from cifar_lab.runs.checkpoint import read_checkpoint


@pytest.fixture(autouse=True)
def data_on_this_machine(monkeypatch: pytest.MonkeyPatch, cifar100_root: Path) -> None:
    """predict reads the data where this machine keeps it (`CIFAR_LAB_DATA`, or data.root on the
    command line), never where a checkpoint says: here, the tiny CIFAR-100."""
    monkeypatch.setenv("CIFAR_LAB_DATA", str(cifar100_root))


def clean_test(cifar100_root: Path):
    return load_cifar("cifar100", cifar100_root, False, False, False)


def copy_of_test_set(
    root: Path, cifar100_root: Path, labels: np.ndarray | None = None, noise: bool = True
) -> Path:
    """CIFAR-C layout: `fog` = the clean test images repeated per severity, `snow` noise."""
    test = clean_test(cifar100_root)
    tiled = np.tile(test.images, (5, 1, 1, 1))
    images = {"fog": tiled, "snow": random_images(len(tiled))} if noise else {"fog": tiled}
    return write_corruption_set(root, images, np.tile(test.labels if labels is None else labels, 5))


# --- what predict writes ------------------------------------------------------------------
def test_cifar100c_run_writes_metrics_class_report_and_corruption_report(
    smoke_ckpt, cifar100_root, tmp_path
):
    ood_root = copy_of_test_set(tmp_path / "c100", cifar100_root)
    reference = tmp_path / "reference.csv"
    reference.write_text(
        "corruption,group,severity_1,severity_2,severity_3,severity_4,severity_5,mean\n"
        "fog,benchmark,0.5,0.5,0.5,0.5,0.5,0.5\nsnow,benchmark,0.2,0.2,0.2,0.2,0.2,0.2\n"
    )
    out = tmp_path / "out"

    metrics = predict(
        predict_cfg(
            smoke_ckpt,
            out,
            "ood=cifar100c",
            f"ood.root={ood_root}",
            f"ood.reference_csv={reference}",
        )
    )

    assert metrics["status"] == "finished"
    assert json.loads((out / "metrics.json").read_text())["clean/acc"] == metrics["clean/acc"]
    for name in ["per_class_accuracy.csv", "confusion_matrix.png", "ood_accuracy.csv"]:
        assert (out / name).stat().st_size > 0, name
    for name in ["ood_severity.csv", "ood_corruptions.png", "ood_severity.png", "ood_mce.csv"]:
        assert (out / name).stat().st_size > 0, name
    with open(out / "per_class_accuracy.csv") as f:
        per_class = list(csv.DictReader(f))
    assert len(per_class) == 100 and sum(int(r["total"]) for r in per_class) == 100
    assert 0 <= metrics["clean/acc"] <= metrics["clean/acc_top5"] <= 1
    for corruption in ("fog", "snow"):
        assert {f"ood/acc/{corruption}/{s}" for s in range(1, 6)} <= metrics.keys()
    snow_error = sum(1 - metrics[f"ood/acc/snow/{s}"] for s in range(1, 6))
    assert metrics["ood/ce/snow"] == pytest.approx(snow_error / 4.0)
    # 2 of the 15 benchmark corruptions: partial means are named as such
    both = (metrics["ood/ce/fog"] + metrics["ood/ce/snow"]) / 2
    assert metrics["ood/mce_present"] == pytest.approx(both)
    assert metrics["ood/mce_present_count"] == 2 and "ood/mce" not in metrics
    assert metrics["ood/acc/mean_present"] == pytest.approx(
        (metrics["ood/acc/fog/mean"] + metrics["ood/acc/snow/mean"]) / 2
    )
    assert "ood/acc/mean_benchmark" not in metrics and "ood/acc/mean_all" not in metrics
    # the smoke run trains with augment=basic (crop + flip): no corruption was seen
    assert metrics["ood/seen"] == [] and metrics["ood/acc/mean_unseen"] == pytest.approx(
        metrics["ood/acc/mean_present"]
    )
    assert 0 <= metrics["clean/ece"] <= 1 and 0 <= metrics["ood/ece/snow/5"] <= 1
    for name in ["ood_ece.csv", "reliability.png"]:
        assert (out / name).stat().st_size > 0, name


@pytest.mark.parametrize("tta", ["none", "shift"])
def test_a_corruption_file_copying_the_test_set_scores_the_clean_accuracy(
    smoke_ckpt, cifar100_root, tmp_path, tta
):
    ood_root = copy_of_test_set(tmp_path / "c100", cifar100_root, noise=False)

    metrics = predict(
        predict_cfg(
            smoke_ckpt, tmp_path / "out", f"tta={tta}", "ood=cifar100c", f"ood.root={ood_root}"
        )
    )

    assert [metrics[f"ood/acc/fog/{s}"] for s in range(1, 6)] == [metrics["clean/acc"]] * 5
    assert metrics["tta/views"] == (16 if tta == "shift" else 1)


def test_clean_and_ood_paths_give_every_image_the_same_tta_probabilities(
    smoke_ckpt, cifar100_root, tmp_path
):
    # Stronger than equal accuracy (the tiny smoke model predicts one class for everything):
    # the softmax of every image, through the clean path and through a memory-mapped OOD file.
    ood_root = copy_of_test_set(tmp_path / "c100", cifar100_root, noise=False)
    cfg = predict_cfg(smoke_ckpt, tmp_path, "tta=shift", "ood=cifar100c", f"ood.root={ood_root}")
    module, datamodule, _ = prepare(cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)

    clean_batches, fog_batches = trainer.predict(module, datamodule=datamodule)

    clean, fog = torch.cat(clean_batches), torch.cat(fog_batches)
    assert [s.name for s in datamodule.predict_sets] == ["clean", "fog"]
    assert clean.std(dim=0).max() > 0  # images really get different outputs
    for severity in fog.split(len(clean)):
        assert torch.equal(severity, clean)


def test_leaderboard_submission_lists_every_image_in_file_severity_index_order(
    smoke_ckpt, tmp_path
):
    ood_root = write_leaderboard(tmp_path / "ood-test", per_severity=2)
    out = tmp_path / "out"

    metrics = predict(
        predict_cfg(smoke_ckpt, out, "tta=shift", "ood=leaderboard", f"ood.root={ood_root}")
    )

    with open(out / "submission_ood.csv", newline="") as f:
        rows = list(csv.reader(f))
    expected_ids = [
        f"{n}_{s}_{i}" for n in LEADERBOARD_NAMES for s in range(1, 6) for i in range(2)
    ]
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == expected_ids  # 19 x 5 x n rows
    assert all(0 <= int(r[1]) < 100 for r in rows[1:])
    assert metrics["tta/views"] == 16 and metrics["ood/submission_rows"] == 190
    for name in ["ood_confidence.csv", "ood_confidence.png", "ood_confidence_severity.png"]:
        assert (out / name).stat().st_size > 0, name
    assert "ood/confidence/distortion18/5" in metrics
    assert not list(out.glob(".*.tmp"))  # written atomically, no temporary file left


# --- accuracy arithmetic with a model whose answers are known -------------------------------
class CodeReader(nn.Module):
    """Predicts the class written (as a 0-255 value) at pixel (16, 16) of channel 0."""

    def __init__(self, mean: float, std: float, num_classes: int = 100):
        super().__init__()
        self.mean, self.std, self.num_classes = mean, std, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = ((x[:, 0, 16, 16] * self.std + self.mean) * 255).round().long()
        return nn.functional.one_hot(value % self.num_classes, self.num_classes).float() * 50


@pytest.mark.parametrize("tta", [None, TestTimeAugmentation(pattern="moore", distances=[1, 2])])
def test_per_corruption_accuracy_equals_the_hand_computed_one(tmp_path, tta):
    rng = np.random.default_rng(0)
    n = 30
    labels = np.tile(np.arange(n), 5)  # CIFAR-C: the same labels in every severity block
    images = {}
    for name in ("fog", "saturate"):
        codes = np.where(rng.random(150) < rng.random(), labels, (labels + 1) % 100)
        array = random_images(150, seed=len(name))
        array[:, 14:19, 14:19, 0] = codes[:, None, None]  # every shifted view reads the code
        images[name] = array
    root = write_corruption_set(tmp_path, images, labels)
    mean, std = NORMALIZATION_STATS["cifar100"]
    module = CIFARClassifier(net=CodeReader(mean[0], std[0]), optimizer=torch.optim.SGD, tta=tta)
    ood = CorruptionSet(str(root), benchmark=["fog"], extra=["saturate"], num_classes=100)
    datamodule = CIFARDataModule(
        root=str(tmp_path), batch_size=16, num_workers=0, ood=ood, predict_clean=False
    )

    def make_trainer(callbacks):
        return L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=callbacks
        )

    scored = score_sets(module, datamodule, make_trainer)
    metrics = evaluate_corruptions(ood, scored, tmp_path, None)

    for name, array in images.items():
        for s in range(5):
            block = slice(s * n, (s + 1) * n)
            expected = np.mean(array[block, 16, 16, 0] == labels[block])
            assert metrics[f"ood/acc/{name}/{s + 1}"] == expected
    assert metrics["ood/acc/mean_benchmark"] == pytest.approx(metrics["ood/acc/fog/mean"])
    assert metrics["ood/acc/mean_all"] == pytest.approx(
        np.mean([metrics["ood/acc/fog/mean"], metrics["ood/acc/saturate/mean"]])
    )


# --- the config it rebuilds ---------------------------------------------------------------
def test_predict_overrides_win_over_the_checkpoints_config(smoke_ckpt, tmp_path):
    checkpoint = read_checkpoint(smoke_ckpt)
    stored = checkpoint.config["data"]

    merged = run_config(
        checkpoint, predict_cfg(smoke_ckpt, tmp_path, "data.root=/elsewhere", "data.batch_size=7")
    )

    assert merged.data.root == "/elsewhere" and merged.data.batch_size == 7
    assert merged.data.name == stored["name"] and merged.model.widths == [8, 8, 16, 16, 16]


def test_predict_never_takes_check_integrity_false_from_the_checkpoint(smoke_ckpt, tmp_path):
    checkpoint = read_checkpoint(smoke_ckpt)
    assert checkpoint.config["data"]["check_integrity"] is False  # trained so
    cfg = compose_config("predict", [f"ckpt={smoke_ckpt}", f"paths.output_dir={tmp_path}"])

    assert run_config(checkpoint, cfg).data.check_integrity is True
    cfg.data.check_integrity = False  # only this command line may turn it off
    assert run_config(checkpoint, cfg).data.check_integrity is False


# --- errors -------------------------------------------------------------------------------
def test_checkpoint_of_another_project_is_refused(tmp_path):
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, other)

    with pytest.raises(CifarLabError, match="not a cifar-lab checkpoint"):
        predict(predict_cfg(other, tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["status"] == "failed"


def test_cifar100_checkpoint_is_refused_on_cifar10c(smoke_ckpt, tmp_path):
    with pytest.raises(CifarLabError, match="predicts 100 classes but ood=cifar10c has 10"):
        predict(predict_cfg(smoke_ckpt, tmp_path / "out", "ood=cifar10c", f"ood.root={tmp_path}"))


def test_cifar100_checkpoint_is_refused_on_cifar10_test_data(smoke_ckpt, cifar10_root, tmp_path):
    cfg = predict_cfg(
        smoke_ckpt, tmp_path / "out", f"data.root={cifar10_root}", "+data.name=cifar10"
    )

    with pytest.raises(CifarLabError, match="predicts 100 classes but cifar10 in .* has 10"):
        predict(cfg)


@pytest.mark.slow
def test_command_line_prints_a_missing_ood_file_as_one_line(smoke_ckpt, tmp_path):
    result = run_module(
        "cifar_lab.predict",
        f"ckpt={smoke_ckpt}",
        "ood=leaderboard",
        f"ood.root={tmp_path / 'nothing'}",
        "data.check_integrity=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        timeout=300,
    )

    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "distortion00.npy not found in" in errors[0]


# --- no code from files ---------------------------------------------------------------------
def tampered_checkpoint(smoke_ckpt: Path, path: Path, group: str, node: dict) -> Path:
    """The smoke checkpoint with `node` put into its stored config under `group`."""
    checkpoint = torch.load(smoke_ckpt, weights_only=True)
    checkpoint["cifar_lab"]["config"][group]["evil"] = node
    torch.save(checkpoint, path)
    return path


@pytest.mark.slow
def test_a_checkpoint_whose_config_names_another_target_is_refused_and_runs_nothing(
    smoke_ckpt, tmp_path
):
    victim = tmp_path / "copied.txt"
    node = {"_target_": "shutil.copyfile", "src": str(smoke_ckpt), "dst": str(victim)}
    evil = tampered_checkpoint(smoke_ckpt, tmp_path / "evil.ckpt", "model", node)

    result = run_module(
        "cifar_lab.predict", f"ckpt={evil}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )

    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and "model.evil._target_='shutil.copyfile'" in errors[0]
    assert not victim.exists()


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ({"_target_": "builtins.open", "file": "x"}, "data.evil._target_"),
        ({"_partial_": True, "x": 1}, "data.evil._partial_"),
        ({"_args_": ["rm"]}, "data.evil._args_"),
        ("${oc.env:HOME}", "data.evil"),
    ],
)
def test_every_untrusted_hydra_key_in_a_stored_config_is_named(smoke_ckpt, tmp_path, node, key):
    evil = tampered_checkpoint(smoke_ckpt, tmp_path / "evil.ckpt", "data", node)

    with pytest.raises(CifarLabError, match=key.replace(".", r"\.").replace("$", r"\$")):
        run_config(read_checkpoint(evil), predict_cfg(evil, tmp_path))


# --- what a user reads --------------------------------------------------------------------
def test_predict_ends_with_clean_calibration_and_ood_means_and_the_submission_file(
    smoke_ckpt, tmp_path, caplog
):
    ood_root = write_leaderboard(tmp_path / "ood-test", per_severity=2)
    out = tmp_path / "out"

    with caplog.at_level(logging.INFO, logger="cifar_lab.predict"):
        predict(predict_cfg(smoke_ckpt, out, "ood=leaderboard", f"ood.root={ood_root}"))

    last = [r.getMessage() for r in caplog.records if r.name == "cifar_lab.predict"][-6:]
    assert last[0].startswith("clean/acc ") and "clean/acc_top5" in last[0]
    assert last[1].startswith("clean/nll ") and "; temperature " in last[1]
    assert last[2].startswith("selective/aurc ") and "80/90/95% coverage" in last[2]
    assert "ood/confidence/mean_all" in last[3]
    assert last[4] == f"submission: {out / 'submission_ood.csv'}"
    assert last[5] == f"metrics and reports in {out}"


def test_ood_figures_are_titled_with_what_was_scored(
    smoke_ckpt, cifar100_root, tmp_path, monkeypatch
):
    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return path

    monkeypatch.setattr("cifar_lab.evaluation.plots.save", keep)
    ood_root = copy_of_test_set(tmp_path / "c100", cifar100_root)

    predict(predict_cfg(smoke_ckpt, tmp_path / "out", "ood=cifar100c", f"ood.root={ood_root}"))

    run = f"{smoke_ckpt.parent.parent.name}/{smoke_ckpt.name}, tta=none"
    for name in ("ood_corruptions.png", "ood_severity.png"):
        assert run in figures[name].axes[0].get_title(), name
    assert list(figures["ood_severity.png"].axes[0].get_xticks()) == [0, 1, 2, 3, 4, 5]


def test_nothing_to_score_is_an_error(smoke_ckpt, tmp_path):
    with pytest.raises(CifarLabError, match="leaves nothing to score"):
        predict(predict_cfg(smoke_ckpt, tmp_path / "out", "clean=false"))


def test_predict_scores_a_subset_of_a_corruption_set(tiny_checkpoint, cifar100_root, tmp_path):
    labels = np.tile(np.arange(20), 5)
    images = {"fog": random_images(100), "snow": random_images(100, seed=1)}
    ood = write_corruption_set(tmp_path / "c", images, labels)
    out = tmp_path / "out"

    metrics = predict(
        predict_cfg(tiny_checkpoint, out, f"data.root={cifar100_root}", "ood=cifar100c",
                    f"ood.root={ood}", "ood.names=[fog]", "ood.per_severity=4", "clean=false")
    )  # fmt: skip

    named = {key.split("/")[2] for key in metrics if key.startswith("ood/acc/")}
    assert {name for name in named if not name.startswith("mean")} == {"fog"}
    assert "mean_benchmark" not in named  # 1 of the 15: a partial mean is not the benchmark's
    rows = list(csv.DictReader((out / "ood_accuracy.csv").open()))
    assert [row["corruption"] for row in rows] == ["fog"]
    # 4 images a severity: every accuracy is a multiple of 1/4
    assert all(4 * metrics[f"ood/acc/fog/{s}"] % 1 == 0 for s in range(1, 6))
