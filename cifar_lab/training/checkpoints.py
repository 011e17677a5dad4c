"""The best-checkpoint callback that keeps the best of the run it resumes, in any folder.

Lightning's `ModelCheckpoint` restores its best score only when the checkpoint folder is the
same as before; Hydra gives every run a new folder, so a resumed run would start `best.ckpt`
over and keep the best of the resumed epochs only, while `val/acc_best` counts all of them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class ResumableCheckpoint(ModelCheckpoint):
    """A `ModelCheckpoint` that, resumed into another folder, copies the stored best file there
    and keeps its score, so `best.ckpt`, `best_model_score` and `val/acc_best` agree whether or
    not the run was resumed into a new folder (without a monitor, as for last.ckpt, it starts
    afresh there)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._carried: tuple[Path, Any] | None = None

    @property
    def state_key(self) -> str:
        # The same key as a plain ModelCheckpoint: checkpoints stay interchangeable.
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        # Another folder: Lightning would warn and keep only the old path. A `last.ckpt`
        # callback (no monitor) starts afresh; a best one carries the stored best over.
        best, score = state_dict.get("best_model_path"), state_dict.get("best_model_score")
        if not self.monitor or not best or score is None:
            return
        if not Path(best).is_file():
            log.warning(
                "the resumed run's best checkpoint %s is gone: best.ckpt will be the best of "
                "the epochs from here on",
                best,
            )
            return
        self._carried = (Path(best), score)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if self._carried is None:
            return
        source, score = self._carried
        self._carried = None
        target = Path(self.dirpath or ".") / source.name
        if trainer.is_global_zero and source.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)
        trainer.strategy.barrier("carry_best_checkpoint")
        self.best_model_path = self.kth_best_model_path = str(target)
        self.best_model_score = self.kth_value = score
        self.best_k_models = {str(target): score}
