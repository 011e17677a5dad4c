"""Training recipes of issue 11: EMA of the weights, Muon, policy augmentations, random erasing,
the device-resident batched path on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf, open_dict
from support import TINY_CONVNET, compose_train, metrics_of, tiny_data
from torchvision.transforms import v2

from cifar_lab.build import build_datamodule, build_module
from cifar_lab.data import CIFARDataModule
from cifar_lab.data.albumentations_steps import TorchvisionPolicy
from cifar_lab.data.batched_augment import build_batched_train
from cifar_lab.data.transforms import build_train_transform, build_transforms
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import net_weights, read_checkpoint
from cifar_lab.train import train
from cifar_lab.training.ema import WarmupDecay

UNIT = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # identity normalisation: outputs on the 0-1 scale

NO_WARMUP_EMA = ["callbacks=ema", "callbacks.ema.warmup_power=null"]


def trained(train_cfg, name: str, *overrides: str) -> dict:
    return train(train_cfg(*TINY_CONVNET, "optim.scheduler.warmup_epochs=0", *overrides, run=name))


def assert_same_weights(found: dict, expected: dict) -> None:
    assert found.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(found[key], tensor, msg=key)


def test_best_ckpt_validation_and_test_hold_the_average(train_cfg) -> None:
    """decay=1 keeps the average at the weights after the first step (its first update copies
    them): best.ckpt, val/acc and test/acc must be those of a run stopped after one step."""
    averaged = trained(train_cfg, "ema", *NO_WARMUP_EMA, "callbacks.ema.decay=1.0")
    one_step = trained(train_cfg, "one", "trainer.limit_train_batches=1")
    three_steps = trained(train_cfg, "three")

    best = read_checkpoint(averaged["best_model_path"])
    after_one_step = read_checkpoint(one_step["last_model_path"])
    assert_same_weights(best.net_weights(), after_one_step.net_weights())
    training_weights = net_weights(best.raw["current_model_state"])
    assert_same_weights(
        training_weights, read_checkpoint(three_steps["last_model_path"]).net_weights()
    )
    assert averaged["val/acc"] == one_step["val/acc"]
    assert averaged["test/acc"] == one_step["test/acc"]
    assert averaged["test/loss"] == pytest.approx(float(one_step["test/loss"]))


def test_the_warm_up_decay_follows_timm_model_ema_v3() -> None:
    average, current = torch.zeros(3), torch.ones(3)
    warm = WarmupDecay(decay=0.999, gamma=1.0, power=0.75)
    plain = WarmupDecay(decay=0.9, power=None)

    early = warm(average, current, torch.tensor(1))
    late = warm(average, current, torch.tensor(10**9))

    torch.testing.assert_close(early, torch.full((3,), 2**-0.75))  # 1 - decay_1 = 2^-0.75
    torch.testing.assert_close(late, torch.full((3,), 0.001))  # capped at decay
    torch.testing.assert_close(plain(average, current, torch.tensor(5)), torch.full((3,), 0.1))


# --- each recipe end to end ----------------------------------------------------------------
@pytest.mark.parametrize(
    "recipe",
    [
        ["callbacks=ema"],
        ["optim=muon"],
        ["augment=randaugment"],
        ["augment=trivialaugment"],
        ["augment.random_erasing.p=0.25"],
        ["augment=augmix", "loss=jsd", "loss.label_smoothing=0.1"],
    ],
    ids=["ema", "muon", "randaugment", "trivialaugment", "random_erasing", "augmix_jsd"],
)
def test_each_recipe_trains_and_leaves_its_best_checkpoint(train_cfg, recipe: list[str]) -> None:
    """In-process: the command line itself is checked once, by test_train's smoke run."""
    cfg = train_cfg("experiment=smoke", *TINY_CONVNET, "trainer.limit_train_batches=2", *recipe)

    train(cfg)

    metrics = metrics_of(Path(cfg.paths.output_dir))
    assert metrics["status"] == "finished" and 0.0 <= metrics["test/acc"] <= 1.0
    assert Path(metrics["best_model_path"]).is_file()


# --- EMA, Muon -------------------------------------------------------------------------------
def test_muon_orthogonalises_the_weight_matrices_and_falls_back_for_the_rest(train_cfg) -> None:
    module = build_module(train_cfg(*TINY_CONVNET, "optim=muon"))

    optimizer = module.optimizer_factory(module.net)

    names = {id(p): name for name, p in module.net.named_parameters()}
    muon = {names[id(p)] for g in optimizer.param_groups if not g.get("use_fallback")
            for p in g["params"] if p.ndim >= 2}  # fmt: skip
    fallback = set(names.values()) - muon
    assert type(optimizer).__name__ == "Muon"
    assert muon == {n for n, p in module.net.backbone.named_parameters(prefix="backbone")
                    if p.ndim == 4}  # fmt: skip
    assert {"head.0.weight", "head.3.weight", "head.3.bias"} <= fallback
    assert all(p.ndim == 1 for name, p in module.net.named_parameters()
               if name in fallback and name.startswith("backbone"))  # fmt: skip


def test_the_muon_speedrun_is_the_speedrun_with_muon() -> None:
    speedrun = compose_train(["experiment=speedrun"])
    muon = compose_train(["experiment=speedrun_muon"])

    assert muon.optim.optimizer.opt == "muon" and speedrun.optim.optimizer.opt == "sgd"
    assert muon.model == speedrun.model and muon.augment == speedrun.augment
    assert muon.trainer == speedrun.trainer


# --- policy augmentations and random erasing -------------------------------------------------
def augment_config(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_train(list(overrides)).augment, resolve=True)


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "augmix"])
def test_the_batched_backend_refuses_policies_in_one_line_naming_albumentations(name) -> None:
    with pytest.raises(CifarLabError, match=f"augment.{name} .*augment.backend=albumentations"):
        build_batched_train(augment_config(f"augment={name}"), 32, *UNIT)


def test_augmix_uses_the_papers_operation_set() -> None:
    transforms = build_transforms(augment_config("augment=augmix"), "cifar10", 32)

    (policy,) = [s for s in transforms.train.transforms if isinstance(s, TorchvisionPolicy)]
    assert isinstance(policy.policy, v2.AugMix) and policy.policy.all_ops is False


@pytest.mark.parametrize("name", ["randaugment", "trivialaugment", "augmix"])
def test_a_policy_changes_uint8_images_per_image(name) -> None:
    transform = build_train_transform(augment_config(f"augment={name}", "augment.crop=null",
                                                     "augment.hflip=null"), 32, *UNIT)  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    outputs = torch.stack([transform(image=image)["image"] for _ in range(8)])

    assert outputs.shape == (8, 3, 32, 32) and outputs.dtype == torch.float32
    assert len({out.numpy().tobytes() for out in outputs}) > 1  # drawn per image
    assert (outputs * 255 - outputs.mul(255).round()).abs().max() < 1e-3  # still uint8 levels


def test_random_erasing_runs_after_normalisation_per_image_in_both_backends() -> None:
    config = augment_config("augment=none", "augment.random_erasing.p=0.5")
    grey = np.full((32, 32, 3), 128, dtype=np.uint8)
    transform = build_train_transform(config, 32, (0.5, 0.5, 0.5), (0.1, 0.1, 0.1))
    batched = build_batched_train(config, 32, (0.5, 0.5, 0.5), (0.1, 0.1, 0.1))

    per_image = torch.stack([transform(image=grey)["image"] for _ in range(64)])
    batch = batched(torch.full((64, 3, 32, 32), 128, dtype=torch.uint8))

    clean_value = (128 / 255 - 0.5) / 0.1
    for out in (per_image, batch):
        erased = (out - clean_value).abs().amax(dim=(1, 2, 3)) > 1e-3
        assert 0.25 < erased.float().mean() < 0.75  # p=0.5, each image on its own
        assert (out[erased] - clean_value).abs().max() > 1.0  # normal noise, normalised scale


def test_unknown_batched_on_names_the_choices(cifar100_root: Path) -> None:
    with pytest.raises(CifarLabError, match=r"augment.batched_on='gpu'.*auto.*device.*workers"):
        CIFARDataModule(root=str(cifar100_root), augment={"batched_on": "gpu"})


def test_on_device_the_loader_serves_uint8_without_workers(cifar100_root: Path) -> None:
    cfg = compose_train([*tiny_data(cifar100_root, workers=1), "augment.backend=batched",
                         "augment.batched_on=device"])  # fmt: skip
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")

    loader = datamodule.train_dataloader()
    images, _ = next(iter(loader))

    assert loader.num_workers == 0 and images.dtype == torch.uint8
    assert datamodule.input.on_device


# --- AugMix + JSD ----------------------------------------------------------------------------
def test_jsd_batches_hold_the_clean_view_and_two_augmented_views(cifar100_root: Path) -> None:
    cfg = compose_train([*tiny_data(cifar100_root), "augment=augmix", "loss=jsd"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")

    images, labels = next(iter(datamodule.train_dataloader()))

    assert images.shape == (16, 3, 3, 32, 32) and labels.shape == (16,)
    assert not torch.equal(images[:, 1], images[:, 2])  # two independent AugMix views
    assert not torch.equal(images[:, 0], images[:, 1])


def test_jsd_counts_each_image_once_and_composes_with_label_smoothing(train_cfg) -> None:
    cfg = train_cfg(*TINY_CONVNET, "augment=augmix", "loss=jsd", "loss.label_smoothing=0.1",
                    "model.drop_rate=0", "model.block_drop_rate=0")  # fmt: skip
    module = build_module(cfg).eval()  # eval: the same BatchNorm output for each view alone
    images = torch.randn(4, 3, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3])

    loss, logits = module.training_loss(images, labels)

    probs = [module(images[:, v]).softmax(dim=1) for v in range(3)]
    mixture = torch.stack(probs).mean(dim=0).clamp(1e-7, 1).log()
    js = sum(F.kl_div(mixture, p, reduction="batchmean") for p in probs) / 3
    smoothed = F.cross_entropy(module(images[:, 0]), labels, label_smoothing=0.1)
    torch.testing.assert_close(logits, module(images[:, 0]))  # one row per image: the clean view
    torch.testing.assert_close(loss, smoothed + 12.0 * js)


def test_jsd_with_cutmix_or_mixup_is_refused_in_one_line(train_cfg) -> None:
    cfg = train_cfg(*TINY_CONVNET, "augment=augmix", "loss=jsd",
                    "+augment.mix={mixup_alpha: 0.8, cutmix_alpha: 1.0}")  # fmt: skip

    with pytest.raises(CifarLabError, match=r"^loss=jsd .* CutMix/MixUp; set augment.mix=null$"):
        build_module(cfg)


def test_jsd_refuses_the_batched_backend_and_plain_augment(cifar100_root: Path) -> None:
    batched = compose_train([*tiny_data(cifar100_root), "augment=augmix", "loss=jsd",
                             "augment.backend=batched"])  # fmt: skip
    plain = compose_train([*tiny_data(cifar100_root), "augment=basic", "loss=jsd"])

    with pytest.raises(CifarLabError, match="augment.backend=albumentations"):
        build_datamodule(batched).setup("fit")
    with pytest.raises(Exception, match="no augmentation beyond crop and flip"):
        build_datamodule(plain)  # raised inside Hydra's instantiate, which wraps it


def test_the_plain_loop_benchmark_trains_jsd_on_three_views(train_cfg) -> None:
    from cifar_lab.benchmarks.train import memory_batches, plain_step

    cfg = train_cfg(*TINY_CONVNET, "augment=augmix", "loss=jsd")
    with open_dict(cfg):
        cfg.bench = {"warmup": 1, "repeats": 1, "train": {"steps": 1}}
    module = build_module(cfg)

    (batch,) = memory_batches(cfg, torch.device("cpu"), count=1)

    assert batch[0].shape == (16, 3, 3, 32, 32)
    assert plain_step(module, cfg, torch.device("cpu"))(batch) == 16
