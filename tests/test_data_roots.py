"""Where the data is: the folders a user may name as data.root, and what an error about them
tells each entry point to do."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from cifar_files import write_cifar
from hydra import compose, initialize_config_dir
from support import CONF_DIR, TINY_CONVNET

from cifar_lab.build import build_datamodule
from cifar_lab.data.datasets import load_cifar
from cifar_lab.errors import CifarLabError
from cifar_lab.predict import predict
from cifar_lab.train import train


def test_the_inner_cifar_folder_is_recognised_as_data_root(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, "cifar10", n_train=20, n_test=10)

    inner = load_cifar("cifar10", root / "cifar-10-batches-py", False, False, False)

    assert len(inner) == 10 and inner.classes[0] == "class_000"


def test_predict_on_the_other_cifar_says_where_to_point_data_root(
    train_cfg, cifar10_root: Path, cifar100_root: Path, tmp_path: Path
) -> None:
    trained = train(
        train_cfg("data=cifar10", *TINY_CONVNET, "logger=none", "test=false", root=cifar10_root)
    )
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt={trained['best_model_path']}",
                f"paths.output_dir={tmp_path / 'out'}",
                f"data.root={cifar100_root}",  # holds cifar-100-python only
                "data.download=false",
                "data.check_integrity=false",
            ],
        )

    with pytest.raises(CifarLabError) as err:
        predict(cfg)

    message = str(err.value)
    assert "point data.root at a folder holding cifar-10-batches-py" in message
    assert "\n" not in message


def test_a_batch_limit_on_a_class_sorted_split_still_covers_every_class(
    train_cfg, tmp_path: Path
) -> None:
    root = write_cifar(tmp_path, "cifar10", n_train=100, n_test=40)
    test_file = root / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(test_file.read_bytes())
    order = np.argsort(batch["labels"], kind="stable")  # sorted by class, as some rebuilds are
    batch["data"], batch["labels"] = batch["data"][order], np.asarray(batch["labels"])[order]
    test_file.write_bytes(pickle.dumps(batch))
    datamodule = build_datamodule(train_cfg("data=cifar10", "data.val_fraction=0", root=root))
    datamodule.setup("fit")

    first_test = next(iter(datamodule.test_dataloader()))[1]  # what limit_test_batches=1 scores
    first_val = next(iter(datamodule.val_dataloader()))[1]

    assert sorted(set(first_test.tolist())) == list(range(10))
    assert sorted(set(first_val.tolist())) == list(range(10))


def test_test_labels_beyond_the_classes_fail_before_any_epoch(train_cfg, tmp_path: Path) -> None:
    root = write_cifar(tmp_path, "cifar10", n_train=100, n_test=40)
    test_file = root / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(test_file.read_bytes())
    batch["labels"][-1] = 10  # one label past CIFAR-10's classes
    test_file.write_bytes(pickle.dumps(batch))
    cfg = train_cfg("data=cifar10", *TINY_CONVNET, "logger=none", root=root)

    with pytest.raises(
        CifarLabError, match=r"test labels in .* go up to 10 but data.num_classes=10"
    ):
        train(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()  # found before fitting
