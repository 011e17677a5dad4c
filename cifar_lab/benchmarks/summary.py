"""What `python -m cifar_lab.bench` prints: the figures a reader compares, rounded, one per line
(the whole result, with every repeat's spread and the per-corruption speeds, is bench.json)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

FIGURE_ENDINGS = (
    "img_per_s", "_over_plain", "_over_model", "tta_overhead", "peak_rss_mib", "full_set_seconds",
    "fit_seconds",
    "step_cost",
)  # fmt: skip
LEFT_OUT = ("corruptions.", "_min", "_max", "worker")  # in bench.json only


def leaves(result: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in result.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


def figure(path: str, value: float, spread: tuple[float, float] | None) -> str:
    if path.endswith("rss_mib"):
        text = f"{value:,.0f} MiB"
    elif path.endswith("seconds"):
        text = f"{value:,.1f} s" if value >= 1 else f"{value:.2g} s"  # a 0.02 s fit is not 0.0
    elif "_over_" in path or path.endswith(("overhead", "step_cost")):
        text = f"{value:.2f}"
    else:
        text = f"{value:,.1f}"
    if spread is not None:
        text += f"  ({spread[0]:,.1f}-{spread[1]:,.1f})"
    return f"  {path:<44} {text}"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """A header (device, model, settings) and one line per figure: median (min-max)."""
    found = dict(leaves(result))
    lines = [
        f"{result.get('device')}, {result.get('cores')} cores ({result.get('torch_threads')} "
        f"torch threads), torch {result.get('torch')}; {result.get('model')}, batch "
        f"{result.get('batch_size')}, {result.get('precision')}, augment "
        f"{result.get('augment')} ({result.get('backend')})"
    ]
    for path, value in found.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not path.endswith(FIGURE_ENDINGS) or any(s in path for s in LEFT_OUT):
            continue
        low, high = found.get(f"{path}_min"), found.get(f"{path}_max")
        lines.append(figure(path, value, (low, high) if low is not None and high else None))
    return lines
