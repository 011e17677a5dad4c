"""Test-time augmentation: view counts from the configs, views that really flip and shift,
one batched forward, and the averaged softmax in the LightningModule's predict_step."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from support import compose_config
from torch import nn

from cifar_lab.errors import CifarLabError
from cifar_lab.models.classifier import CIFARClassifier
from cifar_lab.models.tta import TestTimeAugmentation, shift

SIZE = 32


def tta_from_config(name: str, *overrides: str) -> TestTimeAugmentation:
    cfg = compose_config("predict", [f"tta={name}", *overrides])
    return instantiate(cfg.tta)


def coded_images(batch: int = 2) -> torch.Tensor:
    """Channel 0 holds the pixel's own position code i * 32 + j (plus 10000 * image index)."""
    rows, cols = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    code = (rows * SIZE + cols).float()
    images = torch.zeros(batch, 3, SIZE, SIZE)
    for b in range(batch):
        images[b, 0] = code + 10000 * b
    return images


class PixelReader(nn.Module):
    """Predicts the class written at one pixel: logits are a scaled one-hot of its value."""

    def __init__(self, num_classes: int, row: int = 16, col: int = 16):
        super().__init__()
        self.num_classes, self.row, self.col = num_classes, row, col
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        value = x[:, 0, self.row, self.col].round().long() % self.num_classes
        return nn.functional.one_hot(value, self.num_classes).float() * 50


@pytest.mark.parametrize(
    ("name", "overrides", "views"),
    [
        ("none", [], 1),
        ("flip", [], 2),
        ("shift", [], 16),
        ("shift", ["tta.include_identity=true"], 17),
        ("shift", ["tta.pattern=neumann"], 8),
        ("shift", ["tta.distances=[1]"], 8),
        ("flip_shift", [], 32),
        ("flip", ["tta.include_identity=true"], 2),
    ],
)
def test_config_gives_the_documented_number_of_views(name, overrides, views):
    tta = tta_from_config(name, *overrides)

    assert tta.num_views == views
    assert tta.views(coded_images(3)).shape == (views * 3, 3, SIZE, SIZE)


def test_moore_shift_views_are_the_8_neighbours_at_distances_1_and_2():
    tta = tta_from_config("shift")

    offsets = {offset for flip, offset in tta.view_specs}
    expected = {(d * dy, d * dx) for d in (1, 2) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert offsets == expected - {(0, 0)}
    assert not any(flip for flip, _ in tta.view_specs)


@pytest.mark.parametrize("padding", ["reflect", "zeros", "roll"])
def test_each_shift_view_moves_the_image_by_its_offset(padding):
    tta = tta_from_config("flip_shift", f"tta.padding={padding}")
    images = coded_images(2)

    views = tta.views(images).view(tta.num_views, 2, 3, SIZE, SIZE)

    for v, (flip, (dy, dx)) in enumerate(tta.view_specs):
        for b in range(2):
            source_col = 16 - dx if not flip else SIZE - 1 - (16 - dx)
            expected = images[b, 0, 16 - dy, source_col]
            assert views[v, b, 0, 16, 16] == expected, (flip, dy, dx, b)


def test_padding_decides_what_enters_at_the_border():
    images = coded_images(1)

    rolled = shift(images, 1, 1, "roll")[0, 0, 0, 0]
    reflected = shift(images, 1, 1, "reflect")[0, 0, 0, 0]
    zeroed = shift(images, 1, 1, "zeros")[0, 0, 0, 0]

    assert rolled == images[0, 0, SIZE - 1, SIZE - 1]  # wraps around
    assert reflected == images[0, 0, 1, 1]  # mirrored without repeating the edge
    assert zeroed == 0


def test_tta_is_one_forward_of_the_batch_per_view():
    """A view costs what an image does: 16 passes of the 4 images, not one of 64 (which ran
    1.3-1.5x slower per image on a CPU, `bench=predict`'s tta_overhead)."""
    tta = tta_from_config("shift")
    model = PixelReader(num_classes=2048)

    tta(model, coded_images(4))

    assert model.calls == [4] * 16


def test_prediction_is_the_mean_of_the_view_softmaxes():
    tta = tta_from_config("flip_shift", "tta.include_identity=true")
    model = PixelReader(num_classes=2048)
    images = coded_images(2)

    probs = tta(model, images)

    views = tta.views(images).view(tta.num_views, 2, 3, SIZE, SIZE)
    expected = torch.stack([model(v).softmax(dim=1) for v in views]).mean(dim=0)
    torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))


def test_predict_step_applies_the_modules_tta_and_leaves_its_weights_alone():
    net = PixelReader(num_classes=2048)
    plain = CIFARClassifier(net=net, optimizer=torch.optim.SGD, num_classes=2048)
    with_tta = CIFARClassifier(
        net=net, optimizer=torch.optim.SGD, num_classes=2048, tta=tta_from_config("shift")
    )
    images = coded_images(2)

    plain_probs = plain.predict_step((images, torch.zeros(2)), 0)
    tta_probs = with_tta.predict_step((images, torch.zeros(2)), 0)

    assert plain_probs.argmax(dim=1).tolist() == [16 * SIZE + 16, (10000 + 16 * SIZE + 16) % 2048]
    assert tta_probs.max() == pytest.approx(1 / 16, rel=1e-3)
    assert plain.state_dict().keys() == with_tta.state_dict().keys()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pattern": "hexagon", "distances": [1]}, "tta.pattern='hexagon' is unknown"),
        ({"pattern": "moore", "distances": [0]}, r"tta.distances=\[0\] is invalid"),
        ({"pattern": "moore", "distances": []}, r"tta.distances=\[\] is invalid"),
        ({"padding": "wrap"}, "tta.padding='wrap' is unknown"),
    ],
)
def test_bad_tta_settings_name_the_value_and_the_choices(kwargs, message):
    with pytest.raises(CifarLabError, match=message):
        TestTimeAugmentation(**kwargs)
