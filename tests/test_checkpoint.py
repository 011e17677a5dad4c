"""Reading checkpoints: every damaged, emptied, cut or hand-made file is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from checkpoint_files import flip_bit, largest_tensor_entry

from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.runs.rng import RNG_KEY, set_rng_states


def test_a_real_checkpoint_passes_every_check(tiny_checkpoint: Path) -> None:
    checkpoint = read_checkpoint(tiny_checkpoint)

    checkpoint.check_resumable()
    assert checkpoint.num_classes == 100 and checkpoint.raw["cifar_lab"]["num_classes"] == 100


def test_a_bit_flipped_weight_is_refused_not_scored(tiny_checkpoint: Path, tmp_path: Path) -> None:
    offset, size = largest_tensor_entry(tiny_checkpoint)
    flipped = flip_bit(tiny_checkpoint, tmp_path / "flipped.ckpt", offset + size // 2)
    assert flipped.stat().st_size == tiny_checkpoint.stat().st_size
    # without the CRC check torch.load reads it: the damage would be silent
    torch.load(flipped, weights_only=True)

    with pytest.raises(
        CifarLabError, match=r"is damaged: its entry .*/data/\d+' fails the zip CRC"
    ):
        read_checkpoint(flipped)


@pytest.mark.parametrize("keep", [0, 100, 0.5, -1], ids=["empty", "header", "half", "all-but-1"])
def test_an_empty_or_cut_checkpoint_is_one_line(tiny_checkpoint, tmp_path, keep) -> None:
    data = tiny_checkpoint.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])

    with pytest.raises(CifarLabError, match="not a readable PyTorch checkpoint") as err:
        read_checkpoint(cut)
    assert "\n" not in str(err.value)


def test_a_hand_made_checkpoint_without_training_state_cannot_resume(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    checkpoint = read_checkpoint(tiny_checkpoint).raw
    stripped = {k: checkpoint[k] for k in ("state_dict", "cifar_lab")}
    path = tmp_path / "weights_only.ckpt"
    torch.save(stripped, path)

    read_checkpoint(path)  # enough to score
    with pytest.raises(CifarLabError, match=r"cannot resume training: it lacks \['epoch'"):
        read_checkpoint(path).check_resumable()


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: c["cifar_lab"].pop("num_classes"),
        lambda c: c["cifar_lab"].update(num_classes="many"),
        lambda c: c["cifar_lab"].update(num_classes=0),
        lambda c: c["cifar_lab"].update(config=[1, 2]),
        lambda c: c.update(state_dict={"net.w": "not a tensor"}),
        lambda c: c.update(cifar_lab="text"),
    ],
    ids=["no-classes", "text-classes", "zero-classes", "list-config", "text-weights", "text"],
)
def test_a_hand_edited_checkpoint_is_one_line(tiny_checkpoint, tmp_path, damage) -> None:
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    damage(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)

    with pytest.raises(CifarLabError, match=str(path)):
        read_checkpoint(path)


def test_damaged_rng_states_are_one_line(tiny_checkpoint: Path) -> None:
    states = read_checkpoint(tiny_checkpoint).raw[RNG_KEY]

    with pytest.raises(CifarLabError, match="'rng_states' entry is damaged"):
        set_rng_states({**states, "numpy": ["MT19937"]})
