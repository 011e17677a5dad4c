"""Property-based fuzzing of every reader of untrusted files (hypothesis): real checkpoints,
CIFAR pickles, OOD `.npy` files, `labels.npy` and reference CSVs, truncated, bit-flipped,
overwritten, re-typed, re-shaped or carrying `__reduce__` payloads; a checkpoint's stored config
values and its checkpoint callbacks' state, crafted. Each reader must return
valid data or raise `CifarLabError`, never another exception, and never run code (the payloads
would create a marker file). And the training state a resume hands to Lightning (loops,
optimizer, lr schedule, callbacks, EMA, counters, extra entries), edited and resumed for real:
it trains to the end or is refused in one line naming the file, keeping the finished record.

CIFAR_LAB_FUZZ_EXAMPLES sets the examples per reader test (default 100, about 15 s in all
here), CIFAR_LAB_FUZZ_RESUMES those of the resume test (default 12, about 12 s):
    CIFAR_LAB_FUZZ_EXAMPLES=2000 CIFAR_LAB_FUZZ_RESUMES=500 python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import atexit
import io
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from cifar_files import CreatesFile, write_cifar
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from omegaconf import DictConfig
from support import STATEFUL_CALLBACKS, TINY_CONVNET, compose_train, tiny_data, tiny_training

from cifar_lab.build import build_module, check_stored_network
from cifar_lab.data.datasets import IMAGE_SHAPE, load_cifar
from cifar_lab.data.ood import check_images, check_labels
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.tables import SEVERITY_COLUMNS, read_severity_table, write_severity_table
from cifar_lab.runs.callbacks import PATH_KEYS, SCORE_KEYS, ResumableCheckpoint
from cifar_lab.runs.checkpoint import read_checkpoint
from cifar_lab.runs.rebuild import stored_run_config
from cifar_lab.train import train

EXAMPLES = int(os.environ.get("CIFAR_LAB_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
WORK = Path(tempfile.mkdtemp(prefix="cifar-lab-fuzz-"))
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
MARKER = WORK / "code-ran"  # what every __reduce__ payload here would create


# --- mutations ------------------------------------------------------------------------------
@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` truncated, bit-flipped (anywhere, or in its first or last 2 kB, where headers and
    zip directories live), overwritten with junk, or with bytes inserted or appended."""
    n = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "append"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, n - 1))]
    if kind == "flip":
        region = draw(st.sampled_from([(0, n), (0, min(n, 2048)), (max(0, n - 2048), n)]))
        out = bytearray(data)
        for position in draw(st.lists(st.integers(*region).map(lambda p: min(p, n - 1)),
                                      min_size=1, max_size=8)):  # fmt: skip
            out[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    start = draw(st.integers(0, n))
    junk = draw(st.binary(min_size=1, max_size=64))
    if kind == "overwrite":
        return data[:start] + junk + data[start + len(junk) :]
    if kind == "insert":
        return data[:start] + junk + data[start:]
    return data + junk


def leaves() -> st.SearchStrategy:
    small_arrays = hnp.arrays(
        st.sampled_from([np.uint8, np.int64, np.float32, np.bool_, np.int8]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
        st.binary(max_size=6), small_arrays, st.builds(CreatesFile, st.just(MARKER)),
    )  # fmt: skip


def structures() -> st.SearchStrategy:
    """Nested lists/dicts of numbers, strings, bytes, numpy arrays and code payloads."""
    keys = st.sampled_from(["data", "labels", "fine_labels", "filenames", "other"]) | st.text(
        max_size=4
    )
    return st.recursive(
        leaves(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(keys, children, max_size=4)
            | st.tuples(children, children)
        ),
        max_leaves=12,
    )


def check(read: Callable[[Path], Any], path: Path, valid: Callable[[Any], None]) -> None:
    """`read(path)` returns something `valid` accepts or raises CifarLabError; runs no code."""
    try:
        result = read(path)
    except CifarLabError as err:
        assert str(err) and "\n" not in str(err)
        event("refused with a one-line error")
    else:
        valid(result)
        event("read as valid data")
    assert not MARKER.exists(), "a file's payload ran"


# --- checkpoints ----------------------------------------------------------------------------
def read_checkpoint_as_predict_and_train_do(path: Path) -> dict:
    checkpoint = read_checkpoint(path)
    stored_run_config(checkpoint.config, str(path))
    checkpoint.check_resumable()
    checkpoint.net_weights()
    return checkpoint.raw


def a_checkpoint(result: Any) -> None:
    assert isinstance(result, dict) and isinstance(result["state_dict"], dict)


def edited(checkpoint: dict, draw: st.DrawFn) -> dict:
    """The checkpoint with one entry (at any depth) removed or replaced by another value."""
    node, path = checkpoint, []
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node, key=str)))
        path.append(key)
        node = node[key]
    if not path:
        path.append(draw(st.sampled_from(sorted(checkpoint, key=str))))
    parent = checkpoint
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(structures())
    return checkpoint


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_fail_with_one_line(tiny_checkpoint: Path, data) -> None:
    original = tiny_checkpoint.read_bytes()
    path = WORK / "fuzzed.ckpt"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(mutated(original)))
    else:
        checkpoint = edited(torch.load(io.BytesIO(original), weights_only=True), data.draw)
        torch.save(checkpoint, path)

    check(read_checkpoint_as_predict_and_train_do, path, a_checkpoint)


def test_a_checkpoint_carrying_a_reduce_payload_runs_nothing(tiny_checkpoint: Path) -> None:
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["cifar_lab"]["config"]["model"] = CreatesFile(MARKER)
    torch.save(checkpoint, WORK / "evil.ckpt")

    with pytest.raises(CifarLabError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(WORK / "evil.ckpt")
    assert not MARKER.exists()


# --- CIFAR pickles --------------------------------------------------------------------------
CIFAR_ROOT = write_cifar(WORK / "cifar", "cifar100", n_train=10, n_test=10)
CIFAR_DIR = CIFAR_ROOT / "cifar-100-python"
ORIGINAL = {name: (CIFAR_DIR / name).read_bytes() for name in ("test", "meta")}


def cifar_split(result: Any) -> None:
    n = len(result.labels)
    assert result.images.dtype == np.uint8 and result.images.shape == (n, *IMAGE_SHAPE)
    assert result.labels.dtype == np.int64 and result.labels.shape == (n,)
    assert all(isinstance(c, str) for c in result.classes)


@st.composite
def almost_batches(draw: st.DrawFn) -> dict:
    """Dicts shaped like a CIFAR batch whose parts may have other dtypes, shapes and values."""
    n = draw(st.integers(0, 4))
    width = draw(st.sampled_from([3072, 3071, 1024]))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.float32, object]))
    data = np.zeros((n, width), dtype)
    labels = draw(
        st.lists(st.integers(-(2**70), 2**70), min_size=n, max_size=n)
        | st.lists(st.integers(-2, 200), min_size=max(n - 1, 0), max_size=n + 1)
        | structures()
    )
    return {"data": data, draw(st.sampled_from(["fine_labels", "labels", "x"])): labels}


@FUZZ
@given(data=st.data())
def test_fuzzed_cifar_pickles_load_or_fail_with_one_line(data) -> None:
    target = data.draw(st.sampled_from(["test", "meta"]))
    how = data.draw(st.sampled_from(["bytes", "structure", "batch"]))
    if how == "bytes":
        raw = data.draw(mutated(ORIGINAL[target]))
    else:
        content = data.draw(structures() if how == "structure" else almost_batches())
        raw = pickle.dumps(content, protocol=data.draw(st.integers(0, 5)))
    (CIFAR_DIR / target).write_bytes(raw)
    try:
        check(
            lambda root: load_cifar("cifar100", root, False, False, False), CIFAR_ROOT, cifar_split
        )
    finally:
        (CIFAR_DIR / target).write_bytes(ORIGINAL[target])


# --- OOD files and labels -------------------------------------------------------------------
def valid_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


IMAGES_NPY = valid_npy(np.random.default_rng(0).integers(0, 256, (10, *IMAGE_SHAPE), np.uint8))
LABELS_NPY = valid_npy(np.arange(10, dtype=np.uint8))


@st.composite
def npy_files(draw: st.DrawFn, original: bytes) -> bytes:
    """A mutated copy of `original`, an array of another dtype/shape, an object array (with a
    payload) or an .npz archive."""
    kind = draw(st.sampled_from(["bytes", "array", "object", "npz"]))
    if kind == "bytes":
        return draw(mutated(original))
    buffer = io.BytesIO()
    if kind == "array":
        shape = hnp.array_shapes(min_dims=0, max_dims=4, max_side=6) | st.just((5, 32, 32, 3))
        dtype = st.sampled_from([np.uint8, np.int64, np.float16, np.bool_, ">u2", "S3"])
        np.save(buffer, draw(hnp.arrays(dtype, shape)))
    elif kind == "object":
        np.save(buffer, np.array([CreatesFile(MARKER), 1], dtype=object), allow_pickle=True)
    else:
        np.savez(buffer, images=np.zeros((5, *IMAGE_SHAPE), np.uint8))
    return buffer.getvalue()


def ood_images(result: Any) -> None:
    images = result.image_set().read(0, 5 * result.per_severity)
    assert images.dtype == np.uint8 and images.shape == (5 * result.per_severity, *IMAGE_SHAPE)


def labels_of_10(result: Any) -> None:
    assert result.dtype == np.int64 and result.shape == (10,) and result.min() >= 0
    assert result.max() < 10


@FUZZ
@given(data=st.data())
def test_fuzzed_ood_files_load_or_fail_with_one_line(data) -> None:
    (WORK / "fog.npy").write_bytes(data.draw(npy_files(IMAGES_NPY)))
    check(check_images, WORK / "fog.npy", ood_images)


@FUZZ
@given(data=st.data())
def test_fuzzed_labels_load_or_fail_with_one_line(data) -> None:
    (WORK / "labels.npy").write_bytes(data.draw(npy_files(LABELS_NPY)))
    check(lambda path: check_labels(path, 10, 10), WORK / "labels.npy", labels_of_10)


# --- reference CSVs -------------------------------------------------------------------------
REFERENCE = write_severity_table(WORK / "reference.csv", {"fog": [0.5] * 5, "snow": [0.25] * 5},
                                 {"all": ["fog", "snow"]}).read_bytes()  # fmt: skip


def severity_table(result: Any) -> None:
    assert result and all(
        isinstance(name, str) and len(values) == 5 and all(0 <= v <= 1 for v in values)
        for name, values in result.items()
    )


@st.composite
def csv_texts(draw: st.DrawFn) -> bytes:
    """Rows of cells that may be empty, non-numeric or out of range, under a drawn header."""
    columns = draw(st.lists(st.sampled_from(["corruption", *SEVERITY_COLUMNS, "x"]), max_size=8)
                   | st.just(["corruption", *SEVERITY_COLUMNS]))  # fmt: skip
    cell = st.sampled_from(["", "0.5", "1", "-0.1", "2", "nan", "inf", "fog", '"', "\x00"])
    rows = draw(st.lists(st.lists(cell, max_size=len(columns) + 1), max_size=4))
    return "\n".join(",".join(r) for r in [columns, *rows]).encode()


@FUZZ
@given(data=st.data())
def test_fuzzed_reference_csvs_load_or_fail_with_one_line(data) -> None:
    raw = data.draw(mutated(REFERENCE) | csv_texts())
    (WORK / "ref.csv").write_bytes(raw)
    check(read_severity_table, WORK / "ref.csv", severity_table)


def test_the_payload_really_creates_the_marker() -> None:
    """The properties above mean something only if unpickling a payload does run it."""
    marker = WORK / "sanity"
    pickle.loads(pickle.dumps(CreatesFile(marker)))
    assert marker.exists()
    marker.unlink()


# --- what a checkpoint stores: its config's values and its callbacks' state ----------------
def stored_values() -> st.SearchStrategy:
    """Values `torch.load(weights_only=True)` reads back: numbers (huge, negative, NaN),
    strings (paths out of the run, interpolations), lists and dicts of them, tensors."""
    paths = st.sampled_from(["../../victim", "/etc/passwd", "best.ckpt", "${oc.env:HOME}", ""])
    scalars = (
        st.none() | st.booleans() | st.integers(-(10**15), 10**15) | st.floats()
        | st.text(max_size=6) | paths | st.builds(torch.tensor, st.floats(width=32))
    )  # fmt: skip
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=4) | paths, children, max_size=3)
        ),
        max_leaves=8,
    )


CALLBACK_KEYS = [*PATH_KEYS, *SCORE_KEYS, "best_k_models", "dirpath", "monitor"]
STORED_KEYS = {
    "data": ["num_classes", "img_size", "batch_size", "val_fraction", "root", "name"],
    "model": ["widths", "head_hidden", "act_layer", "checkpoint_path", "drop_rate", "name"],
    "optim": ["optimizer", "scheduler", "scale_lr_by_batch"],
    "augment": ["crop", "mix", "stats"],
    "loss": ["label_smoothing", "name"],
}


@FUZZ
@given(data=st.data())
def test_fuzzed_stored_configs_build_or_fail_with_one_line(tiny_checkpoint: Path, data) -> None:
    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    group = data.draw(st.sampled_from(sorted(STORED_KEYS)))
    key = data.draw(st.sampled_from(STORED_KEYS[group]))
    checkpoint["cifar_lab"]["config"][group][key] = data.draw(stored_values())
    path = WORK / "stored.ckpt"
    torch.save(checkpoint, path)

    def rebuild(path: Path) -> DictConfig:
        stored = stored_run_config(read_checkpoint(path).config, str(path))
        check_stored_network(stored.model, str(path))
        build_module(stored)  # what predict and a resume build from it
        return stored

    check(rebuild, path, lambda stored: isinstance(stored, DictConfig))


@FUZZ
@given(state=st.dictionaries(st.sampled_from(CALLBACK_KEYS), stored_values(), max_size=6),
       in_place=st.booleans())  # fmt: skip
def test_fuzzed_callback_state_never_points_outside_the_run(state: dict, in_place: bool) -> None:
    folder = WORK / "run" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best.ckpt").write_bytes(b"")
    (WORK / "victim").write_text("keep me")
    callback = ResumableCheckpoint(dirpath=str(folder), filename="best", monitor="val/acc")
    resumed = folder / "last.ckpt" if in_place else WORK / "other" / "checkpoints" / "last.ckpt"
    callback._trainer = SimpleNamespace(ckpt_path=str(resumed))

    try:
        callback.load_state_dict(state)
    except CifarLabError as err:
        assert "\n" not in str(err)
        return

    kept = [callback.best_model_path, callback.kth_best_model_path, callback.last_model_path]
    kept += list(callback.best_k_models)
    assert all(not p or folder.resolve() in Path(p).resolve().parents for p in kept), kept
    assert (WORK / "victim").read_text() == "keep me"


# --- the training state a resume hands to Lightning ----------------------------------------
# Each example edits the loops, optimizer, lr schedule, callbacks, counters, weights or extra
# entries of a finished run's last.ckpt and resumes that run in place, in-process, through
# `train` (what the command line runs): it must train to the end, or be refused in one line that
# names the file, keeping the finished record. About 0.5-1 s an example.
RESUME_EXAMPLES = int(os.environ.get("CIFAR_LAB_FUZZ_RESUMES", "12"))
RESUMES = settings(FUZZ, max_examples=RESUME_EXAMPLES)


def resume_in_place(run: Path, root: Path) -> dict:
    """`stateful_checkpoint`'s run resumed in `run` for one more epoch (the same settings)."""
    overrides = [*tiny_data(root), *TINY_CONVNET, *tiny_training(batches=1), "logger=none",
                 "test=false", STATEFUL_CALLBACKS, f"paths.output_dir={run}"]  # fmt: skip
    return train(compose_train([*overrides, "ckpt_path=auto", "trainer.max_epochs=2"]))


def tensors() -> st.SearchStrategy:
    """Small tensors of any shape and dtype, NaN and infinity included."""
    dtypes = st.sampled_from([np.float32, np.float16, np.int64, np.bool_, np.uint8, np.complex64])
    shapes = hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)
    return hnp.arrays(dtypes, shapes).map(lambda a: torch.from_numpy(a.copy()))


def junk() -> st.SearchStrategy:
    """What a crafted training state holds where Lightning expects something else."""
    return (
        st.integers(-3, 3) | st.sampled_from([2**31, 2**63, 10**30, -(2**40)]) | st.floats()
        | st.text(max_size=4) | st.none() | st.booleans() | tensors()
        | st.lists(st.integers(-1, 3) | st.floats(), max_size=3)
        | st.dictionaries(st.text(max_size=3), st.integers() | tensors(), max_size=2)
    )  # fmt: skip


def edit_somewhere(tree: Any, draw: st.DrawFn) -> None:
    """Replace, delete or add one entry at any depth of the dicts and lists of `tree`."""
    parent, key, node = None, None, tree
    while isinstance(node, (dict, list)) and node and (parent is None or draw(st.booleans())):
        key = draw(st.sampled_from(sorted(node, key=str)) if isinstance(node, dict)
                   else st.integers(0, len(node) - 1))  # fmt: skip
        parent, node = node, node[key]
    if parent is None:
        return
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[key] = draw(junk())
    elif action == "delete":
        del parent[key]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=4) | st.integers(0, 99))] = draw(junk())
    else:
        parent.append(draw(junk() | st.just(parent[key])))


def optimizer_edit(states: list, draw: st.DrawFn) -> None:
    """The optimizer state with wrong tensors, a missing `step`, params added or missing, a
    group setting changed, groups or states added or removed."""
    kind = draw(st.sampled_from(["tensor", "no-step", "extra-param", "fewer-params", "setting",
                                 "groups", "states", "anywhere"]))  # fmt: skip
    state, groups = states[0]["state"], states[0]["param_groups"]
    entry = state[draw(st.sampled_from(sorted(state)))]
    group = groups[draw(st.integers(0, len(groups) - 1))]
    if kind == "tensor":
        entry[draw(st.sampled_from(sorted(entry)))] = draw(tensors() | junk())
    elif kind == "no-step":
        for each in state.values() if draw(st.booleans()) else [entry]:
            each.pop("step")
    elif kind == "extra-param":
        state[draw(st.sampled_from([999, -1, "w"]))] = dict(entry)
    elif kind == "fewer-params":
        group["params"] = group["params"][: draw(st.integers(0, len(group["params"]) - 1))]
    elif kind == "setting":
        setting = draw(st.sampled_from(sorted(group)))
        if draw(st.booleans()):
            group[setting] = draw(junk() | st.sampled_from([True, -1.0, (0.9,), (2.0, 2.0)]))
        else:
            del group[setting]
    elif kind == "groups":
        groups.append(dict(group)) if draw(st.booleans()) else groups.pop()
    elif kind == "states":
        states.append(states[0]) if draw(st.booleans()) else states.pop()
    else:
        edit_somewhere(states, draw)


def schedule_edit(schedulers: list, draw: st.DrawFn) -> None:
    """The lr schedule with a setting of another type, an attribute it does not have
    (`last_epoch`, `optimizer`, `step_update`), a long `base_values` list, or none at all."""
    kind = draw(st.sampled_from(["setting", "extra", "base_values", "count", "anywhere"]))
    schedule = schedulers[0]
    if kind == "setting":
        schedule[draw(st.sampled_from(sorted(schedule)))] = draw(junk())
    elif kind == "extra":
        schedule[draw(st.sampled_from(["last_epoch", "optimizer", "step_update"]))] = draw(junk())
    elif kind == "base_values":
        schedule["base_values"] = [1e-3] * draw(st.sampled_from([0, 1, 3, 100_000]))
    elif kind == "count":
        schedulers.append(schedule) if draw(st.booleans()) else schedulers.pop()
    else:
        edit_somewhere(schedulers, draw)


EXTRA_ENTRIES = ["hyper_parameters", "datamodule_hyper_parameters", "CIFARDataModule",
                 "Precision", "MixedPrecision", "native_amp_scaling_state"]  # fmt: skip


def resume_state_edit(checkpoint: dict, draw: st.DrawFn) -> str:
    """One edit of what a resume reads (see the section comment); returns what was edited."""
    part = draw(st.sampled_from(["epoch", "global_step", "pytorch-lightning_version", "loops",
                                 "optimizer_states", "lr_schedulers", "callbacks", "state_dict",
                                 "current_model_state", "averaging_state", "rng_states",
                                 "extra"]))  # fmt: skip
    if part in ("epoch", "global_step", "pytorch-lightning_version"):
        checkpoint[part] = draw(junk() | st.sampled_from(["0.1.0", "1.4.0", "99.0", "abc"]))
    elif part == "optimizer_states":
        optimizer_edit(checkpoint[part], draw)
    elif part == "lr_schedulers":
        schedule_edit(checkpoint[part], draw)
    elif part == "extra":
        checkpoint[draw(st.sampled_from(EXTRA_ENTRIES))] = draw(junk() | structures())
    else:
        edit_somewhere(checkpoint[part], draw)
    return part


@RESUMES
@given(data=st.data())
def test_a_fuzzed_resume_state_trains_or_fails_in_one_line(
    stateful_checkpoint, cifar100_root, data
):
    run = WORK / "resumed"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(stateful_checkpoint.parent.parent, run)
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    event(resume_state_edit(checkpoint, data.draw))
    torch.save(checkpoint, last)
    finished = json.loads((run / "metrics.json").read_text())

    try:
        metrics = resume_in_place(run, cifar100_root)
    except CifarLabError as err:
        assert "\n" not in str(err) and str(last) in str(err), str(err)
        record = json.loads((run / "metrics.json").read_text())
        assert {k: v for k, v in record.items() if k != "attempts"} == finished
        event("refused in one line")
    else:
        assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2
        event("resumed and trained")
