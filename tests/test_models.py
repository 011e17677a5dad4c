"""Every model option builds, gives (N, C) logits, and loads pretrained weights the right way."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from hydra.utils import instantiate
from support import TINY_CONVNET, compose_train

from cifar_lab.errors import CifarLabError
from cifar_lab.models import create_convnet, create_timm_net
from cifar_lab.speed import split_model_config


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=convnet"],
        ["model=convnet", "model.act_layer=mish", "model.drop_block_rate=0.1"],
        ["model=resnet50", "model.act_layer=gelu"],
        ["model=resnet18"],
        ["model=resnext50", "model.cardinality=8", "model.base_width=4"],
        ["model=resnet101", "model.drop_block_rate=0.1", "model.act_layer=leaky_relu"],
        ["model=timm", "model.name=resnet18", "model.stem=cifar"],
        ["model=resnet50", "model.stem=imagenet", "model.act_layer=silu"],
    ],
)
def test_every_model_group_returns_logits(overrides: list[str]) -> None:
    factory, _ = split_model_config(compose_train(overrides).model)  # minus channels_last/compile
    net = instantiate(factory)
    net.eval()

    with torch.no_grad():
        logits = net(torch.randn(2, 3, 32, 32))

    assert logits.shape == (2, 100)
    assert torch.isfinite(logits).all()


def test_convnet_matches_the_reference_layout() -> None:
    net = create_convnet(num_classes=100)
    convs = [m for m in net.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.head if isinstance(m, torch.nn.Linear)]

    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 128, 128, 256, 256, 512, 512]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512, 128), (128, 100)]


def test_cifar_stem_keeps_the_resolution() -> None:
    net = create_timm_net("resnet50", stem="cifar")

    assert net.backbone.conv1.kernel_size == (3, 3) and net.backbone.conv1.stride == (1, 1)
    assert isinstance(net.backbone.maxpool, torch.nn.Identity)
    features = net.backbone.forward_features(torch.randn(1, 3, 32, 32))
    assert features.shape[-2:] == (4, 4)  # 32 / 8: three stride-2 stages, no stem downsampling


def test_resnext_cardinality_and_width_reach_timm() -> None:
    net = create_timm_net("resnext50_32x4d", cardinality=16, base_width=8)
    conv2 = net.backbone.layer1[0].conv2

    assert conv2.groups == 16 and conv2.in_channels == 16 * 8


def test_freeze_backbone_trains_only_the_head() -> None:
    cfg = compose_train(["model=convnet", *TINY_CONVNET, "model.freeze_backbone=true"])
    net = instantiate(split_model_config(cfg.model)[0])
    net.train()

    assert not any(p.requires_grad for p in net.backbone.parameters())
    assert all(p.requires_grad for p in net.head.parameters())
    assert not any(m.training for m in net.backbone.modules())  # BN statistics stay frozen


def _weights_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    state = timm.create_model("resnet50", num_classes=1000).state_dict()
    path = tmp_path / "resnet50.safetensors"
    safetensors.torch.save_file(state, str(path))
    return path, state


def test_pretrained_from_a_local_file_loads_its_weights(tmp_path: Path) -> None:
    path, state = _weights_file(tmp_path)

    net = create_timm_net("resnet50", pretrained=str(path), stem="imagenet")

    loaded = net.backbone.state_dict()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    assert torch.equal(loaded["layer4.2.conv3.weight"], state["layer4.2.conv3.weight"])
    assert "fc.weight" not in loaded  # the ImageNet classifier is replaced by our head


def test_pretrained_true_fetches_from_the_hub(tmp_path: Path, monkeypatch) -> None:
    path, state = _weights_file(tmp_path)
    asked: list[str] = []

    def fake_hf_hub_download(repo_id: str, filename: str, **kwargs) -> str:
        asked.append(f"{repo_id}/{filename}")
        return str(path)

    monkeypatch.setattr("timm.models._hub.hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr("cifar_lab.models.timm_net.hub_reachable", lambda: True)

    net = create_timm_net("resnet50", pretrained=True, stem="cifar")

    assert asked and asked[0].startswith("timm/resnet50")
    loaded = net.backbone.state_dict()
    assert torch.equal(loaded["layer1.0.conv1.weight"], state["layer1.0.conv1.weight"])
    assert loaded["conv1.weight"].shape == (64, 3, 3, 3)  # the new CIFAR stem


def test_pretrained_weights_offline_fail_at_once_in_one_line(monkeypatch) -> None:
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline_at_fetch: list[bool] = []

    def cache_only_fetch(repo_id: str, filename: str, **kwargs) -> str:
        offline_at_fetch.append(constants.HF_HUB_OFFLINE)
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache.\nmore")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr("cifar_lab.models.timm_net.hub_reachable", lambda: False)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", cache_only_fetch)

    with pytest.raises(CifarLabError) as err:
        create_timm_net("resnet50", pretrained=True)

    assert offline_at_fetch and all(offline_at_fetch)  # the cache only: no retries
    message = str(err.value)
    assert "model.pretrained=false" in message and "weights file" in message
    assert "\n" not in message


def test_pretrained_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CifarLabError, match="missing.pth"):
        create_timm_net("resnet50", pretrained=str(tmp_path / "missing.pth"))


def test_unknown_timm_name_and_stem_are_errors() -> None:
    with pytest.raises(CifarLabError, match="resnet5O"):
        create_timm_net("resnet5O")
    with pytest.raises(CifarLabError, match="stem='cifar10'"):
        create_timm_net("resnet18", stem="cifar10")


def test_generic_timm_needs_a_name_and_takes_tagged_names() -> None:
    name = compose_train(["model=timm"]).model.name
    with pytest.raises(CifarLabError, match="model.name=<timm model>"):
        create_timm_net(name)

    net = create_timm_net("resnet18.a1_in1k", stem="imagenet")

    assert net.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 100)


def test_a_linear_probe_on_a_new_cifar_stem_is_refused() -> None:
    with pytest.raises(CifarLabError, match="model.stem=imagenet"):
        create_timm_net("resnet18", stem="cifar", freeze_backbone=True)
