"""Results that would be silently wrong are refused or named: a diverged run, a corruption
listed twice, a failed job's multi-line error in the sweep report."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_CONVNET, compose_config, tiny_data

from cifar_lab.corrupt import write_set
from cifar_lab.corruptions import get_corruptions
from cifar_lab.corruptions.writer import write_corruption
from cifar_lab.data.datasets import load_cifar
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.calibration import reliability_bins
from cifar_lab.evaluation.plots import plot_severity_curves, reliability_figure
from cifar_lab.files import write_csv
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.train import train


def test_a_diverging_run_ends_diverged_not_finished(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(*TINY_CONVNET, "logger=none", "optim.optimizer.lr=1e8", "trainer.max_epochs=3")

    with pytest.raises(CifarLabError, match="training diverged: the loss became") as err:
        train(cfg)

    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "diverged" and record["step"] >= 1 and "\n" not in str(err.value)
    assert "test/acc" not in record  # no score of NaN weights
    for saved in (tmp_path / "run" / "checkpoints").glob("*.ckpt"):  # the last finite epoch
        weights = read_checkpoint(saved).state_dict.values()
        assert all(bool(torch.isfinite(w).all()) for w in weights if w.is_floating_point())


def test_a_corruption_listed_twice_is_refused(cifar100_root: Path, tmp_path: Path) -> None:
    cfg = compose_config(
        "corrupt", [*tiny_data(cifar100_root), f"corrupt.out={tmp_path}", "corrupt.names=[fog,fog]"]
    )

    with pytest.raises(CifarLabError, match=r"corrupt.names lists \['fog'\] more than once"):
        write_set(cfg)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("corrupt.n=10.5", r"corrupt.n=10.5 is not a whole number of test images"),
        ("corrupt.out={file}", r"corrupt.out=.*afile is a file, not a folder"),
    ],
    ids=["fractional-n", "out-is-a-file"],
)
def test_a_bad_corrupt_setting_is_one_line(cifar100_root, tmp_path, setting, expected) -> None:
    (tmp_path / "afile").write_text("not a folder")
    out = setting.format(file=tmp_path / "afile")
    cfg = compose_config(
        "corrupt", [*tiny_data(cifar100_root), f"corrupt.out={tmp_path / 'set'}", out]
    )

    with pytest.raises(CifarLabError, match=expected):
        write_set(cfg)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 512 vs 418"),
    ],
    ids=["enospc", "torch-zip-writer"],
)
def test_a_full_disk_while_saving_a_checkpoint_is_one_line(train_cfg, monkeypatch, failure):
    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK")  # part of a file, as a disk that fills up leaves
        raise failure

    monkeypatch.setattr("cifar_lab.runs.saving.torch.save", full_disk)
    cfg = train_cfg(*TINY_CONVNET, "logger=none")

    full = r"cannot write (last|best).ckpt in .*: no space left on device \([\d,]+ MiB free\); "
    with pytest.raises(CifarLabError, match=full + "free space there or write elsewhere"):
        train(cfg)

    folder = Path(cfg.paths.output_dir) / "checkpoints"
    assert not list(folder.glob(".*.tmp"))  # no partial file left
    assert json.loads((folder.parent / "metrics.json").read_text())["status"] == "failed"


def test_a_corruption_file_is_reserved_before_it_is_mapped(tmp_path, monkeypatch) -> None:
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cifar_lab.files.os.posix_fallocate", no_space)

    with pytest.raises(CifarLabError, match=r"cannot write \.fog\.npy\.tmp in .*MiB needed"):
        write_corruption(tmp_path / "fog.npy", get_corruptions(["fog"])[0],
                         np.zeros((4, 32, 32, 3), np.uint8), seed=0, batch_size=4)  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # the temp file is gone, nothing was mapped


@pytest.mark.parametrize("manifest", ["[1, 2]", "null", "a folder"])
def test_a_damaged_manifest_is_a_different_set_not_a_traceback(cifar100_root, tmp_path, manifest):
    out = tmp_path / "set"
    out.mkdir()
    if manifest == "a folder":
        (out / "manifest.json").mkdir()
        expected = r"holds a manifest.json that is not a file"
    else:
        (out / "manifest.json").write_text(manifest)
        (out / "fog.npy").write_bytes(b"")  # a file of some set
        expected = r"already holds a different set \(it has no manifest.json\)"
    cfg = compose_config(
        "corrupt", [*tiny_data(cifar100_root), f"corrupt.out={out}", "corrupt.names=[fog]"]
    )

    with pytest.raises(CifarLabError, match=expected):
        write_set(cfg)


def test_a_missing_test_file_is_named_as_such(cifar100_root, tmp_path) -> None:
    root = tmp_path / "data"
    shutil.copytree(cifar100_root, root)
    (root / "cifar-100-python" / "test").unlink()

    with pytest.raises(CifarLabError, match=r"cifar100 files \['test'\] are missing in"):
        load_cifar("cifar100", root, train=False, download=False, check_integrity=False)


def test_the_reliability_diagram_shows_the_images_per_bin() -> None:
    rng = np.random.default_rng(0)
    confidences = rng.random(200)
    bins = reliability_bins(confidences, rng.random(200) < confidences)

    figure = reliability_figure({"severity 5": bins}, "cifar100c calibration: severity 5")

    diagram, counts = figure.axes
    heights = [bar.get_height() for bar in counts.patches]
    assert heights == bins.count.tolist() and sum(heights) == 200
    assert counts.get_ylabel() == "images per bin" and len(diagram.get_lines()) == 2


def test_csv_numbers_carry_no_float_noise(tmp_path: Path) -> None:
    write_csv(tmp_path / "t.csv", ["name", "mean"], [("fog", 0.1 + 0.2), ("snow", None)])

    assert (tmp_path / "t.csv").read_text() == "name,mean\nfog,0.3\nsnow,\n"


def test_severity_curves_that_coincide_stay_visible(tmp_path: Path, monkeypatch) -> None:
    drawn = {}
    monkeypatch.setattr(
        "cifar_lab.evaluation.plots.save", lambda fig, path: drawn.setdefault("fig", fig)
    )
    same = [0.5, 0.4, 0.3, 0.2, 0.1]

    plot_severity_curves(tmp_path / "s.png", {"mean_all": same, "mean_benchmark": same}, "acc", 0.6)

    first, second = drawn["fig"].axes[0].get_lines()
    assert list(first.get_ydata()) == list(second.get_ydata())
    assert first.get_marker() != second.get_marker()
    assert first.get_linestyle() != second.get_linestyle()
    assert all(a != b for a, b in zip(first.get_xdata(), second.get_xdata(), strict=True))
