"""The training state a resumed run reads from its checkpoint, checked against this run's own
objects before Lightning reads it.

Lightning resumes a fit by handing each part of the checkpoint (loop progress, optimizer and
lr-schedule states, callback states, the AMP scaler's state, the module's state dict and the
EMA's) to that object's `load_state_dict`, which trusts it. A damaged or crafted file then fails
as a traceback deep inside torch or Lightning, often only at the first step (a moment without
its `step`, a moment of another shape, `betas=True`), or loads and silently changes the run (a
schedule of `param_group_field='weight_decay'`, a `base_values` list of another length).

A checkpoint is a shared file, so each part is compared with the state that this run's own
objects have, built from the same config (`structure_problem`): the same keys, values of the same
kind (numbers finite, counts whole and >= 0, a setting's text as it is here), tensors of the same
shape without NaN. What a structure cannot tell (an optimizer's flags and per-parameter state, a
schedule's arithmetic, a callback's enum) is tried on a copy: the optimizer steps once on `meta`
copies of the parameters (shapes only, no memory), the schedule computes a few learning rates,
a callback loads its state. Every failure is one `CifarLabError` naming the file and the part.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.utilities.migration import migrate_checkpoint
from packaging.version import InvalidVersion, Version
from torch.optim import Optimizer
from torch.optim.swa_utils import AveragedModel

from cifar_lab.errors import CifarLabError
from cifar_lab.runs.checkpoint import MAX_COUNT, RunCheckpoint, shown
from cifar_lab.runs.rng import RNG_KEY, collect_rng_states, set_rng_states

log = logging.getLogger(__name__)


class Resumable(Protocol):
    """What is checked of the module (`models.classifier.CIFARClassifier`, a layer above)."""

    net: torch.nn.Module
    optimizer_factory: Callable[[torch.nn.Module], Optimizer]
    scheduler_factory: Callable[..., Any] | None

    def state_dict(self) -> dict[str, Any]: ...


VERSION_KEY = "pytorch-lightning_version"
# Keys a parameter group gains outside its optimizer: a scheduler's starting lr, torch's names.
GROUP_EXTRAS = ("initial_lr", "param_names")
# The update counts at which a restored lr schedule is tried.
TRIED_UPDATES = (0, 1, 1 << 20)


def structure_problem(stored: Any, fresh: Any, where: str, counts: bool = False) -> str | None:
    """How `stored` differs from `fresh`, the state this run's own object has, or None: the same
    keys and lengths; tensors of the same shape and kind, without NaN; finite numbers of at
    most `MAX_COUNT` (with `counts`, for progress counters: >= 0, and an int where `fresh` has
    one; a setting's int may be stored as a float); the same text; a bool for a bool; None, a
    text or a number where `fresh` is None (not set yet)."""
    if isinstance(fresh, Mapping):
        if not isinstance(stored, Mapping):
            return f"{where} is {shown(stored)}, expected a mapping"
        missing = [k for k in fresh if k not in stored]
        unexpected = [k for k in stored if k not in fresh]
        if missing or unexpected:
            what = (
                f"lacks {shown(missing[:3])}"
                if missing
                else f"has unexpected keys {shown(unexpected[:3])}"
            )
            return f"{where} {what}"
        for key, value in fresh.items():
            problem = structure_problem(stored[key], value, f"{where}.{key}", counts)
            if problem:
                return problem
        return None
    if isinstance(fresh, (list, tuple)):
        if not isinstance(stored, (list, tuple)) or len(stored) != len(fresh):
            return f"{where}={shown(stored)}, expected {len(fresh)} items"
        for i, (item, value) in enumerate(zip(stored, fresh, strict=True)):
            problem = structure_problem(item, value, f"{where}[{i}]", counts)
            if problem:
                return problem
        return None
    if isinstance(fresh, torch.Tensor):
        return tensor_problem(stored, fresh, where)
    if isinstance(fresh, (bool, str)):
        same = isinstance(stored, bool) if isinstance(fresh, bool) else stored == fresh
        return None if same else f"{where}={shown(stored)}, expected {shown(fresh)}"
    if isinstance(fresh, (int, float)):
        return number_problem(stored, counts and isinstance(fresh, int), where, counts)
    if fresh is None:
        if stored is None or isinstance(stored, (str, bool)):
            return None
        return number_problem(stored, False, where, counts)
    return (
        None if type(stored) is type(fresh) else f"{where}={shown(stored)}, expected {shown(fresh)}"
    )


def number_problem(value: Any, whole: bool, where: str, nonnegative: bool = False) -> str | None:
    """What is wrong with a stored number that should be an int (`whole`) or any finite number."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        not is_number
        or (whole and not isinstance(value, int))
        or abs(value) > MAX_COUNT  # first: isfinite() of an int beyond a float overflows
        or not math.isfinite(value)
        or (nonnegative and value < 0)
    ):
        kind = "an integer" if whole else "a finite number"
        low = 0 if nonnegative else -MAX_COUNT
        return f"{where}={shown(value)}, expected {kind} in [{low}, {MAX_COUNT}]"
    return None


def numbers(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, number) for each number (not bool) in a mapping's values and their lists."""
    items = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in items:
        name = f"{prefix}{key}"
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            yield name, item
        elif isinstance(item, (Mapping, list, tuple)):
            yield from numbers(item, f"{name}.")


def negative_problem(settings: Mapping[str, Any], where: str) -> str | None:
    """An optimizer's learning rates, decays, betas, eps and momenta are finite and >= 0."""
    for key, value in numbers(settings):
        problem = number_problem(value, False, f"{where}.{key}", nonnegative=True)
        if problem:
            return problem
    return None


def tensor_problem(value: Any, fresh: torch.Tensor, where: str) -> str | None:
    """A stored tensor must have `fresh`'s shape and kind (floating, complex, bool or integer; the
    precision may differ, as with bf16-true) and no NaN."""

    def kind(t: torch.Tensor) -> tuple[bool, bool, bool]:
        return t.is_floating_point(), t.is_complex(), t.dtype == torch.bool

    if (
        not isinstance(value, torch.Tensor)
        or value.shape != fresh.shape
        or kind(value) != kind(fresh)
    ):
        return f"{where}={shown(value)}, expected {shown(fresh)}"
    if (value.is_floating_point() or value.is_complex()) and bool(torch.isnan(value).any()):
        return f"{where} holds NaN"
    return None


def tried(action: Callable[[], Any], where: str) -> str | None:
    """Run `action()` (a load or a step on a copy); what it raised, as one line, or None."""
    try:
        action()
    # Everything is caught on purpose: the state comes from a shared file, and torch, timm and
    # Lightning refuse a bad one in many ways (KeyError, TypeError, ValueError, RuntimeError).
    except Exception as err:
        return f"{where} does not load ({type(err).__name__}: {one_line(err)})"
    return None


def one_line(err: BaseException, limit: int = 120) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- parts --------------------------------------------------------------------------------
def loaded_by_lightning(raw: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The small parts of `raw` (loops, callbacks, counters) as Lightning reads them: upgraded
    from an older Lightning's layout as it would be (on copies); or a problem."""
    version = raw.get(VERSION_KEY)
    try:
        written = Version(version) if isinstance(version, str) else None
    except InvalidVersion:
        written = None
    if written is None:
        return None, f"{VERSION_KEY}={shown(version)}, expected a version such as {L.__version__}"
    light = {
        key: copy.deepcopy(value) if key in ("loops", "callbacks") else value
        for key, value in raw.items()
    }
    if written >= Version(L.__version__):
        return light, None
    try:
        upgraded, _ = migrate_checkpoint(light)
    except Exception as err:  # the upgrade trusts the old layout; a crafted one breaks it
        why = f"{type(err).__name__}: {one_line(err)}"
        return None, f"written by Lightning {version}, its state does not upgrade ({why})"
    return upgraded, None


def loops_problem(light: Mapping[str, Any], trainer: L.Trainer) -> str | None:
    """The fit loop's progress against this Trainer's."""
    stored = light["loops"].get("fit_loop")
    return structure_problem(stored, trainer.fit_loop.state_dict(), "loops.fit_loop", True)


def check_epochs(checkpoint: RunCheckpoint, trainer: L.Trainer) -> None:
    """Lightning refuses a checkpoint of more epochs than `max_epochs` without naming it."""
    epochs, max_epochs = checkpoint.raw["epoch"], trainer.max_epochs
    if max_epochs is not None and max_epochs != -1 and epochs > max_epochs:
        raise CifarLabError(
            f"{checkpoint.path} has trained {epochs} epochs, more than trainer.max_epochs="
            f"{max_epochs}: give trainer.max_epochs above {epochs} to train it further"
        )


def meta_copy(optimizer: Optimizer) -> Optimizer:
    """An optimizer of `optimizer`'s class and groups over `meta` copies of its parameters, each
    with a gradient: stepping it runs the real update code on shapes, without memory."""
    groups = []
    for group in optimizer.param_groups:
        params = [torch.empty_like(p, device="meta").requires_grad_() for p in group["params"]]
        for param in params:
            param.grad = torch.empty_like(param)
        groups.append({**group, "params": params})
    return type(optimizer)(groups)


def on_meta(value: Any) -> Any:
    """A stored optimizer state for `meta_copy`: tensors of several elements on `meta` (no data),
    single numbers (step counts, read on the host) copied."""
    if isinstance(value, torch.Tensor):
        return value.to("meta") if value.numel() > 1 else value.clone()
    if isinstance(value, Mapping):
        return {key: on_meta(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_meta(item) for item in value)
    return value


def reference_state(optimizer: Optimizer) -> dict[int, Any] | None:
    """The per-parameter state `optimizer` keeps after a step (by position), from `meta_copy`;
    None for an optimizer that cannot step on `meta` (then only the dry run below is skipped)."""
    try:
        proxy = meta_copy(optimizer)
        proxy.step()
    except Exception as err:  # an optimizer that reads values on the host
        log.debug("no meta dry run of %s: %s", type(optimizer).__name__, err)
        return None
    return proxy.state_dict()["state"]


def optimizer_problem(states: list, optimizer: Optimizer) -> str | None:
    """The stored optimizer state against `optimizer` (this run's, with no state yet): the same
    groups, parameters and settings, each parameter's state as this optimizer keeps it; then
    loaded into a `meta_copy` and stepped once."""
    name = type(optimizer).__name__
    if len(states) != 1:
        return f"optimizer_states holds {len(states)} optimizer states; this run's {name} is one"
    stored, fresh = states[0], optimizer.state_dict()
    groups, fresh_groups = stored["param_groups"], fresh["param_groups"]
    if len(groups) != len(fresh_groups):
        return (
            f"optimizer_states[0] has {len(groups)} parameter groups; this run's {name} has "
            f"{len(fresh_groups)}"
        )
    positions: dict[Any, int] = {}  # a stored parameter number -> its place in this optimizer
    for i, (group, fresh_group) in enumerate(zip(groups, fresh_groups, strict=True)):
        where = f"optimizer_states[0].param_groups[{i}]"
        params, expected = group["params"], len(fresh_group["params"])
        for p in params:
            if not isinstance(p, int) or isinstance(p, bool) or p in positions:
                break
            positions[p] = len(positions)
        else:
            if len(params) == expected:
                params = None
        if params is not None:
            return f"{where}.params={shown(params)}, expected {expected} distinct numbers"
        settings = {k: v for k, v in group.items() if k != "params" and k not in GROUP_EXTRAS}
        fresh_settings = {k: v for k, v in fresh_group.items() if k != "params"}
        problem = structure_problem(settings, fresh_settings, where) or negative_problem(
            {**settings, **{k: group[k] for k in ("initial_lr",) if k in group}}, where
        )
        if problem:
            return problem
    reference = reference_state(optimizer)
    if reference is None:
        return None
    for key, entry in stored["state"].items():
        if key not in positions:
            return f"optimizer_states[0].state has an entry for {shown(key)}, in no group"
        problem = structure_problem(
            entry, reference.get(positions[key], {}), f"optimizer_states[0].state[{key}]"
        )
        if problem:
            return problem
    proxy = meta_copy(optimizer)

    def load_and_step() -> None:
        proxy.load_state_dict(on_meta(stored))
        proxy.step()

    return tried(load_and_step, "optimizer_states[0]")


def schedule_problem(states: list, module: Resumable, optimizer: Optimizer) -> str | None:
    """Each stored lr-schedule state against this run's schedule (Lightning pairs them in order,
    ignoring extras); then loaded into it and asked for a few learning rates, which must be
    finite and >= 0. timm's schedulers load a state by setting every key as an attribute."""
    if module.scheduler_factory is None or not states:
        return None
    fresh = module.scheduler_factory(optimizer, total_steps=100, steps_per_epoch=10)
    where = "lr_schedulers[0]"
    problem = structure_problem(states[0], fresh.state_dict(), where)
    if problem:
        return problem

    def learning_rates() -> None:
        fresh.load_state_dict(copy.deepcopy(states[0]))
        for updates in TRIED_UPDATES:
            if hasattr(fresh, "step_update"):
                fresh.step_update(num_updates=updates)
            else:
                fresh.step()
            lrs = [group["lr"] for group in optimizer.param_groups]
            if not all(
                isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0 for lr in lrs
            ):
                raise ValueError(f"after {updates} updates its learning rates are {lrs}")

    return tried(learning_rates, where)


def callbacks_problem(light: Mapping[str, Any], trainer: L.Trainer) -> str | None:
    """Each callback's stored state against its own, then loaded into a copy of it; the
    checkpoint callbacks check their stored paths themselves (`runs.callbacks`)."""
    stored = light.get("callbacks") or {}
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            continue
        state = stored.get(callback.state_key, stored.get(callback._legacy_state_key))
        if not state:  # Lightning skips an empty or missing state too
            continue
        where = f"callbacks[{callback.state_key!r}]"
        problem = structure_problem(state, callback.state_dict(), where, True) or tried(
            lambda cb=callback, s=state: copy.deepcopy(cb).load_state_dict(copy.deepcopy(s)), where
        )
        if problem:
            return problem
    return None


def averaging_problem(raw: Mapping[str, Any], trainer: L.Trainer, module: Resumable) -> str | None:
    """With an EMA callback, the training weights and the average's counter it restores."""
    if not any(isinstance(c, WeightAveraging) for c in trainer.callbacks):
        return None
    if "current_model_state" not in raw or "averaging_state" not in raw:
        return None  # Lightning then starts the average from the checkpoint's weights
    weights = raw["current_model_state"]
    problem = structure_problem(weights, module.state_dict(), "current_model_state")
    if problem:
        return problem
    counter = {
        key: value
        for key, value in AveragedModel(torch.nn.Identity()).state_dict().items()
        if not key.startswith("module.")
    }
    return structure_problem(raw["averaging_state"], counter, "averaging_state", True)


def precision_problem(raw: Mapping[str, Any], trainer: L.Trainer) -> str | None:
    """The AMP scaler's state, where this run has one (fp16 on a GPU)."""
    plugin = trainer.precision_plugin
    fresh = plugin.state_dict()
    keys = [type(plugin).__qualname__]
    if isinstance(plugin, MixedPrecision):
        keys.append("native_amp_scaling_state")  # Lightning reads it from old checkpoints
    for key in keys:
        if not fresh or key not in raw:
            continue
        problem = structure_problem(raw[key], fresh, key, True) or tried(
            lambda k=key: copy.deepcopy(plugin).load_state_dict(copy.deepcopy(raw[k])), key
        )
        if problem:
            return problem
    return None


def check_training_state(checkpoint: RunCheckpoint, trainer: L.Trainer, module: Resumable) -> None:
    """Raise a one-line error unless every part of `checkpoint` that `trainer.fit` will restore
    fits this run's `trainer` and `module` (built, not yet fitted); see the module docstring."""
    raw = checkpoint.raw
    light, problem = loaded_by_lightning(raw)
    if light is not None:
        optimizer = module.optimizer_factory(module.net)  # no state yet: its structure only
        problem = (
            loops_problem(light, trainer)
            or structure_problem(raw["state_dict"], module.state_dict(), "state_dict")
            or optimizer_problem(raw["optimizer_states"], optimizer)
            or schedule_problem(raw["lr_schedulers"], module, optimizer)
            or callbacks_problem(light, trainer)
            or averaging_problem(raw, trainer, module)
            or precision_problem(raw, trainer)
        )
    if problem:
        raise CifarLabError(
            f"{checkpoint.path} cannot resume training: {problem}; resume from a last.ckpt "
            f"written by cifar_lab.train with this cifar-lab, or start a new run"
        )
    check_epochs(checkpoint, trainer)
    before = collect_rng_states()  # the generators' states: restored once, then undone
    try:
        set_rng_states(raw[RNG_KEY], str(checkpoint.path))
    finally:
        set_rng_states(before)
