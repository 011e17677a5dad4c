"""The checkpoint format of cifar-lab and how it is read: one home for both.

A Lightning checkpoint plus two entries of ours: `cifar_lab` (a `CheckpointPayload`: version,
the resolved run config, wandb run id, number of classes) so `predict` can rebuild the model
from the file alone, and `rng_states` (`runs.rng`), which Lightning does not save, so a resumed
run draws the same augmentations and dropout masks as an uninterrupted one. Everything in it is
tensors, numbers, strings and containers, which `torch.load(weights_only=True)` reads without
running pickled code.

Checkpoints are shared files, so reading one trusts nothing: the zip archive `torch.save`
writes is CRC-checked first (a flipped bit in the weights would otherwise load and score
silently), then its structure is checked, and every failure is one `CifarLabError` line.
`read_checkpoint` is the only place the package calls `torch.load`; what it returns is a typed
`RunCheckpoint`, so no caller parses the raw dict again.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cifar_lab import __version__
from cifar_lab.errors import CifarLabError
from cifar_lab.runs.rng import RNG_KEY, collect_rng_states

CHECKPOINT_KEY = "cifar_lab"
NET_PREFIX = "net."  # the LightningModule holds the network as `self.net`
# Where a run keeps its checkpoints, and their names (conf/callbacks/*.yaml use the stems).
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"
BEST = "best.ckpt"
# What Lightning reads to resume a fit (and we add RNG_KEY): a hand-made or stripped
# checkpoint without them would fail deep inside Lightning with a KeyError.
RESUME_KEYS = ("epoch", "global_step", "loops", "optimizer_states", "lr_schedulers", RNG_KEY)


def net_weights(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's own weights: the `net.` entries of a module's state dict, unprefixed."""
    return {
        key.removeprefix(NET_PREFIX): value
        for key, value in state_dict.items()
        if key.startswith(NET_PREFIX)
    }


def last_checkpoint(run_dir: str | Path) -> Path:
    """The every-epoch checkpoint of the run in `run_dir` (resume from it)."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST


def best_checkpoint(run_dir: str | Path) -> Path:
    """The best-epoch checkpoint of the run in `run_dir` (score it)."""
    return Path(run_dir) / CHECKPOINT_DIR / BEST


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
    def from_checkpoint(cls, checkpoint: Mapping[str, Any], path: str | Path) -> CheckpointPayload:
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


def stamp_checkpoint(
    checkpoint: dict[str, Any], num_classes: int, config: dict[str, Any], wandb_id: str | None
) -> None:
    """Add cifar-lab's entries to a checkpoint Lightning is about to save."""
    checkpoint[CHECKPOINT_KEY] = CheckpointPayload(
        version=__version__, num_classes=num_classes, config=config, wandb_id=wandb_id
    ).to_dict()
    checkpoint[RNG_KEY] = collect_rng_states()


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint read and checked once: its file, cifar-lab's payload and the raw dict
    (weights, and the training state Lightning resumes from)."""

    path: Path
    payload: CheckpointPayload
    raw: dict[str, Any] = field(repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """The resolved run config stored at training time (untrusted: see `runs.rebuild`)."""
        return self.payload.config

    @property
    def num_classes(self) -> int:
        return self.payload.num_classes

    @property
    def wandb_id(self) -> str | None:
        return self.payload.wandb_id

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.raw["state_dict"]

    def net_weights(self) -> dict[str, torch.Tensor]:
        return net_weights(self.state_dict)

    def check_resumable(self) -> None:
        """Raise a one-line error unless the training state Lightning resumes from is there
        and has the structure Lightning expects (a crafted one would fail deep inside it)."""
        missing = [key for key in RESUME_KEYS if key not in self.raw]
        if missing:
            raise CifarLabError(
                f"{self.path} cannot resume training: it lacks {missing} (a weights-only or "
                f"hand-made checkpoint); resume from a last.ckpt/best.ckpt written by "
                f"cifar_lab.train, or start a new run"
            )
        problem = resume_state_problem(self.raw)
        if problem:
            raise CifarLabError(
                f"{self.path} cannot resume training: its training state is damaged ({problem}); "
                f"resume from a last.ckpt written by cifar_lab.train, or start a new run"
            )

    def check_weights_fit(self, net: nn.Module) -> None:
        """Raise a one-line error when the network weights are not those of `net`'s layout
        (another backbone, width or number of classes), before torch's long key dump; and when
        any weight is NaN or infinite (a diverged run scores like a random one)."""
        expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        weights = self.net_weights()
        found = {k: tuple(v.shape) for k, v in weights.items()}
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        reshaped = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        if missing or unexpected or reshaped:
            detail = "; ".join(
                f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("other shape", reshaped),
                )
                if keys
            )
            trained = self.config.get("model", {})
            trained = trained if isinstance(trained, Mapping) else {}
            raise CifarLabError(
                f"checkpoint {self.path} holds another model than this config builds ({detail}); "
                f"it was trained with model={trained.get('name', trained.get('_target_'))} "
                f"num_classes={self.num_classes}: use the same model and data overrides as that run"
            )
        broken = [
            key
            for key, value in weights.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        ]
        if broken:
            raise CifarLabError(
                f"checkpoint {self.path} has NaN or infinite weights in {broken[:3]}"
                f"{' ...' if len(broken) > 3 else ''} (the run diverged); score an earlier "
                f"checkpoint of it, or train again with a lower optim.optimizer.lr"
            )

    def load_net_weights(self, net: nn.Module) -> None:
        """Put the network weights into `net`, after the compatibility check."""
        self.check_weights_fit(net)
        net.load_state_dict(self.net_weights())


# More epochs or steps than any run takes; torch.tensor() of a count beyond int64 overflows.
MAX_COUNT = 2**53
# Where Lightning's loop state keeps the epoch and step counts that `epoch`/`global_step` repeat.
EPOCHS_DONE = ("epoch_progress", "current", "completed")
STEPS_DONE = ("epoch_loop.automatic_optimization.optim_progress", "optimizer", "step", "total",
              "completed")  # fmt: skip


def shown(value: Any, limit: int = 60) -> str:
    """`value` as an error message shows it: one line, cut at `limit` characters; a tensor by its
    shape and dtype (its repr spans lines)."""
    if isinstance(value, torch.Tensor):
        return f"tensor{list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def stored_count(loop: Any, keys: tuple[str, ...]) -> Any:
    """The value at `keys` in a stored loop state, or None where the path is not there."""
    for key in keys:
        loop = loop.get(key) if isinstance(loop, Mapping) else None
    return loop


def resume_state_problem(raw: Mapping[str, Any]) -> str | None:
    """What is wrong with the shape of the training state Lightning reads to resume, or None
    (`runs.resume_state` then checks it against this run's own objects)."""
    for key in ("epoch", "global_step"):
        value = raw[key]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_COUNT:
            return f"{key}={shown(value)}, expected an integer in [0, {MAX_COUNT}]"
    if not isinstance(raw["loops"], Mapping) or not all(
        isinstance(v, Mapping) for v in raw["loops"].values()
    ):
        return f"loops is a {type(raw['loops']).__name__}, expected a mapping of loop states"
    fit_loop = raw["loops"].get("fit_loop")
    for key, path in (("epoch", EPOCHS_DONE), ("global_step", STEPS_DONE)):
        counted = stored_count(fit_loop, path)  # None in another Lightning version's layout
        if counted is not None and counted != raw[key]:
            return f"{key}={raw[key]} but its fit loop counts {shown(counted)}"
    for key in ("optimizer_states", "lr_schedulers"):
        states = raw[key]
        if not isinstance(states, list) or not all(isinstance(s, Mapping) for s in states):
            return f"{key} is a {type(states).__name__}, expected a list of state mappings"
    for i, state in enumerate(raw["optimizer_states"]):
        groups = state.get("param_groups")
        if not isinstance(state.get("state"), Mapping) or not isinstance(groups, list):
            return f"optimizer_states[{i}] lacks its 'state' mapping or 'param_groups' list"
        if not all(isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in groups):
            return f"optimizer_states[{i}].param_groups holds a group without a 'params' list"
    callbacks = raw.get("callbacks", {})
    if not isinstance(callbacks, Mapping) or not all(
        isinstance(v, Mapping) for v in callbacks.values()
    ):
        return "callbacks is not a mapping of callback states"
    return None


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


def check_checkpoint_file(path: Path) -> None:
    """A one-line error unless `path` is a regular file (not a folder, FIFO or device)."""
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) or sorted(path.glob(f"{CHECKPOINT_DIR}/*.ckpt"))
        example = next((p for p in found if p.name == BEST), found[0] if found else None)
        raise CifarLabError(
            f"checkpoint {path} is a folder; give a .ckpt file in it"
            + (
                f", e.g. {example}"
                if example
                else f" (it holds none: a run folder keeps them in {CHECKPOINT_DIR}/{BEST} and "
                f"{CHECKPOINT_DIR}/{LAST})"
            )
        )
    if path.exists() and not path.is_file():
        raise CifarLabError(
            f"checkpoint {path} is not a regular file (a pipe, socket or device); give the path "
            f"of a best.ckpt/last.ckpt under outputs/<run>/{CHECKPOINT_DIR}/"
        )
    if not path.is_file():
        raise CifarLabError(
            f"checkpoint {path} does not exist; give the path of a best.ckpt/last.ckpt under "
            f"outputs/<run>/{CHECKPOINT_DIR}/"
        )


def read_checkpoint(path: str | Path) -> RunCheckpoint:
    """A cifar-lab checkpoint, on the CPU, without running pickled code; its archive
    CRC-checked and its structure checked, so damage is one line and never a silent score."""
    path = Path(path).expanduser()
    check_checkpoint_file(path)
    verify_archive(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    # As above: a crafted archive can make torch.load raise nearly anything; weights_only
    # refuses (UnpicklingError) whatever is not tensors, numbers, strings and containers.
    except Exception as err:
        first_line = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise _unreadable(path, first_line) from err
    if not isinstance(raw, dict) or CHECKPOINT_KEY not in raw:
        raise CifarLabError(
            f"{path} is a PyTorch file but not a cifar-lab checkpoint (no '{CHECKPOINT_KEY}' "
            f"entry); expected a .ckpt written by cifar_lab.train"
        )
    weights = raw.get("state_dict")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CifarLabError(
            f"{path} holds no 'state_dict' of weights; expected a .ckpt written by cifar_lab.train"
        )
    return RunCheckpoint(path, CheckpointPayload.from_checkpoint(raw, path), raw)


def resolve_ckpt_path(value: str | Path | None, run_dir: str | Path) -> Path | None:
    """`ckpt_path` as a file: `auto` = the run folder's last.ckpt, a folder = the newest
    last.ckpt under it; None (start afresh) when there is none yet, so a requeued job can keep
    one command line from its first start on."""
    if value is None or value == "":
        return None
    if value == "auto":
        candidate = last_checkpoint(run_dir)
        return candidate if candidate.is_file() else None
    path = Path(value).expanduser()
    if path.is_dir():
        found = [p for p in path.rglob(LAST) if p.is_file()]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
    return path  # read_checkpoint reports a missing file
