"""A checkpoint from someone else is data: the paths, folders and scores it stores never make
cifar-lab delete, copy, create or report anything outside the run (issue: crafted checkpoints).
A finished run's record is never rewritten by a later attempt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from support import TINY_CONVNET, predict_cfg

from cifar_lab.errors import CifarLabError
from cifar_lab.predict import predict
from cifar_lab.train import train

FIT = [*TINY_CONVNET, "logger=none", "test=false"]


@pytest.fixture
def finished_run(train_cfg, tmp_path: Path) -> Path:
    """A finished one-epoch run in tmp_path/run."""
    train(train_cfg(*FIT))
    return tmp_path / "run"


def edit_checkpoint(path: Path, **stored: object) -> None:
    """Put `stored` into every ModelCheckpoint state of the checkpoint at `path`."""
    checkpoint = torch.load(path, weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("ModelCheckpoint"):
            state.pop("dirpath", None)
            state.update(stored)
    torch.save(checkpoint, path)


def test_stored_paths_outside_the_run_are_never_deleted(train_cfg, finished_run, tmp_path):
    victim_dir, victim_file = tmp_path / "victim_dir", tmp_path / "victim.txt"
    (victim_dir / "inner").mkdir(parents=True)
    (victim_dir / "inner" / "data.txt").write_text("keep me")
    victim_file.write_text("keep me too")
    escape = finished_run / "checkpoints" / ".." / ".."
    edit_checkpoint(
        finished_run / "checkpoints" / "last.ckpt",
        best_model_path=str(escape / "victim_dir"),
        kth_best_model_path=str(escape / "victim.txt"),
        last_model_path=str(escape / "victim.txt"),
        best_k_models={str(escape / "victim_dir"): torch.tensor(-1.0)},
        best_model_score=torch.tensor(-1.0),
        kth_value=torch.tensor(-1.0),
    )

    metrics = train(train_cfg(*FIT, "ckpt_path=auto", "trainer.max_epochs=2"))

    assert (victim_dir / "inner" / "data.txt").read_text() == "keep me"
    assert victim_file.read_text() == "keep me too"
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2
    assert Path(metrics["best_model_path"]).parent == finished_run / "checkpoints"


@pytest.mark.parametrize("where", ["outside", "inside_the_run"])
def test_a_stored_best_that_is_not_a_checkpoint_of_this_run_is_not_carried(
    train_cfg, finished_run, tmp_path, where
):
    secret = (tmp_path if where == "outside" else finished_run) / "secret.txt"
    secret.write_text("password")
    last = finished_run / "checkpoints" / "last.ckpt"
    edit_checkpoint(last, best_model_path=str(secret), best_model_score=torch.tensor(99.0))
    cfg = train_cfg(*TINY_CONVNET, "logger=none", f"ckpt_path={last}", "trainer.max_epochs=2")
    cfg.paths.output_dir = str(tmp_path / "resumed")

    metrics = train(cfg)

    assert not (tmp_path / "resumed" / "checkpoints" / "secret.txt").exists()
    assert metrics["best_model_score"] != 99.0 and metrics["status"] == "finished"
    assert Path(metrics["best_model_path"]).name == "best.ckpt" and "test/acc" in metrics


def test_predict_never_creates_or_downloads_into_a_folder_the_checkpoint_names(
    finished_run, tmp_path, cifar100_root, monkeypatch
):
    chosen = tmp_path / "chosen_by_the_checkpoint"
    path = finished_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["cifar_lab"]["config"]["data"].update(root=str(chosen), download=True)
    torch.save(checkpoint, path)
    monkeypatch.setenv("CIFAR_LAB_DATA", str(cifar100_root))  # this machine's default

    metrics = predict(predict_cfg(path, tmp_path / "out"))

    assert not chosen.exists()
    assert metrics["status"] == "finished" and "clean/acc" in metrics


def test_predict_refuses_non_finite_weights_in_one_line(finished_run, tmp_path, cifar100_root):
    path = finished_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    name = next(k for k in checkpoint["state_dict"] if k.startswith("net."))
    checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], float("nan"))
    torch.save(checkpoint, path)

    with pytest.raises(CifarLabError, match="NaN or infinite weights") as err:
        predict(predict_cfg(path, tmp_path / "out", f"data.root={cifar100_root}"))
    assert "\n" not in str(err.value)


# --- a finished record stays ----------------------------------------------------------------
def test_resuming_a_finished_run_in_place_says_so_and_rewrites_nothing(train_cfg, finished_run):
    record = (finished_run / "metrics.json").read_bytes()
    csv_rows = (finished_run / "csv").exists()

    with pytest.raises(CifarLabError, match="holds a finished run of 1 epochs") as err:
        train(train_cfg(*FIT, "ckpt_path=auto"))

    assert "trainer.max_epochs above 1" in str(err.value)
    after = json.loads((finished_run / "metrics.json").read_text())
    assert after["status"] == "finished" and after["val/acc"] == json.loads(record)["val/acc"]
    assert (finished_run / "csv").exists() == csv_rows
    assert after["attempts"][-1]["status"] == "failed"


def test_a_refused_resume_keeps_the_finished_record(train_cfg, finished_run):
    before = json.loads((finished_run / "metrics.json").read_text())
    last = finished_run / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    last.write_bytes(bytes(data))

    with pytest.raises(CifarLabError, match="damaged|not a readable"):
        train(train_cfg(*FIT, "ckpt_path=auto", "trainer.max_epochs=3"))

    after = json.loads((finished_run / "metrics.json").read_text())
    kept = {k: v for k, v in after.items() if k != "attempts"}
    assert kept == before
    (attempt,) = after["attempts"]
    assert attempt["status"] == "failed"
    assert "damaged" in attempt["error"] or "not a readable" in attempt["error"]


def test_resuming_a_finished_run_with_more_epochs_keeps_the_earlier_record(train_cfg, finished_run):
    before = json.loads((finished_run / "metrics.json").read_text())

    metrics = train(train_cfg(*FIT, "ckpt_path=auto", "trainer.max_epochs=2"))

    after = json.loads((finished_run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2 and after["status"] == "finished"
    assert after["earlier"][-1] == before


@pytest.mark.parametrize(
    ("group", "key", "value", "expected"),
    [
        ("data", "num_classes", "ten", r"stores data.num_classes='ten'; expected an integer"),
        ("data", "img_size", 10**6, r"stores data.img_size=1000000; expected an integer in"),
        ("model", "widths", [200_000] * 5, r"network of [\d,]+ parameters .* refusing to allocate"),
        ("model", "widths", "abc", "stores a model config that builds no network"),
        ("model", "checkpoint_path", "/etc/passwd", "stores model.checkpoint_path, which would"),
        ("augment", "mix", {"mixup_alpha": "x", "prob": 1.0}, r"augment.mix.mixup_alpha='x' is "
         r"invalid; expected a number >= 0"),
        ("augment", "mix", "on", r"stores augment.mix='on', not a group of settings or null"),
        ("data", "num_classes", None, r"stores data.num_classes=None; expected an integer"),
        ("optim", "optimizer", None, r"stores optim.optimizer.lr=None; expected a number"),
        ("optim", "optimizer", {}, r"stores optim.optimizer.lr=None; expected a number"),
    ],
    ids=["text-classes", "huge-images", "huge-widths", "text-widths", "file-to-load", "text-mix",
         "mix-not-a-group", "no-classes", "no-optimizer", "optimizer-without-lr"],
)  # fmt: skip
def test_a_crafted_stored_value_is_one_line_before_anything_is_built(
    finished_run, tmp_path, cifar100_root, group, key, value, expected
):
    path = finished_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["cifar_lab"]["config"][group][key] = value
    torch.save(checkpoint, path)

    with pytest.raises(CifarLabError, match=expected) as err:
        predict(predict_cfg(path, tmp_path / "out", f"data.root={cifar100_root}"))
    assert "\n" not in str(err.value)


def test_a_resume_refuses_a_crafted_network_size(train_cfg, finished_run) -> None:
    last = finished_run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    checkpoint["cifar_lab"]["config"]["model"]["widths"] = [200_000] * 5
    torch.save(checkpoint, last)

    with pytest.raises(CifarLabError, match="refusing to allocate"):
        train(train_cfg(*FIT, "ckpt_path=auto", "trainer.max_epochs=2"))
    assert json.loads((finished_run / "metrics.json").read_text())["status"] == "finished"
