"""Each entry point's `--help` lists the groups it uses, with the options that exist."""

from __future__ import annotations

import re

import pytest
from support import CONF_DIR, compose_config

from cifar_lab.cli import config_groups

HYDRA_GROUPS = {"hydra/launcher": {"basic"}}  # Hydra's own option beside ours


def listed_groups(config_name: str) -> dict[str, set[str]]:
    cfg = compose_config(config_name, return_hydra_config=True)
    lines = re.findall(r"^  ([\w/]+): (.+)$", cfg.hydra.help.template, flags=re.M)
    return {group: set(options.split(", ")) for group, options in lines}


@pytest.mark.parametrize("config_name", ["train", "predict", "bench", "show_augment", "corrupt"])
def test_help_lists_the_groups_of_its_entry_point_with_their_options(config_name: str) -> None:
    listed = listed_groups(config_name)

    used = config_groups(config_name) - {"paths", "hydra"}
    assert set(listed) - {"hydra/launcher"} == used
    for group, options in listed.items():
        files = {path.stem for path in (CONF_DIR / group).glob("*.yaml")}
        assert options == files | HYDRA_GROUPS.get(group, set()), group


def test_train_help_does_not_offer_the_groups_of_predict_or_bench() -> None:
    assert not {"tta", "ood", "bench"} & set(listed_groups("train"))
