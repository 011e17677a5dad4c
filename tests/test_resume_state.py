"""The training state a resume hands to Lightning, from a damaged or crafted last.ckpt (issue 20):
each case (most found by tests/test_fuzz.py's resume fuzzing) is refused in one line naming the
file and the part, before Lightning reads it, and the finished record it would resume stays.
Before, each was a traceback from inside torch or Lightning, a silent change, or an error that
did not name the file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from support import STATEFUL_CALLBACKS, TINY_CONVNET, compose_train, tiny_data, tiny_training

from cifar_lab.build import build_callbacks, build_module, build_trainer
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.runs.resume_state import check_training_state
from cifar_lab.train import train

RESUME = [*TINY_CONVNET, *tiny_training(batches=1), "logger=none", "test=false", STATEFUL_CALLBACKS]
Edit = Callable[[dict], object]


@pytest.fixture
def run(stateful_checkpoint: Path, tmp_path: Path) -> Path:
    """A copy of a finished one-epoch run (early-stopping and EMA state in its last.ckpt)."""
    return Path(shutil.copytree(stateful_checkpoint.parent.parent, tmp_path / "run"))


def edit_last(run: Path, edit: Edit) -> Path:
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, last)
    return last


def resume(run: Path, root: Path, *overrides: str) -> dict:
    """`run` resumed in place for one more epoch; `overrides` are the command line's (they win
    over the checkpoint's stored config)."""
    cfg = [*tiny_data(root), *RESUME, f"paths.output_dir={run}", "ckpt_path=auto"]
    return train(compose_train([*cfg, "trainer.max_epochs=2", *overrides]), overrides)


def optimizer(c: dict) -> dict:
    return c["optimizer_states"][0]


def moments(c: dict) -> dict:
    return optimizer(c)["state"][0]


def schedule(c: dict) -> dict:
    return c["lr_schedulers"][0]


def fit_loop(c: dict) -> dict:
    return c["loops"]["fit_loop"]


def callback(c: dict, name: str) -> dict:
    return next(state for key, state in c["callbacks"].items() if key.startswith(name))


CASES: dict[str, tuple[Edit, str]] = {
    # optimizer: each a traceback at the first step or in torch's load_state_dict before
    "fewer-params": (lambda c: optimizer(c)["param_groups"][0]["params"].pop(),
                     r"param_groups\[0\].params=\[0, 1, .*, expected 32 distinct numbers"),
    "param-twice": (lambda c: optimizer(c)["param_groups"][1]["params"].__setitem__(0, 0),
                    r"param_groups\[1\].params=.*distinct"),
    "moment-not-a-tensor": (lambda c: moments(c).update(exp_avg=[0.0] * 8),
                            r"state\[0\].exp_avg=\[0.0, .*, expected tensor\[8\] float32"),
    "moment-wrong-shape": (lambda c: moments(c).update(exp_avg=torch.zeros(8, 8)),
                           r"state\[0\].exp_avg=tensor\[8, 8\] float32, expected tensor\[8\]"),
    "moment-nan": (lambda c: moments(c)["exp_avg_sq"].fill_(float("nan")),
                   r"state\[0\].exp_avg_sq holds NaN"),
    "no-step": (lambda c: moments(c).pop("step"), r"state\[0\] lacks \['step'\]"),
    "extra-param": (lambda c: optimizer(c)["state"].update({999: moments(c)}),
                    r"optimizer_states\[0\].state has an entry for 999, in no group"),
    "betas-true": (lambda c: optimizer(c)["param_groups"][0].update(betas=True),
                   r"param_groups\[0\].betas=True, expected 2 items"),
    "negative-lr": (lambda c: optimizer(c)["param_groups"][1].update(lr=-1.0),
                    r"param_groups\[1\].lr=-1.0, expected a finite number in \[0,"),
    "amsgrad-on": (lambda c: optimizer(c)["param_groups"][0].update(amsgrad=True),
                   r"optimizer_states\[0\] does not load \(KeyError: 'max_exp_avg_sq'\)"),
    "two-optimizers": (lambda c: c["optimizer_states"].append(optimizer(c)),
                       r"optimizer_states holds 2 optimizer states; this run's AdamW is one"),
    # lr schedule: a traceback or silently another schedule before
    "schedule-text": (lambda c: schedule(c).update(t_initial="abc"),
                      r"lr_schedulers\[0\].t_initial='abc', expected a finite number"),
    "schedule-last-epoch": (lambda c: schedule(c).update(last_epoch="abc"),
                            r"lr_schedulers\[0\] has unexpected keys \['last_epoch'\]"),
    "schedule-long-base-lrs": (lambda c: schedule(c).update(base_values=[1e-3] * 100_000),
                               r"lr_schedulers\[0\].base_values=\[0.001, .*expected 2 items"),
    "schedule-of-decay": (lambda c: schedule(c).update(param_group_field="weight_decay"),
                          r"lr_schedulers\[0\].param_group_field='weight_decay', expected 'lr'"),
    "schedule-arithmetic": (lambda c: schedule(c).update(cycle_mul=0.0),
                            r"lr_schedulers\[0\] does not load"),
    # loops and counters
    "loop-text": (lambda c: fit_loop(c)["epoch_loop.batch_progress"]["total"].update(ready="a"),
                  r"loops.fit_loop.epoch_loop.batch_progress.total.ready='a', expected an int"),
    "loop-negative": (lambda c: fit_loop(c)["epoch_progress"]["total"].update(ready=-4),
                      r"epoch_progress.total.ready=-4, expected an integer in \[0, "),
    "epoch-tensor": (lambda c: c.update(epoch=torch.zeros(3, 3)),
                     r"epoch=tensor\[3, 3\] float32, expected an integer in \[0,"),
    "epoch-huge": (lambda c: c.update(epoch=10**30), r"epoch=10{30}, expected an integer in"),
    "epoch-not-the-loop's": (lambda c: c.update(epoch=5), r"epoch=5 but its fit loop counts 0"),
    "lightning-version": (lambda c: c.update({"pytorch-lightning_version": 2.6}),
                          r"pytorch-lightning_version=2.6, expected a version such as"),
    "old-lightning-layout": (lambda c: c.update({"pytorch-lightning_version": "1.5.0"}),
                             r"written by Lightning 1.5.0, its state does not upgrade"),
    # callbacks, EMA, weights, generators
    "ema-step-list": (lambda c: callback(c, "EMA").update(latest_update_step=[0]),
                      r"callbacks\['EMA'\].latest_update_step=\[0\], expected an integer"),
    "early-stopping-reason": (lambda c: callback(c, "EarlyStopping").update(stopping_reason=99),
                              r"callbacks\[.EarlyStopping.*\] does not load \(ValueError: 99 "),
    "ema-weights": (lambda c: c["current_model_state"].popitem(),
                    r"current_model_state lacks \['val_acc_best.max_value'\]"),
    "ema-counter": (lambda c: c["averaging_state"].update(extra=torch.zeros(1)),
                    r"averaging_state has unexpected keys \['extra'\]"),
    "module-extra-key": (lambda c: c["state_dict"].update(foo=torch.zeros(1)),
                         r"state_dict has unexpected keys \['foo'\]"),
    "best-accuracy-nan": (lambda c: c["state_dict"]["val_acc_best.max_value"].fill_(float("nan")),
                          r"state_dict.val_acc_best.max_value holds NaN"),
    "rng": (lambda c: c["rng_states"]["numpy"].pop(), r"'rng_states' entry is damaged"),
}  # fmt: skip


@pytest.mark.parametrize(("edit", "expected"), list(CASES.values()), ids=list(CASES))
def test_a_damaged_training_state_is_one_line_and_keeps_the_record(
    run: Path, cifar100_root: Path, edit: Edit, expected: str
) -> None:
    last = edit_last(run, edit)
    before = json.loads((run / "metrics.json").read_text())

    with pytest.raises(CifarLabError, match=expected) as err:
        resume(run, cifar100_root)

    assert "\n" not in str(err.value) and str(last) in str(err.value)
    after = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in after.items() if k != "attempts"} == before
    assert not (run / "checkpoints" / "last.ckpt.partial").exists()


def test_another_optimizer_on_resume_is_one_line(run: Path, cifar100_root: Path) -> None:
    """optim=sgd on an AdamW checkpoint: SGD's step read settings AdamW's groups lack."""
    with pytest.raises(CifarLabError, match=r"param_groups\[0\] lacks \['momentum', 'dampening'"):
        resume(run, cifar100_root, "optim=sgd")


def test_resuming_with_data_of_another_class_count_is_one_line(run, cifar10_root) -> None:
    """The network keeps the checkpoint's 100-class head; CIFAR-10's labels met torchmetrics'
    shape check inside the first step (a traceback)."""
    expected = r"holds a network for 100 classes, but this run's data \(cifar10\) has 10: resume"
    with pytest.raises(CifarLabError, match=expected):
        resume(run, cifar10_root, "data=cifar10")


def test_a_checkpoint_beyond_max_epochs_names_the_file(run: Path, cifar100_root, tmp_path) -> None:
    """Lightning's own refusal names neither the file nor the fix."""

    def three_epochs(c: dict) -> None:  # as a 4-epoch run's last.ckpt counts them
        c["epoch"] = fit_loop(c)["epoch_progress"]["current"]["completed"] = 3

    last = edit_last(run, three_epochs)
    cfg = [*tiny_data(cifar100_root), *RESUME, f"paths.output_dir={tmp_path / 'other'}"]

    with pytest.raises(CifarLabError, match=rf"{last} has trained 3 epochs, more than trainer"):
        train(compose_train([*cfg, f"ckpt_path={last}", "trainer.max_epochs=2"]))


@pytest.mark.parametrize("optim", ["adoptw", "muon", "sgd"])
def test_a_real_training_state_of_each_optimizer_resumes(
    tmp_path: Path, cifar100_root: Path, optim: str
) -> None:
    """The meta-device dry run and the comparisons accept what each optimizer really saves."""
    run = tmp_path / "run"
    cfg = [*tiny_data(cifar100_root), *RESUME, f"optim={optim}", f"paths.output_dir={run}"]
    train(compose_train(cfg))

    metrics = train(compose_train([*cfg, "ckpt_path=auto", "trainer.max_epochs=2"]))

    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2


def test_a_damaged_amp_scaler_state_is_one_line(stateful_checkpoint, tmp_path, cifar100_root):
    """fp16 training keeps a GradScaler's state (GPU only: Lightning refuses 16-mixed on a CPU,
    so the plugin is put in by hand here)."""
    checkpoint = read_checkpoint(stateful_checkpoint)
    cfg = compose_train([*tiny_data(cifar100_root), *RESUME, f"paths.output_dir={tmp_path}"])
    trainer = build_trainer(cfg.trainer, callbacks=build_callbacks(cfg), logger=False)
    scaler = torch.amp.GradScaler("cpu")
    trainer.strategy.precision_plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    module = build_module(cfg)
    checkpoint.raw["MixedPrecision"] = {**scaler.state_dict(), "scale": "abc"}

    with pytest.raises(CifarLabError, match=r"MixedPrecision.scale='abc', expected a finite"):
        check_training_state(checkpoint, trainer, module)

    checkpoint.raw["MixedPrecision"] = scaler.state_dict()  # a real one passes
    check_training_state(checkpoint, trainer, module)
