"""A typo or a wrong type on the command line is one line with the fix, before Hydra runs and
in a multirun too: Hydra's own answers are generic advice ('use +key') or a traceback."""

from __future__ import annotations

import errno
import io
import logging
import re
from types import SimpleNamespace

import pytest
import torch
from hydra.errors import InstantiationException
from support import run_module, tiny_data

from cifar_lab.cli import check_command_line, setup_run_output, user_error_line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["data.bach_size=64"], "data.bach_size is not a key of the train config (did you mean "
         "data.batch_size?)"),
        (["optim.optimizer.lr=abc"], "optim.optimizer.lr='abc' is not a number"),
        (["trainer.max_epochs=1.5"], "trainer.max_epochs=1.5 is not an integer"),
        (["model=resnet5"], "not an option of model (did you mean model=resnet50?)"),
        (["modle=resnet50"], "modle is not a key of the train config (did you mean model?)"),
        (["data.batch_size=16,abc"], "data.batch_size='abc' is not an integer"),
        (["experiment=smoke", "trainer.limit_val_batches=all"],
         "trainer.limit_val_batches='all' is not a number"),
        (["experiment=smoke", "model.widthz=[8]"], "did you mean model.widths?"),
        (["+data=cifar10"], "use data=cifar10"),
        (["augment.mix.prob=1.0"], "augment.mix is null (off) in this config, so it has no keys "
         "to set; set it whole, e.g. 'augment.mix={mixup_alpha:0.8"),
        (["callbacks=[default,emma]"], "callbacks=emma is not an option of callbacks (did you "
         "mean callbacks=ema?)"),
        (["callbacks=[default,early_stoping]"], "callbacks=early_stoping is not an option of "
         "callbacks (did you mean callbacks=early_stopping?)"),
    ],
    ids=["key-typo", "lr-text", "epochs-float", "option-typo", "group-typo", "sweep-choice",
         "limit-text",
         "experiment-key", "plus-group", "key-of-null", "option-of-a-list", "option-in-a-list"],
)  # fmt: skip
def test_a_bad_override_is_one_line_with_a_did_you_mean(capsys, args, expected) -> None:
    with pytest.raises(SystemExit) as exited:
        check_command_line("train", args)

    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["data.batch_size=32", "model=resnet50", "optim.optimizer.lr=1e-3"],
        ["experiment=smoke", "model.widths=[8,8,8,8,8]", "+data.extra=1", "~data.pin_memory"],
        [
            "hydra/launcher=basic",
            "hydra.run.dir=x",
            "data.batch_size=16,32",
            "trainer.max_epochs=2",
        ],
        ["data.eval_batch_size=64", "data.num_workers=2", "trainer.precision=bf16-mixed"],
        ["augment.mix={mixup_alpha:0.8,cutmix_alpha:1.0,prob:0.5,switch_prob:0.5}"],
        # Lightning's limits take a count or a fraction: 1.0 is every batch, not one
        ["experiment=smoke", "trainer.limit_train_batches=1.0", "trainer.limit_val_batches=0.5"],
        # several options of one group, and a key of one of them
        ["callbacks=[default,ema]", "callbacks.ema.decay=0.5"],
        # options that combine, as train's --help shows them, with a key checked beside them
        ["callbacks=[default,early_stopping,lr_monitor]", "trainer.max_epochs=2"],
    ],
)
def test_good_overrides_pass_the_check(args) -> None:
    check_command_line("train", args)


def test_a_required_key_of_predict_is_a_key(capsys) -> None:
    check_command_line("predict", ["ckpt=x.ckpt", "data.root=/d", "tta=shift"])

    with pytest.raises(SystemExit):
        check_command_line("predict", ["ckpt=x.ckpt", "tta.distance=[1]"])
    assert "did you mean tta.distances?" in capsys.readouterr().err


def test_a_multirun_typo_stops_before_any_job(tmp_path) -> None:
    result = run_module("cifar_lab.train", "-m", "data.bach_size=16,32", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: data.bach_size is not a key of the train config (did you mean data.batch_size?); "
        "a new key takes a +"
    )
    assert not (tmp_path / "outputs").exists()


def test_the_gpu_trainer_on_a_cpu_machine_names_trainer_cpu(cifar100_root, tmp_path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: trainer=gpu is valid here")

    result = run_module("cifar_lab.train", "trainer=gpu", *tiny_data(cifar100_root), cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip().endswith("on this machine use trainer=cpu (or trainer=default, "
                                          "which picks the device)")  # fmt: skip


def test_a_run_folder_that_is_a_file_is_one_line_before_hydra(tmp_path) -> None:
    """Hydra creates the run folder and opens its log there first: its answer was a traceback.
    (Every entry point runs the same check: predict, corrupt, bench, show_augment.)"""
    (tmp_path / "taken").write_text("a file")

    result = run_module("cifar_lab.train", f"hydra.run.dir={tmp_path / 'taken' / 'run'}",
                        cwd=tmp_path)  # fmt: skip

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: hydra.run.dir={tmp_path / 'taken' / 'run'}: {tmp_path / 'taken'} is a file, not "
        f"a folder; give a folder you can write: hydra.run.dir=<folder>"
    )


@pytest.mark.parametrize(
    ("argv", "broken", "expected"),
    [
        (["x=1"], "access", r"the run folder under .*/outputs: .* cannot be written \(a "
         r"read-only file system or no permission\); give a folder you can write: hydra.run.dir="),
        (["-m", "hydra.sweep.dir=RUN"], "access", r"hydra.sweep.dir=.*/run: .* cannot be written"),
        (["hydra.run.dir=RUN"], "space", r"hydra.run.dir=.*/run: .* has 0.1 MiB free, too little "
         r"for the run's config and log files; free space there or give a folder"),
    ],
    ids=["read-only-default", "read-only-sweep", "full"],
)  # fmt: skip
def test_a_read_only_or_full_run_folder_is_one_line(tmp_path, monkeypatch, capsys, argv, broken,
                                                    expected) -> None:  # fmt: skip
    """As root (tests here) a mode does not stop writes, and a read-only mount needs privileges:
    the folder's state is what the operating system would answer."""
    monkeypatch.chdir(tmp_path)
    if broken == "access":
        monkeypatch.setattr("cifar_lab.cli.os.access", lambda path, mode: False)
    else:
        nearly_full = SimpleNamespace(free=1 << 17)
        monkeypatch.setattr("cifar_lab.cli.shutil.disk_usage", lambda path: nearly_full)
    argv = [a.replace("RUN", str(tmp_path / "run")) for a in argv]

    with pytest.raises(SystemExit):
        check_command_line("train", argv)

    err = capsys.readouterr().err
    assert re.match(f"error: {expected}", err) and err.count("\n") == 1, err


@pytest.mark.parametrize(
    ("target", "cause", "expected"),
    [
        ("lightning.pytorch.trainer.trainer.Trainer", ValueError("Precision 'bogus' is invalid."),
         "trainer.precision=bogus is refused by lightning.pytorch.trainer.trainer.Trainer "
         "(ValueError: Precision 'bogus' is invalid.)"),
        ("cifar_lab.models.convnet.create_convnet",
         ValueError("dropout probability has to be between 0 and 1, but got 2"),
         "model.drop_rate=2 is refused by cifar_lab.models.convnet.create_convnet"),
        ("cifar_lab.models.convnet.create_convnet",
         TypeError("not all arguments converted during string formatting"),
         "model.drop_rate=2 or model.widths=abc is refused by"),
    ],
    ids=["quoted-value", "quoted-in-its-group", "its-group"],
)  # fmt: skip
def test_settings_a_constructor_refuses_are_named_in_one_line(monkeypatch, target, cause, expected):
    given = [("trainer.precision", "bogus"), ("trainer.limit_train_batches", "2"),
             ("model.drop_rate", "2"), ("model.widths", "abc")]  # fmt: skip
    monkeypatch.setattr("cifar_lab.cli.command_line_values", lambda: given)
    err = InstantiationException(f"Error in call to target '{target}':\n{cause!r}")
    err.__cause__ = cause

    line = user_error_line(err)

    assert line.startswith(f"error: {expected}") and "\n" not in line, line
    assert line.endswith("give a value it takes (--help lists the options; HYDRA_FULL_ERROR=1 "
                         "shows where it failed)")  # fmt: skip


def test_a_log_file_that_cannot_be_written_prints_no_traceback(capsys) -> None:
    """A full disk under the run's log file: logging printed '--- Logging error ---' and a
    traceback for every line, around the run's own one-line error."""

    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    handler = logging.StreamHandler(FullDisk())
    logger = logging.getLogger("cifar_lab.test_full_disk")
    logger.addHandler(handler)
    try:
        setup_run_output()
        logger.error("a line the log file cannot take")
    finally:
        logger.removeHandler(handler)
        logging.raiseExceptions = True

    err = capsys.readouterr().err
    assert "Logging error" not in err and "Traceback" not in err
