"""`python -m cifar_lab.corrupt`: a CIFAR-C-style set in the layout `ood=cifar10c`/`cifar100c`
reads, written reproducibly, never over a different set unless asked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import run_module

from cifar_lab.corruptions import BENCHMARK, CORRUPTIONS, EXTRA, corruption_rng
from cifar_lab.data.datasets import load_cifar
from cifar_lab.data.ood import CorruptionSet
from cifar_lab.data.subsets import balanced_subset

# the tests share one written set (a module fixture): one worker runs them all
pytestmark = pytest.mark.xdist_group("corrupt_cli")
NAMES = ["contrast", "gaussian_noise", "frost"]  # deterministic, per-pixel random, per-image random
N = 20  # of the tiny CIFAR-10's 40 test images: 2 per class


def corrupt_cli(root: Path, out: Path, *args: str, names: list[str] = NAMES, data: str = "cifar10"):
    return run_module(
        "cifar_lab.corrupt",
        f"data={data}",
        f"data.root={root}",
        "data.check_integrity=false",
        "data.download=false",
        f"corrupt.n={N}",
        f"corrupt.names=[{','.join(names)}]",
        f"corrupt.out={out}",
        f"hydra.run.dir={out.parent / 'hydra'}",
        *args,
        cwd=out.parent,
    )


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix != ".png"}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, cifar10_root: Path) -> Path:
    out = tmp_path_factory.mktemp("corrupt") / "set"
    result = corrupt_cli(cifar10_root, out)
    assert result.returncode == 0, result.stderr
    return out


def test_balanced_subset_spreads_the_choice_over_the_classes() -> None:
    labels = np.repeat(np.arange(10), [3, 5, 5, 5, 5, 5, 5, 5, 5, 7])

    chosen = balanced_subset(labels, 25, seed=0)

    assert np.array_equal(chosen, np.sort(chosen)) and len(set(chosen)) == 25
    assert np.ptp(np.bincount(labels[chosen], minlength=10)) <= 1
    assert np.array_equal(chosen, balanced_subset(labels, 25, seed=0))
    assert not np.array_equal(chosen, balanced_subset(labels, 25, seed=1))
    assert np.array_equal(balanced_subset(labels, None, seed=0), np.arange(len(labels)))


@pytest.mark.slow
def test_writes_the_requested_set_in_the_cifar_c_layout(written: Path, cifar10_root: Path) -> None:
    test = load_cifar("cifar10", cifar10_root, False, False, False)
    chosen = balanced_subset(test.labels, N, seed=0)
    images = test.images[chosen]

    assert sorted(p.name for p in written.iterdir()) == sorted(
        [f"{name}.npy" for name in NAMES] + ["labels.npy", "manifest.json", "corruptions.png"]
    )
    labels = np.load(written / "labels.npy")
    assert np.issubdtype(labels.dtype, np.integer)
    assert np.array_equal(labels, np.tile(test.labels[chosen], 5))
    assert np.bincount(labels[:N], minlength=10).tolist() == [2] * 10
    for name in NAMES:
        blocks = np.load(written / f"{name}.npy")
        assert blocks.dtype == np.uint8 and blocks.shape == (5 * N, 32, 32, 3)
        for severity in range(1, 6):  # block s is severity s of the chosen images, in order
            rng = corruption_rng(0, name, severity)
            expected = CORRUPTIONS[name](images, severity, rng)
            assert np.array_equal(blocks[(severity - 1) * N : severity * N], expected)
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["n"] == N and manifest["seed"] == 0 and manifest["dataset"] == "cifar10"
    assert manifest["complete"] is True
    assert manifest["corruptions"]["contrast"][4] == {"factor": 0.15}


@pytest.mark.slow
def test_the_same_seed_twice_writes_identical_files(written: Path, cifar10_root: Path) -> None:
    again = written.parent / "again"

    result = corrupt_cli(cifar10_root, again)

    assert result.returncode == 0, result.stderr
    assert files(again) == files(written)


@pytest.mark.slow
def test_a_different_set_is_refused_unless_overwrite(written: Path, cifar10_root: Path) -> None:
    out = written.parent / "replace"
    shutil.copytree(written, out)
    before = files(out)

    refused = corrupt_cli(cifar10_root, out, "corrupt.seed=1")

    assert refused.returncode != 0
    assert "corrupt.overwrite=true" in refused.stderr and "['seed']" in refused.stderr
    assert files(out) == before

    replaced = corrupt_cli(cifar10_root, out, "corrupt.seed=1", "corrupt.overwrite=true")

    assert replaced.returncode == 0, replaced.stderr
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1
    assert files(out)["gaussian_noise.npy"] != before["gaussian_noise.npy"]


@pytest.mark.slow
def test_a_rerun_after_a_kill_writes_only_the_missing_files(
    written: Path, cifar10_root: Path
) -> None:
    out = written.parent / "resume"
    shutil.copytree(written, out)
    (out / "frost.npy").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    untouched = (out / "contrast.npy").stat().st_mtime_ns

    result = corrupt_cli(cifar10_root, out)

    assert result.returncode == 0, result.stderr
    assert files(out) == files(written)
    assert (out / "contrast.npy").stat().st_mtime_ns == untouched


@pytest.mark.slow
def test_an_unknown_name_is_a_one_line_error_listing_all_19(
    tmp_path: Path, cifar100_root: Path
) -> None:
    result = corrupt_cli(cifar100_root, tmp_path / "set", names=["fog", "bogus"], data="cifar100")

    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bogus" in lines[0]
    assert all(name in lines[0] for name in CORRUPTIONS)
    assert not (tmp_path / "set").exists()


@pytest.mark.slow
def test_the_projects_cifar_c_reader_reads_the_set(written: Path) -> None:
    reader = CorruptionSet(str(written), BENCHMARK, EXTRA, num_classes=10, name="cifar10c")

    read = reader.files()

    assert sorted(f.name for f in read) == sorted(NAMES)
    assert all(f.per_severity == N for f in read)
    assert reader.labels(read).shape == (5 * N,)
