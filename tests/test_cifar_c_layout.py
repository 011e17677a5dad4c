"""One CIFAR-C layout (`cifar_lab.data.cifar_c.CIFAR_C`): the writer, the reader, the tables,
the corruption table and the `ood` configs all follow it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from support import CONF_DIR

from cifar_lab.corruptions import CORRUPTIONS, get_corruptions
from cifar_lab.corruptions.writer import write_corruption
from cifar_lab.data.cifar_c import CIFAR_C
from cifar_lab.data.ood import check_images
from cifar_lab.errors import CifarLabError
from cifar_lab.evaluation.tables import submission_rows

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_lab"


def test_severities_is_defined_once_in_the_package() -> None:
    places = [
        path.relative_to(PACKAGE).as_posix()
        for path in sorted(PACKAGE.rglob("*.py"))
        for line in path.read_text().splitlines()
        if re.match(r"\s*SEVERITIES\s*(:[^=]+)?=", line)
    ]
    assert places == ["data/cifar_c.py"]


def test_the_writers_severity_blocks_are_the_readers(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, *CIFAR_C.image_shape), np.uint8)
    path = tmp_path / CIFAR_C.file_name("contrast")

    write_corruption(path, CORRUPTIONS["contrast"], images, seed=0, batch_size=2)
    read = check_images(path)

    assert read.per_severity == len(images)
    written = read.open()
    for severity, block in zip(CIFAR_C.severities, read.severity_slices(), strict=True):
        assert block == CIFAR_C.block(severity, len(images))
        expected = CORRUPTIONS["contrast"](images, severity)
        np.testing.assert_array_equal(written[block], expected)


def test_submission_ids_name_the_severity_of_the_block_they_come_from() -> None:
    per_severity = 2
    predictions = np.arange(CIFAR_C.images_per_file(per_severity))

    rows = list(submission_rows("fog", predictions))

    for severity in CIFAR_C.severities:
        block = CIFAR_C.block(severity, per_severity)
        ids = [row_id for row_id, _ in rows[block]]
        assert ids == [f"fog_{severity}_{i}" for i in range(per_severity)]


def test_the_families_split_the_benchmark_and_extra_corruptions() -> None:
    members = [name for family in CIFAR_C.families.values() for name in family]

    assert sorted(members) == sorted(CIFAR_C.corruptions)
    assert len(set(CIFAR_C.corruptions)) == 19
    assert set(CIFAR_C.families) == {"noise", "blur", "weather", "digital"}
    for family, names in CIFAR_C.families.items():
        assert len([n for n in names if n in CIFAR_C.extra]) == 1, family


def test_the_corruption_table_holds_the_layouts_corruptions_in_its_order() -> None:
    assert tuple(c.name for c in get_corruptions()) == CIFAR_C.corruptions
    assert CORRUPTIONS["fog"].family == "weather" and CORRUPTIONS["fog"].benchmark
    assert not CORRUPTIONS["saturate"].benchmark


def test_the_manifest_text_of_the_layout_is_that_of_sets_already_written() -> None:
    # A rerun compares manifests; a changed text would refuse every set written before.
    assert CIFAR_C.description() == (
        "{corruption}.npy uint8 (5*n, 32, 32, 3), images [(s-1)*n, s*n) at severity s; "
        "labels.npy int64 (5*n,), the n test labels repeated per severity"
    )


@pytest.mark.parametrize("severity", [0, 6, "1"])
def test_a_severity_outside_the_layout_is_a_one_line_error(severity) -> None:
    with pytest.raises(CifarLabError, match=r"severity .* out of range; expected one of \[1,"):
        CIFAR_C.block(severity, 10)


def compose_ood(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("predict", overrides=[f"ood={name}", "paths.output_dir=.", *overrides])
    return instantiate(cfg.ood)


@pytest.mark.parametrize("name", ["cifar100c", "cifar10c"])
def test_the_cifar_c_configs_read_the_layouts_lists(name: str) -> None:
    ood = compose_ood(name)

    assert ood.benchmark == list(CIFAR_C.benchmark)
    assert ood.corruptions == list(CIFAR_C.corruptions)


def test_the_benchmark_list_can_still_be_chosen_on_the_command_line() -> None:
    ood = compose_ood("cifar100c", "ood.benchmark=[fog,snow]", "ood.extra=[saturate]")

    assert ood.benchmark == ["fog", "snow"]
    assert ood.corruptions == ["fog", "snow", "saturate"]
