"""The checkpoint format of cifar-lab and how it is read: one home for both.

A Lightning checkpoint plus two entries of ours: `cifar_lab` (a `CheckpointPayload`: version,
the resolved run config, wandb run id, number of classes) so `predict` can rebuild the model
from the file alone, and `rng_states`, which Lightning does not save, so a resumed run draws the
same augmentations and dropout masks as an uninterrupted one. Everything in it is tensors,
numbers, strings and containers, which `torch.load(weights_only=True)` reads without running
pickled code.

Checkpoints are shared files, so reading one trusts nothing: the zip archive `torch.save`
writes is CRC-checked first (a flipped bit in the weights would otherwise load and score
silently), then its structure is checked, and every failure is one `CifarLabError` line.
"""

from __future__ import annotations

import random
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cifar_lab.errors import CifarLabError

CHECKPOINT_KEY = "cifar_lab"
RNG_KEY = "rng_states"
NET_PREFIX = "net."  # the LightningModule holds the network as `self.net`


@dataclass(frozen=True)
class CheckpointPayload:
    """What cifar-lab adds to each checkpoint under `CHECKPOINT_KEY`."""

    version: str
    num_classes: int
    config: dict[str, Any] = field(default_factory=dict)
    wandb_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], path: str | Path) -> CheckpointPayload:
        raw = checkpoint.get(CHECKPOINT_KEY)
        try:
            stored = cls(
                version=str(raw["version"]),
                num_classes=int(raw["num_classes"]),
                config=dict(raw.get("config") or {}),
                wandb_id=raw.get("wandb_id"),
            )
            if stored.num_classes < 1 or not all(isinstance(k, str) for k in stored.config):
                raise ValueError(
                    f"num_classes={stored.num_classes}, config keys {list(stored.config)}"
                )
            if stored.wandb_id is not None and not isinstance(stored.wandb_id, str):
                raise TypeError(f"wandb_id={stored.wandb_id!r}")
            return stored
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            raise CifarLabError(
                f"{path} has a damaged '{CHECKPOINT_KEY}' entry ({type(err).__name__}: {err}); "
                f"expected a .ckpt written by cifar_lab.train"
            ) from err


# --- random-number generators ------------------------------------------------------------
def collect_rng_states() -> dict[str, Any]:
    """torch, numpy, Python (and CUDA) generator states as tensors and plain containers."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    try:
        torch.set_rng_state(states["torch"])
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        raise CifarLabError(
            f"the checkpoint's '{RNG_KEY}' entry is damaged ({type(err).__name__}: {err}); "
            f"resume from a last.ckpt/best.ckpt written by cifar_lab.train"
        ) from err
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# --- reading ------------------------------------------------------------------------------
def _unreadable(path: Path, why: str) -> CifarLabError:
    return CifarLabError(
        f"{path} is not a readable PyTorch checkpoint ({why}); expected a .ckpt written by "
        f"cifar_lab.train: copy it again or use another one"
    )


def verify_archive(path: Path) -> None:
    """Raise a one-line error unless `path` is a complete zip archive (what `torch.save` writes)
    whose every entry passes its CRC-32 check: a truncated, emptied or bit-flipped file."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    # Everything is caught on purpose: the file is untrusted, and a damaged archive fails in
    # many ways (BadZipFile, EOFError, NotImplementedError, ValueError, zlib.error, ...).
    except Exception as err:
        why = (str(err).splitlines() or [""])[0][:200]
        raise _unreadable(path, f"not a complete zip archive: {type(err).__name__}: {why}") from err
    if damaged is not None:
        raise CifarLabError(
            f"{path} is damaged: its entry {damaged!r} fails the zip CRC check (a changed or "
            f"flipped byte); copy the checkpoint again or use another one"
        )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A cifar-lab checkpoint as a dict, on the CPU, without running pickled code; its archive
    CRC-checked and its structure checked, so damage is one line and never a silent score."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) or sorted(path.glob("checkpoints/*.ckpt"))
        example = next((p for p in found if p.name == "best.ckpt"), found[0] if found else None)
        raise CifarLabError(
            f"checkpoint {path} is a folder; give a .ckpt file in it"
            + (
                f", e.g. {example}"
                if example
                else " (it holds none: a run folder keeps them "
                "in checkpoints/best.ckpt and checkpoints/last.ckpt)"
            )
        )
    if not path.is_file():
        raise CifarLabError(
            f"checkpoint {path} does not exist; give the path of a best.ckpt/last.ckpt under "
            f"outputs/<run>/checkpoints/"
        )
    verify_archive(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    # As above: a crafted archive can make torch.load raise nearly anything; weights_only
    # refuses (UnpicklingError) whatever is not tensors, numbers, strings and containers.
    except Exception as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise _unreadable(path, first_line) from err
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CifarLabError(
            f"{path} is a PyTorch file but not a cifar-lab checkpoint (no '{CHECKPOINT_KEY}' "
            f"entry); expected a .ckpt written by cifar_lab.train"
        )
    weights = checkpoint.get("state_dict")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CifarLabError(
            f"{path} holds no 'state_dict' of weights; expected a .ckpt written by cifar_lab.train"
        )
    CheckpointPayload.from_checkpoint(checkpoint, path)  # fails early on a damaged entry
    return checkpoint


LAST = "last.ckpt"


def resolve_ckpt_path(value: str | Path | None, run_dir: str | Path) -> Path | None:
    """`ckpt_path` as a file: `auto` = `<run_dir>/checkpoints/last.ckpt`, a folder = the newest
    last.ckpt under it; None (start afresh) when there is none yet, so a requeued job can keep
    one command line from its first start on."""
    if value is None or value == "":
        return None
    if value == "auto":
        candidate = Path(run_dir) / "checkpoints" / LAST
        return candidate if candidate.is_file() else None
    path = Path(value).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob(LAST) if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
    return path  # load_checkpoint reports a missing file


# What Lightning reads to resume a fit (and we add RNG_KEY): a hand-made or stripped
# checkpoint without them would fail deep inside Lightning with a KeyError.
RESUME_KEYS = ("epoch", "global_step", "loops", "optimizer_states", "lr_schedulers", RNG_KEY)


def check_resumable(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line error if `checkpoint` lacks what resuming training from it needs."""
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise CifarLabError(
            f"{path} cannot resume training: it lacks {missing} (a weights-only or hand-made "
            f"checkpoint); resume from a last.ckpt/best.ckpt written by cifar_lab.train, or "
            f"start a new run"
        )


def payload(checkpoint: dict[str, Any], path: str | Path = "checkpoint") -> CheckpointPayload:
    return CheckpointPayload.from_checkpoint(checkpoint, path)


def net_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's own weights: the `net.` entries of the module's state dict, unprefixed."""
    return {
        key.removeprefix(NET_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(NET_PREFIX)
    }


def check_weights_fit(net: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line error when the checkpoint's network weights are not those of `net`'s
    layout (another backbone, width or number of classes), before torch's long key dump."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in net_weights(checkpoint).items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    if not (missing or unexpected or reshaped):
        return
    stored = payload(checkpoint, path)
    trained = stored.config.get("model", {})
    detail = "; ".join(
        f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("other shape", reshaped),
        )
        if keys
    )
    raise CifarLabError(
        f"checkpoint {path} holds another model than this config builds ({detail}); it was "
        f"trained with model={trained.get('name', trained.get('_target_'))} "
        f"num_classes={stored.num_classes}: use the same model and data overrides as that run"
    )


def load_net_weights(net: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Put the checkpoint's network weights into `net`, after the compatibility check."""
    check_weights_fit(net, checkpoint, path)
    net.load_state_dict(net_weights(checkpoint))
