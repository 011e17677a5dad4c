"""Every bad value of issue 10's list is one `error:` line that names it, what was expected and
the fix, raised before any long work (data loading, fitting, scoring)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import InstantiationException
from ood_files import random_images, write_corruption_set
from support import compose_config, predict_cfg, run_module, tiny_data

from cifar_lab import predict as predict_module
from cifar_lab.data.ood import check_labels
from cifar_lab.errors import CifarLabError
from cifar_lab.show_augment import augmentation_grid
from cifar_lab.train import train


def user_error(call: Callable[[], object], expected: str) -> str:
    """The one-line CifarLabError `call` raises (unwrapped from Hydra's instantiate)."""
    with pytest.raises((CifarLabError, InstantiationException)) as info:
        call()
    err = info.value.__cause__ if isinstance(info.value, InstantiationException) else info.value
    assert isinstance(err, CifarLabError), repr(err)
    message = str(err)
    assert "\n" not in message and re.search(expected, message), message
    return message


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("data.batch_size=0", r"data.batch_size=0 is invalid; expected an integer >= 1"),
        ("data.batch_size=-4", r"data.batch_size=-4 is invalid"),
        ("data.eval_batch_size=0", r"data.eval_batch_size=0 is invalid"),
        ("data.val_fraction=0.999", r"val_fraction=0.999 of 200 .* leaves no training image"),
        ("data.val_fraction=0.001", r"leaves no validation image.*data.val_fraction=0"),
        ("optim.optimizer.lr=-0.1", r"optim.optimizer.lr=-0.1 is invalid; expected .* >= 0"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 trains nothing; expected .* >= 1"),
        ("+augment.crop.size=28", r"augment.crop has unknown keys \['size'\]; expected only"),
        ("loss.label_smoothing=2", r"loss.label_smoothing=2 is out of range; expected .* \[0, 1\)"),
        ("data.img_size=-5", r"data.img_size=-5 is invalid; expected an integer from 8 to 2048"),
        ("optim.optimizer.opt=bogus", r"the optim.optimizer settings build no optimizer "
         r"\(ValueError: Optimizer bogus not found in registry\); fix them or choose another"),
        ("optim.optimizer.betas=[2]", r"the optim.optimizer settings build no optimizer"),
        ("optim.scheduler.warmup_epochs=-1", r"optim.scheduler.warmup_epochs=-1 is invalid; "
         r"expected a number >= 0"),
    ],
)  # fmt: skip
def test_a_bad_training_value_is_one_line_before_fitting(train_cfg, override, expected) -> None:
    cfg = train_cfg(override, "logger=none")

    user_error(lambda: train(cfg), expected)

    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # nothing was fitted


@pytest.fixture
def never_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    def score(*args, **kwargs):
        raise AssertionError("scoring started before the bad value was found")

    monkeypatch.setattr(predict_module, "score", score)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.batch_size=0"], r"data.batch_size=0 is invalid"),
        (["data.eval_batch_size=-1"], r"data.eval_batch_size=-1 is invalid"),
        (["tta=shift", "tta.distances=[1,32]"], r"shift by up to 32 pixels .* is 32 x 32"),
        (["tta=shift", "tta.padding=zeros", "tta.distances=[40]"], r"expected distances < 32"),
        (["tta=shift", "tta.distances=[1.7]"], r"tta.distances=\[1.7\] is invalid"),
        (["tta=shift", "+data.img_size=-5"], r"data.img_size=-5 is invalid"),  # not the TTA
    ],
)
def test_a_bad_predict_value_is_one_line_before_scoring(
    tiny_checkpoint, tmp_path, never_scores, overrides, expected
) -> None:
    user_error(
        lambda: predict_module.predict(predict_cfg(tiny_checkpoint, tmp_path / "out", *overrides)),
        expected,
    )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["calibration.temperature=hot"], r"calibration.temperature='hot' is invalid; expected"),
        (["calibration.temperature=fit", "+data.val_fraction=0"],
         r"temperature scaling needs the validation split of training: .*val_fraction=0"),
        (["detect=noise", "detect.detectors=[enrgy]"], r"'enrgy', not a detector \(did you mean"),
        (["detect=noise", "detect.detectors=[vim]", "detect.vim.dim=16"],
         r"detect.vim.dim=16 does not fit the model's 16 penultimate features"),
        (["detect=noise", "detect.detectors=[mahalanobis]", "detect.fit_images=20"],
         r"20 training images the detectors fit on hold no image of class"),
        (["detect=noise", "detect.detectors=[knn]", "detect.knn.k=500"],
         r"detect.knn.k=500 is more than the 180 training images"),
    ],
)  # fmt: skip
def test_a_bad_calibration_or_detection_value_is_one_line_before_scoring(
    tiny_checkpoint, cifar100_root, tmp_path, never_scores, overrides, expected
) -> None:
    data = [f"data.root={cifar100_root}", "data.download=false"]
    cfg = predict_cfg(tiny_checkpoint, tmp_path / "out", *data, *overrides)

    user_error(lambda: predict_module.predict(cfg), expected)


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        ("corruption,severity_1\nfog,0.5\n", "lacks columns"),
        ("corruption,severity_1,severity_2,severity_3,severity_4,severity_5\nfog,0.5,,0.5,0.5,0.5\n",
         r"line 2 has an empty or invalid cell .*'severity_2': ''"),
        ("corruption,severity_1,severity_2,severity_3,severity_4,severity_5\nfog,1,2,3,4,5\n",
         r"5 accuracies in \[0, 1\]"),
        ("corruption,severity_1,severity_2,severity_3,severity_4,severity_5\n", "holds no rows"),
        ("corruption,severity_1,severity_2,severity_3,severity_4,severity_5\nnot_a_corruption,.5,.5,.5,.5,.5\n",
         "names none of the corruptions scored"),
    ],
    ids=["columns", "empty-cell", "not-fractions", "no-rows", "no-match"],
)  # fmt: skip
def test_a_bad_reference_csv_fails_before_scoring(
    tiny_checkpoint, tmp_path, never_scores, csv, expected
) -> None:
    ood = write_corruption_set(tmp_path / "c", {"fog": random_images(10)}, np.zeros(10))
    (tmp_path / "ref.csv").write_text(csv)
    cfg = predict_cfg(tiny_checkpoint, tmp_path / "out", "ood=cifar100c", f"ood.root={ood}",
                      f"ood.reference_csv={tmp_path / 'ref.csv'}", "clean=false")  # fmt: skip

    user_error(lambda: predict_module.predict(cfg), expected)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (b"", "not a readable .npy array of labels"),
        ("truncated", "not a readable .npy array of labels"),
        (np.array([1, "a"], dtype=object), "not a readable .npy array of labels"),
        (np.zeros(10, np.float32), "a 1-D integer array was expected"),
        (np.arange(10) % 3, "lists other labels for severities"),
    ],
    ids=["empty", "truncated", "object", "float", "blocks-differ"],
)
def test_bad_labels_npy_is_one_line(tmp_path: Path, labels, expected) -> None:
    path = tmp_path / "labels.npy"
    if isinstance(labels, bytes):
        path.write_bytes(labels)
    elif isinstance(labels, str):
        np.save(path, np.zeros(1000, np.uint8))
        path.write_bytes(path.read_bytes()[:300])
    else:
        np.save(path, labels, allow_pickle=True)

    user_error(lambda: check_labels(path, num_classes=100, expected_len=10), expected)


def show_augment_cfg(root: Path, *overrides: str):
    return compose_config("show_augment", [*tiny_data(root), *overrides])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("split=val", r"split='val' is unknown; expected split=train or split=test"),
        ("num_images=0", r"num_images=0 is invalid; expected an integer >= 1"),
        ("num_views=-1", r"num_views=-1 is invalid; expected an integer >= 0"),
    ],
)
def test_a_bad_preview_setting_is_one_line(tmp_path: Path, override, expected) -> None:
    cfg = show_augment_cfg(tmp_path / "nowhere", override, f"output={tmp_path / 'x.png'}")

    user_error(lambda: augmentation_grid(cfg), expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "args", "expected"),
    [
        ("cifar_lab.train", ["data.batch_size=0"], "error: data.batch_size=0 is invalid"),
        ("cifar_lab.show_augment", ["num_images=0"], "error: num_images=0 is invalid"),
        # a constructor's own refusal: Hydra printed three lines without the key
        ("cifar_lab.train", ["trainer.precision=bogus"], "error: trainer.precision=bogus is "
         "refused by lightning.pytorch.trainer.trainer.Trainer (ValueError: Precision 'bogus'"),
        ("cifar_lab.train", ["model.act_layer=bogus"], "error: model.act_layer=bogus is refused "
         "by cifar_lab.models.convnet.create_convnet (KeyError: 'bogus')"),
    ],
)  # fmt: skip
def test_bad_values_on_the_command_line_are_one_error_line(
    cifar100_root: Path, tmp_path: Path, module, args, expected
) -> None:
    result = run_module(module, *tiny_data(cifar100_root), *args, "hydra.run.dir=run", cwd=tmp_path)

    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr[-2000:]
