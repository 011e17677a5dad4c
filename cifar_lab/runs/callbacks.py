"""The checkpoint callback that keeps best.ckpt and last.ckpt of a run, resumed or not.

Lightning's `ModelCheckpoint` restores its best score only when the checkpoint folder is the
same as before; Hydra gives every run a new folder, so a resumed run would start `best.ckpt`
over and keep the best of the resumed epochs only, while `val/acc_best` counts all of them.

Its stored state is read from a checkpoint, a shared file, and Lightning acts on the paths in it:
it deletes "old" checkpoints it names (`_should_remove_checkpoint` compares paths without
resolving `..`, then removes recursively) and reports them as the run's best. So a stored path
is data. Resuming in place, a stored path is kept only when it resolves, after `..` and symbolic
links, to a file inside this run's checkpoint folder. Resuming into a new folder, the stored best
is copied over only when it resolves to a file inside the run folder of the checkpoint being
resumed (the folder above its `checkpoints/`, a path the user gave) and is a cifar-lab
checkpoint of this run's network; nothing is ever deleted outside this run's checkpoint folder.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")
SCORE_KEYS = ("best_model_score", "kth_value", "current_score")


def inside(path: Any, folder: Path | None) -> Path | None:
    """`path` resolved, if it is an existing regular file inside `folder` (resolved); else None."""
    if folder is None or not isinstance(path, str) or not path:
        return None
    resolved = Path(path).resolve()
    return resolved if folder in resolved.parents and resolved.is_file() else None


def finite_score(value: Any) -> torch.Tensor | None:
    """A stored score as a tensor, or None unless it is one finite number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return torch.tensor(float(value))


class ResumableCheckpoint(ModelCheckpoint):
    """A `ModelCheckpoint` whose stored state is checked before use (see the module docstring)
    and that, resumed into another folder, copies the stored best file there and keeps its
    score, so `best.ckpt`, `best_model_score` and `val/acc_best` agree whether or not the run
    was resumed into a new folder (without a monitor, as for last.ckpt, it starts afresh there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._carried: tuple[Path, torch.Tensor] | None = None
        self._trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        # The same key as a plain ModelCheckpoint, so checkpoints stay interchangeable; a third
        # checkpoint callback (callbacks=top_k) monitors what best.ckpt does, so its file name
        # pattern keeps its state apart.
        key = super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)
        return key if self.filename in (None, "best", "last") else f"{key}[{self.filename}]"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer  # its ckpt_path, known when the state is restored

    def _resumed_from(self) -> Path | None:
        """The checkpoint being resumed (a path the user gave, not stored data)."""
        ckpt_path = getattr(self._trainer, "ckpt_path", None)
        return Path(ckpt_path).resolve() if ckpt_path else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        here = Path(self.dirpath).resolve() if self.dirpath else None
        resumed = self._resumed_from()
        if resumed is not None and resumed.parent == here:
            self._restore_in_place(state_dict, here)
            return
        # Another folder: a `last.ckpt` callback (no monitor) starts afresh; a best one carries
        # the stored best over, when it is a file of the resumed checkpoint's run folder.
        best = inside(state_dict.get("best_model_path"), resumed.parent.parent if resumed else None)
        score = finite_score(state_dict.get("best_model_score"))
        if not self.monitor or best is None or score is None:
            if self.monitor and state_dict.get("best_model_path"):
                log.warning(
                    "the resumed run's stored best checkpoint %r is not a file in the run "
                    "folder of %s (or has no score): best.ckpt will be the best of the epochs "
                    "from here on",
                    state_dict.get("best_model_path"),
                    resumed,
                )
            return
        self._carried = (best, score)

    def _restore_in_place(self, state_dict: dict[str, Any], here: Path) -> None:
        """Lightning's restore of the same folder, with every stored path and score checked."""
        kept: dict[str, Any] = {}
        for key in PATH_KEYS:
            path = inside(state_dict.get(key), here)
            kept[key] = str(path) if path else ""
        for key in SCORE_KEYS:
            kept[key] = finite_score(state_dict.get(key))
        if not kept["best_model_path"]:
            kept["best_model_score"] = None
        stored_k = state_dict.get("best_k_models")
        kept["best_k_models"] = {
            str(path): score
            for name, value in (stored_k.items() if isinstance(stored_k, dict) else [])
            if (path := inside(name, here)) and (score := finite_score(value)) is not None
        }
        dropped = [k for k in PATH_KEYS if state_dict.get(k) and not kept[k]]
        if dropped:
            log.warning(
                "ignored the checkpoint's stored %s: not files inside %s", ", ".join(dropped), here
            )
        kept["dirpath"] = self.dirpath
        super().load_state_dict(kept)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._carried is None:
            return
        source, score = self._carried
        self._carried = None
        try:  # it must be a cifar-lab checkpoint of this network, not any file
            read_checkpoint(source).check_weights_fit(pl_module.net)
        except CifarLabError as err:
            log.warning("not carrying the resumed run's best checkpoint over: %s", err)
            return
        name = f"{self.filename}{self.FILE_EXTENSION}" if self.filename else source.name
        target = Path(self.dirpath or ".") / name
        if trainer.is_global_zero and source != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
        trainer.strategy.barrier("carry_best_checkpoint")
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}
