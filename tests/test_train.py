"""End-to-end training through Hydra: checkpoints, metrics.json, wandb, resume, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from support import TINY_CONVNET, compose_train, run_train, tiny_data

from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import CheckpointPayload, RunCheckpoint, read_checkpoint
from cifar_lab.runs.rebuild import given_by_overrides, rebuild_config
from cifar_lab.train import train

REPO = Path(__file__).resolve().parents[1]
# The ResNets are slow on a CPU: one batch each of training, validation and test.
ONE_BATCH_OF_4 = [
    "data.batch_size=4",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=convnet", *TINY_CONVNET, "optim=adamw"],
        ["model=resnet50", "optim=sgd", *ONE_BATCH_OF_4],
        ["model=resnext50", "optim=adoptw", *ONE_BATCH_OF_4, "model.act_layer=mish"],
        ["model=resnet101", "optim=adamw", *ONE_BATCH_OF_4],
    ],
    ids=["convnet", "resnet50", "resnext50", "resnet101"],
)
def test_each_model_group_trains_and_leaves_a_checkpoint(train_cfg, overrides) -> None:
    cfg = train_cfg(*overrides)

    metrics = train(cfg)

    run = Path(cfg.paths.output_dir)
    assert metrics["status"] == "finished"
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    written = json.loads((run / "metrics.json").read_text())
    assert written["status"] == "finished"
    assert 0.0 <= written["test/acc"] <= 1.0 and 0.0 <= written["val/acc_best"] <= 1.0
    assert written["best_model_path"].endswith("best.ckpt")


def test_training_with_mixing_smoothing_and_seed_augment_runs(train_cfg) -> None:
    cfg = train_cfg(
        *TINY_CONVNET,
        "augment=seed",
        "augment.clahe=true",
        "+augment.mix={mixup_alpha: 0.8, cutmix_alpha: 1.0}",
        "loss.label_smoothing=0.1",
        "trainer.gradient_clip_val=3.0",
    )
    assert train(cfg)["status"] == "finished"


def test_the_tiny_set_is_learnable(train_cfg, cifar10_root: Path) -> None:
    """Each class has its own colour: a few epochs must beat chance (10%) by far."""
    cfg = train_cfg(
        *TINY_CONVNET,
        "data=cifar10",
        "augment=none",
        "data.val_fraction=0",
        "trainer.max_epochs=12",
        "trainer.limit_train_batches=null",
        "trainer.limit_val_batches=null",
        "trainer.limit_test_batches=null",
        "model.drop_rate=0",
        "model.block_drop_rate=0",
        "optim.optimizer.lr=0.005",
        "optim.scheduler.warmup_epochs=0",
        root=cifar10_root,
    )
    metrics = train(cfg)
    assert metrics["val/acc_best"] >= 0.4, metrics  # 4x chance (0.7 measured)


def test_debug_limit_runs_on_a_set_smaller_than_its_limits(
    cifar100_root: Path, tmp_path: Path
) -> None:
    cfg = compose_train(
        [
            *tiny_data(cifar100_root),
            *TINY_CONVNET,
            "debug=limit",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            "logger=csv",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )

    metrics = train(cfg)

    assert metrics["status"] == "finished" and metrics["global_step"] == 12  # 180 / 16 images
    assert "test/acc" in metrics


def test_checkpoint_carries_config_and_rng(tiny_checkpoint: Path) -> None:
    checkpoint = read_checkpoint(tiny_checkpoint).raw  # a tiny ConvNet run's last.ckpt

    meta = checkpoint["cifar_lab"]
    assert meta["config"]["model"]["widths"] == [8, 8, 16, 16, 16]
    assert meta["num_classes"] == 100
    assert set(checkpoint["rng_states"]) >= {"torch", "numpy", "python"}


EVERY_EPOCH = [
    "+callbacks.every_epoch._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.every_epoch.filename='epoch_{epoch:03d}'",
    "+callbacks.every_epoch.save_top_k=-1",
    "+callbacks.every_epoch.monitor=step",  # a state key of its own beside best/last
    "+callbacks.every_epoch.mode=max",
    "+callbacks.every_epoch.auto_insert_metric_name=false",
]


@pytest.mark.parametrize(
    "recipe",
    [
        ["augment=seed"],
        ["augment=seed", "callbacks=ema"],
        ["augment=seed", "augment.backend=batched", "augment.batched_on=device"],
        ["augment=basic", "adv=fgsm_rs"],
        ["augment=basic", "adv=pgd", "adv.steps=2"],
        ["augment=basic", "adv=trades", "adv.steps=2"],
    ],
    ids=["albumentations", "ema", "batched_on_device", "adv_fgsm_rs", "adv_pgd", "adv_trades"],
)
def test_resume_continues_exactly_where_training_stopped(
    train_cfg, tmp_path: Path, recipe: list[str]
) -> None:
    common = [
        *TINY_CONVNET,
        *recipe,
        "trainer.max_epochs=3",
        "optim.scheduler.warmup_epochs=1",
    ]
    full_cfg = train_cfg(
        *common, *EVERY_EPOCH, f"+callbacks.every_epoch.dirpath={tmp_path / 'epochs'}"
    )
    full = train(full_cfg)
    after_first_epoch = tmp_path / "epochs" / "epoch_000.ckpt"

    resumed = train(train_cfg(*common, f"ckpt_path={after_first_epoch}", run="resumed"))

    assert resumed["epochs_completed"] == full["epochs_completed"] == 3
    assert resumed["global_step"] == full["global_step"] == 9
    assert resumed["train/lr"] == pytest.approx(full["train/lr"])
    assert resumed["val/acc_best"] == full["val/acc_best"]  # over all epochs, not since resume
    # best.ckpt in the new folder is the best of all epochs, also those before the resume
    assert Path(resumed["best_model_path"]).parent == tmp_path / "resumed" / "checkpoints"
    assert resumed["best_model_score"] == full["best_model_score"] == full["val/acc_best"]
    best_full = read_checkpoint(full["best_model_path"]).raw
    assert best_full["epoch"] == 0  # before the resume: a restarted best would be a later one
    assert read_checkpoint(resumed["best_model_path"]).raw["epoch"] == best_full["epoch"]
    assert resumed["test/acc"] == full["test/acc"]  # tested on that checkpoint
    full_checkpoint = read_checkpoint(full["last_model_path"]).raw
    resumed_checkpoint = read_checkpoint(resumed["last_model_path"]).raw
    # with EMA: state_dict is the average, current_model_state the training weights
    for part in ("state_dict", "current_model_state", "averaging_state"):
        assert (part in resumed_checkpoint) == (part in full_checkpoint), part
        for name, tensor in full_checkpoint.get(part, {}).items():
            torch.testing.assert_close(resumed_checkpoint[part][name], tensor, msg=name)


def test_resume_takes_the_stored_groups_and_the_command_line_keys_on_top(train_cfg) -> None:
    stored = OmegaConf.to_container(train_cfg(*TINY_CONVNET, "optim=sgd"), resolve=True)
    given = ["model.widths=[8,8,16,16,32]", "model.drop_rate=0.3", "data.root=/elsewhere"]
    cfg = train_cfg(*given, "trainer.max_epochs=5")

    checkpoint = RunCheckpoint(Path("x.ckpt"), CheckpointPayload("0.1.0", 100, stored), raw={})

    resumed, notices = rebuild_config(cfg, checkpoint, given_by_overrides(cfg, given))

    assert resumed.optim.optimizer.opt == "sgd" and resumed.model.head_hidden == 16  # stored
    assert resumed.model.widths == [8, 8, 16, 16, 32] and resumed.model.drop_rate == 0.3
    assert resumed.data.root == "/elsewhere" and resumed.trainer.max_epochs == 5
    (notice,) = notices  # drop_rate and data.root leave the network as it is
    assert notice.startswith("model.widths=[8, 8, 16, 16, 32] from the command line replaces")


def test_a_file_that_is_not_a_checkpoint_is_reported(tmp_path: Path) -> None:
    junk = tmp_path / "notes.ckpt"
    junk.write_text("not a checkpoint")
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)

    with pytest.raises(CifarLabError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(CifarLabError, match="not a cifar-lab checkpoint"):
        read_checkpoint(other)
    with pytest.raises(CifarLabError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_a_run_folder_given_as_checkpoint_names_the_file_in_it(tmp_path: Path) -> None:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({}, tmp_path / "run" / "checkpoints" / "best.ckpt")

    with pytest.raises(CifarLabError) as err:
        read_checkpoint(tmp_path / "run")

    assert f"e.g. {tmp_path / 'run' / 'checkpoints' / 'best.ckpt'}" in str(err.value)


@pytest.mark.slow
def test_smoke_experiment_through_the_command_line_logs_to_offline_wandb(
    cifar100_root: Path, tmp_path: Path
) -> None:
    result = run_train(
        "experiment=smoke",
        *tiny_data(cifar100_root, batch_size=64, workers=1),
        "trainer.limit_train_batches=2",
        "trainer.max_epochs=1",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = tmp_path.glob("outputs/smoke/runs/*/metrics.json")
    run = metrics_file.parent
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "finished" and metrics["wandb_id"]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    (wandb_run,) = run.glob(f"wandb/offline-run-*-{metrics['wandb_id']}")
    assert list(wandb_run.glob("*.wandb"))
    assert (run / "csv" / "metrics.csv").is_file()
    assert "train/loss" in (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    # no third-party tip or deprecation the user cannot act on (README: Quiet output)
    output = result.stdout + result.stderr
    for noise in ("💡 Tip", "anonymous setting", "LeafSpec", "has no effect", "dirpath has"):
        assert noise not in output, noise
    assert "Epoch 1/1" in output  # counted from 1
    log = (run / "train.log").read_text()  # the run's log, Lightning's lines too
    assert "`Trainer.fit` stopped" in log and "best val/acc" in log


@pytest.mark.slow
def test_missing_data_is_one_line_on_stderr(tmp_path: Path) -> None:
    result = run_train(
        f"data.root={tmp_path / 'nowhere'}", "data.download=false", "logger=none", cwd=tmp_path
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: cifar100 not found")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_cfg_job_prints_the_composed_config(tmp_path: Path) -> None:
    result = run_train("model=resnext50", "optim=adoptw", "--cfg", "job", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "name: resnext50_32x4d" in result.stdout and "opt: adoptw" in result.stdout


def test_resume_continues_the_wandb_run(train_cfg, tmp_path: Path) -> None:
    first_cfg = train_cfg(*TINY_CONVNET, "logger=wandb", "test=false")
    first = train(first_cfg)

    resumed_cfg = train_cfg(
        *TINY_CONVNET,
        "logger=wandb",
        "test=false",
        "trainer.max_epochs=2",
        f"ckpt_path={first['last_model_path']}",
        run="resumed",
    )
    resumed = train(resumed_cfg)

    assert first["wandb_id"] and resumed["wandb_id"] == first["wandb_id"]
    assert list((tmp_path / "resumed" / "wandb").glob(f"offline-run-*-{first['wandb_id']}"))


def test_resuming_with_another_model_is_one_clear_error(train_cfg, tiny_checkpoint: Path) -> None:
    other = ["model.widths=[8,8,16,16,32]", "model.head_hidden=16"]
    other_cfg = train_cfg(*other, f"ckpt_path={tiny_checkpoint}", run="other")

    # given on the command line, the other widths win over the checkpoint's config
    with pytest.raises(CifarLabError, match="holds another model than this config builds"):
        train(other_cfg, overrides=other)


@pytest.mark.slow
def test_a_bad_setting_caught_while_building_an_object_is_one_line(tmp_path: Path) -> None:
    result = run_train("data.batch_size=15", "+augment.mix={mixup_alpha: 1.0}", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: data.batch_size=15 is odd")
    assert "Traceback" not in result.stderr


def test_a_run_that_fails_early_still_writes_a_failed_metrics_json(train_cfg) -> None:
    cfg = train_cfg(*TINY_CONVNET, "data.batch_size=15", "+augment.mix={mixup_alpha: 1.0}")

    with pytest.raises(Exception, match="batch_size=15 is odd"):
        train(cfg)

    written = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert written["status"] == "failed"
    assert written["error"].startswith("CifarLabError: data.batch_size=15 is odd")


@pytest.mark.slow
def test_resume_without_overrides_rebuilds_the_run_and_keeps_its_best(
    cifar10_root: Path, tmp_path: Path
) -> None:
    short = ["trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "logger=csv"]
    first = run_train(
        "experiment=smoke",
        "data=cifar10",
        *tiny_data(cifar10_root, batch_size=16),
        *short,
        "trainer.max_epochs=1",
        "hydra.run.dir=first",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]

    # no experiment=smoke, no model or data keys but where the data is (this machine's
    # setting, never the checkpoint's): the checkpoint's config rebuilds the run
    resumed = run_train(
        "ckpt_path=first/checkpoints/last.ckpt",
        f"data.root={cifar10_root}",
        "data.download=false",
        "data.check_integrity=false",
        "trainer=cpu",
        *short,
        "trainer.limit_test_batches=2",
        "trainer.max_epochs=3",
        "hydra.run.dir=resumed",
        cwd=tmp_path,
    )

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    stored = read_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt").raw["cifar_lab"]
    assert stored["config"]["model"]["widths"] == [16, 32, 32, 64, 64]  # the smoke ConvNet
    assert stored["config"]["data"]["name"] == "cifar10" and metrics["epochs_completed"] == 3
    best = Path(metrics["best_model_path"])
    assert best == tmp_path / "resumed" / "checkpoints" / "best.ckpt" and best.is_file()
    assert metrics["best_model_score"] == metrics["val/acc_best"]
    assert f"best val/acc {metrics['val/acc_best']:.4f}" in resumed.stdout
    assert "test/acc" in metrics and f"{best}" in resumed.stdout  # tested on that file


@pytest.mark.slow
def test_a_finished_run_without_validation_in_its_last_epoch_exits_0(
    cifar100_root: Path, tmp_path: Path
) -> None:
    result = run_train(
        *tiny_data(cifar100_root),
        *TINY_CONVNET,
        "trainer=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.check_val_every_n_epoch=2",
        "logger=none",
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimized_metric='val/acc_best' was not logged" in result.stdout
    (metrics_file,) = tmp_path.glob("outputs/train/runs/*/metrics.json")
    assert json.loads(metrics_file.read_text())["status"] == "finished"
