"""The progress bar and model summary of a training run, as a user reads them."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import (
    get_formatted_model_size,
    get_human_readable_count,
)


class EpochProgressBar(RichProgressBar):
    """Counts epochs from 1 to max_epochs ("Epoch 2/2"), not from 0 to max_epochs - 1."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = f"Epoch {current_epoch + 1}"
        if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
            description += f"/{self.trainer.max_epochs}"
        return f"{description:{len(self.validation_description)}}"


class NetSummary(RichModelSummary):
    """The network alone: the LightningModule's loss and metric modules (no parameters) are
    left out, and so are the FLOPs (Lightning counts 0 for these networks) and module modes."""

    SHOWN = ("Name", "Type", "Params", "Params per Device", "In sizes", "Out sizes")

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        from rich import get_console
        from rich.table import Table

        columns = dict(summary_data)
        rows = [i for i, name in enumerate(columns.get("Name", [])) if name.startswith("net")]
        table = Table(header_style=summarize_kwargs.get("header_style", "bold magenta"))
        shown = [name for name in NetSummary.SHOWN if name in columns]
        for name in shown:
            table.add_column(name, justify="left" if name in ("Name", "Type") else "right")
        for i in rows:
            table.add_row(*(columns[name][i] for name in shown))
        console = get_console()
        console.print(table)
        frozen = total_parameters - trainable_parameters
        console.print(
            f"Trainable params: {get_human_readable_count(int(trainable_parameters)).strip()}, "
            f"frozen: {get_human_readable_count(int(frozen)).strip()}, "
            f"size: {get_formatted_model_size(model_size)} MB"
        )
