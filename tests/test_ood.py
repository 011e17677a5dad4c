"""OOD readers (leaderboard and CIFAR-C layouts, tiny files in tmp_path), their errors, the
downloads (fetched from local file:// URLs, never the network) and the report arithmetic."""

from __future__ import annotations

import re
import shutil
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.utils
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from ood_files import LEADERBOARD_NAMES, random_images, write_corruption_set, write_leaderboard
from support import compose_config

import cifar_lab.data.datasets
from cifar_lab.data.ood import CorruptionSet, LeaderboardSet
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.tables import (
    corruption_errors,
    read_severity_table,
    severity_metrics,
    severity_summary,
    submission_rows,
    write_severity_table,
)


def ood_set(name: str, root: Path, *overrides: str) -> LeaderboardSet | CorruptionSet:
    """The set as `predict` builds it from conf/ood/<name>.yaml."""
    cfg = compose_config(
        "predict", [f"ood={name}", f"ood.root={root}", "paths.output_dir=.", *overrides]
    )
    return instantiate(cfg.ood)


def cifar_c(root: Path, names: list[str], per_severity: int = 4, num_classes: int = 100) -> Path:
    n = 5 * per_severity
    labels = np.tile(np.arange(per_severity) % num_classes, 5)  # one block per severity
    return write_corruption_set(root, {c: random_images(n, i) for i, c in enumerate(names)}, labels)


# --- reading ------------------------------------------------------------------------------
def test_leaderboard_reads_all_19_files_memory_mapped(tmp_path):
    write_leaderboard(tmp_path, per_severity=3)

    files = ood_set("leaderboard", tmp_path).files()

    assert [f.name for f in files] == LEADERBOARD_NAMES
    assert all(f.per_severity == 3 for f in files)
    images = files[7].open()
    assert isinstance(images, np.memmap)
    np.testing.assert_array_equal(images, random_images(15, seed=7))


def test_severity_blocks_are_consecutive_runs_of_n_images(tmp_path):
    write_leaderboard(tmp_path, per_severity=3, names=["distortion00"])

    (file,) = ood_set("leaderboard", tmp_path, "ood.names=[distortion00]").files()

    assert file.severity_slices() == [
        slice(0, 3),
        slice(3, 6),
        slice(6, 9),
        slice(9, 12),
        slice(12, 15),
    ]


def test_cifar100c_lists_15_benchmark_and_19_corruptions_and_reads_those_present(tmp_path):
    cifar_c(tmp_path, ["fog", "saturate"])

    ood = ood_set("cifar100c", tmp_path)
    files = ood.files()

    assert len(ood.benchmark) == 15 and len(ood.corruptions) == 19
    assert {"speckle_noise", "gaussian_blur", "spatter", "saturate"} == set(ood.corruptions) - set(
        ood.benchmark
    )
    assert [f.name for f in files] == ["fog", "saturate"]
    assert ood.labels(files).dtype == np.int64


def test_cifar10c_config_expects_10_classes(tmp_path):
    cifar_c(tmp_path, ["fog"], per_severity=20, num_classes=10)

    ood = ood_set("cifar10c", tmp_path)

    assert ood.num_classes == 10
    assert ood.labels(ood.files()).max() == 9


# --- errors -------------------------------------------------------------------------------
def test_missing_leaderboard_file_says_which_where_and_how_to_get_it(tmp_path):
    write_leaderboard(tmp_path, per_severity=2)
    (tmp_path / "distortion05.npy").unlink()

    with pytest.raises(CifarLabError) as err:
        ood_set("leaderboard", tmp_path).files()

    message = str(err.value)
    assert "distortion05.npy not found" in message and str(tmp_path) in message
    assert "ood.download=true" in message and "\n" not in message


def test_cifar_c_without_any_corruption_file_says_how_to_get_it(tmp_path):
    with pytest.raises(
        CifarLabError, match=r"no cifar100c corruption files in .*ood.download=true"
    ):
        ood_set("cifar100c", tmp_path).files()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((10, 32, 32), np.uint8), r"shape \(10, 32, 32\) uint8 .* expected"),
        (np.zeros((10, 32, 32, 3), np.float32), r"shape \(10, 32, 32, 3\) float32 .* expected"),
        (np.zeros((12, 32, 32, 3), np.uint8), "12 images, not a positive multiple of 5"),
    ],
)
def test_malformed_images_are_rejected_with_shape_and_fix(tmp_path, array, message):
    np.save(tmp_path / "distortion00.npy", array)

    with pytest.raises(CifarLabError, match=message):
        ood_set("leaderboard", tmp_path, "ood.names=[distortion00]").files()


def test_a_file_that_is_not_npy_is_rejected(tmp_path):
    (tmp_path / "fog.npy").write_bytes(b"not numpy")

    with pytest.raises(CifarLabError, match="fog.npy is not a readable .npy array"):
        ood_set("cifar100c", tmp_path).files()


def test_labels_out_of_range_name_the_range_and_the_right_set(tmp_path):
    cifar_c(tmp_path, ["fog"], per_severity=20, num_classes=100)
    ood = ood_set("cifar10c", tmp_path)

    with pytest.raises(
        CifarLabError, match=r"range over \[0, 19\] but .* 10 classes .*ood=cifar100c"
    ):
        ood.labels(ood.files())


def test_labels_of_another_length_are_rejected(tmp_path):
    cifar_c(tmp_path, ["fog"])
    np.save(tmp_path / "labels.npy", np.zeros(7, np.uint8))
    ood = ood_set("cifar100c", tmp_path)

    with pytest.raises(CifarLabError, match="has 7 labels but the corruption files hold 20"):
        ood.labels(ood.files())


def test_missing_labels_file_is_named(tmp_path):
    cifar_c(tmp_path, ["fog"])
    (tmp_path / "labels.npy").unlink()
    ood = ood_set("cifar100c", tmp_path)

    with pytest.raises(CifarLabError, match=f"labels.npy not found in {tmp_path}"):
        ood.labels(ood.files())


# --- downloads (a fake fetch copies from a local folder: tests never touch the network) ----
class FakeServer:
    """Stands in for torchvision's `download_url`: serves `folder/<basename of url>`."""

    def __init__(self, folder: Path):
        self.folder, self.urls = folder, []

    def __call__(self, url: str, root: str, filename: str | None = None, md5: str | None = None):
        self.urls.append(url)
        source = self.folder / url.rsplit("/", 1)[-1]
        if not source.is_file():
            raise urllib.error.URLError(f"HTTP Error 404: {url}")
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, Path(root) / (filename or source.name))


@pytest.fixture
def server(tmp_path, monkeypatch) -> FakeServer:
    fake = FakeServer(tmp_path / "server")
    monkeypatch.setattr(cifar_lab.data.datasets, "download_url", fake)
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake)
    return fake


def test_leaderboard_download_fetches_each_missing_file_from_the_folder_url(tmp_path, server):
    write_leaderboard(server.folder, per_severity=2, names=LEADERBOARD_NAMES[:3])
    root = tmp_path / "data"
    root.mkdir()
    (root / "distortion00.npy.part").write_bytes(b"left by an interrupted download")
    names = "ood.names=[" + ",".join(LEADERBOARD_NAMES[:3]) + "]"
    url = "https://example.org/ood-test/"

    files = ood_set("leaderboard", root, names, "ood.download=true", f"ood.url={url}").files()

    assert server.urls == [f"{url}{n}.npy" for n in LEADERBOARD_NAMES[:3]]
    assert [f.name for f in files] == LEADERBOARD_NAMES[:3]
    np.testing.assert_array_equal(files[0].open(), random_images(10, seed=0))
    assert sorted(p.name for p in root.iterdir()) == [f"{n}.npy" for n in LEADERBOARD_NAMES[:3]]


def test_failed_leaderboard_download_names_the_url_and_leaves_no_file(tmp_path, server):
    root = tmp_path / "data"

    with pytest.raises(
        CifarLabError, match="could not download https://example.org/x/distortion00"
    ):
        ood_set("leaderboard", root, "ood.download=true", "ood.url=https://example.org/x").files()
    assert not list(root.glob("*.npy"))


def test_download_without_url_says_to_set_it(tmp_path):
    with pytest.raises(CifarLabError, match="ood.url is not set"):
        ood_set("leaderboard", tmp_path, "ood.download=true", "ood.url=null").files()


def test_cifar_c_download_unpacks_the_archive_into_root(tmp_path, server):
    staged = cifar_c(tmp_path / "stage" / "CIFAR-100-C", ["fog", "snow"])
    server.folder.mkdir()
    with tarfile.open(server.folder / "CIFAR-100-C.tar", "w") as tar:
        tar.add(staged, arcname="CIFAR-100-C")
    root = tmp_path / "data" / "CIFAR-100-C"

    ood = ood_set("cifar100c", root, "ood.download=true", "ood.md5=null")
    files = ood.files()

    assert server.urls == ["https://zenodo.org/records/3555552/files/CIFAR-100-C.tar"]
    assert [f.name for f in files] == ["snow", "fog"]  # benchmark order
    assert sorted(p.name for p in root.iterdir()) == ["fog.npy", "labels.npy", "snow.npy"]


# --- reports ------------------------------------------------------------------------------
def test_submission_ids_run_over_severity_then_index():
    rows = list(submission_rows("distortion07", np.arange(10)))

    assert [r[0] for r in rows[:3]] == ["distortion07_1_0", "distortion07_1_1", "distortion07_2_0"]
    assert rows[-1] == ("distortion07_5_1", 9)


def test_severity_metrics_name_every_corruption_severity_and_mean():
    table = {"fog": [0.9, 0.8, 0.7, 0.6, 0.5], "spatter": [1.0, 1.0, 1.0, 1.0, 0.0]}
    groups = {"benchmark": ["fog"], "all": ["fog", "spatter"]}

    metrics = severity_metrics("ood/acc", table, severity_summary(table, groups))

    assert metrics["ood/acc/fog/3"] == 0.7
    assert metrics["ood/acc/fog/mean"] == pytest.approx(0.7)
    assert metrics["ood/acc/mean_benchmark"] == pytest.approx(0.7)
    assert metrics["ood/acc/mean_all/5"] == pytest.approx(0.25)
    assert metrics["ood/acc/mean_all"] == pytest.approx(0.75)


def test_corruption_error_is_summed_error_over_the_reference_models(tmp_path):
    ours = {"fog": [0.9, 0.8, 0.7, 0.6, 0.5]}
    reference_file = write_severity_table(
        tmp_path / "ref.csv", {"fog": [0.5] * 5, "snow": [0.1] * 5}, {"all": ["fog", "snow"]}
    )

    errors = corruption_errors(ours, read_severity_table(reference_file), ["fog", "snow"])

    assert errors == {"fog": pytest.approx((0.1 + 0.2 + 0.3 + 0.4 + 0.5) / 2.5)}


def test_reference_csv_without_severity_columns_is_rejected(tmp_path):
    (tmp_path / "ref.csv").write_text("corruption,acc\nfog,0.5\n")

    with pytest.raises(CifarLabError, match="lacks columns"):
        read_severity_table(tmp_path / "ref.csv")


# --- a subset ----------------------------------------------------------------------------
def test_a_subset_scores_the_named_corruptions_and_n_balanced_images_per_severity(tmp_path):
    cifar_c(tmp_path, ["fog", "snow", "frost"], per_severity=20, num_classes=10)
    ood = ood_set("cifar10c", tmp_path, "ood.names=[snow,fog]", "ood.per_severity=5")

    sets = ood.image_sets()

    assert [s.name for s in sets] == ["snow", "fog"]  # the config's order
    fog = sets[1]
    assert fog.num_images == 25 and [b.stop - b.start for b in fog.blocks] == [5] * 5
    blocks = [fog.labels[b] for b in fog.blocks]
    assert all(np.array_equal(block, blocks[0]) for block in blocks)  # the same images per block
    assert len(set(blocks[0].tolist())) == 5  # five classes, one image each
    whole = np.load(tmp_path / "fog.npy")
    first = np.flatnonzero((whole[:20] == fog.read(0, 1)[0]).all(axis=(1, 2, 3)))
    assert first.size == 1 and np.array_equal(fog.read(5, 6)[0], whole[20 + first[0]])


def test_a_subset_is_the_same_for_the_same_seed(tmp_path):
    cifar_c(tmp_path, ["fog"], per_severity=20, num_classes=10)

    def labels(*overrides):
        return ood_set("cifar10c", tmp_path, "ood.per_severity=4", *overrides).image_sets()[0]

    assert np.array_equal(labels().read(0, 4), labels().read(0, 4))
    assert not np.array_equal(labels().read(0, 4), labels("ood.seed=1").read(0, 4))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("ood.names=[fgo]", r"ood.names has 'fgo', not a corruption .* \(did you mean fog\?\)"),
        ("ood.per_severity=0", r"ood.per_severity=0 is not a number of images"),
        ("ood.per_severity=21", r"ood.per_severity=21 is out of range; expected 1..20"),
    ],
)  # fmt: skip
def test_a_bad_subset_is_one_line(tmp_path, override, expected):
    cifar_c(tmp_path, ["fog"], per_severity=20, num_classes=10)

    with pytest.raises((CifarLabError, InstantiationException)) as err:
        ood_set("cifar10c", tmp_path, override).image_sets()

    cause = err.value.__cause__ if isinstance(err.value, InstantiationException) else err.value
    assert re.search(expected, str(cause)) and "\n" not in str(cause)
