"""Mistakes a new user makes on the real command line: one line naming the fix, exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from cifar_files import write_cifar
from support import run_module


def md5_failure(tmp_path: Path) -> list[str]:
    root = write_cifar(tmp_path / "rebuilt", "cifar100", n_train=10, n_test=10)
    return [f"data.root={root}", "data.download=true", "data.check_integrity=true"]


def other_cifar(tmp_path: Path) -> list[str]:
    root = write_cifar(tmp_path / "c10", "cifar10", n_train=10, n_test=10)
    return [f"data.root={root}", "data.download=false"]


def run_folder_as_ckpt(tmp_path: Path) -> list[str]:
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "best.ckpt").write_bytes(b"")
    return [f"ckpt={tmp_path / 'run'}"]


CASES = {
    # id: (entry point, arguments (or a function of tmp_path giving them), the fix it names)
    "predict_without_ckpt": ("cifar_lab.predict", [], "add ckpt=outputs/"),
    "md5_failure_with_download": ("cifar_lab.train", md5_failure, "data.check_integrity=false"),
    "other_cifar_under_root": ("cifar_lab.train", other_cifar, "add data=cifar10"),
    "run_folder_as_ckpt": ("cifar_lab.predict", run_folder_as_ckpt, "checkpoints/best.ckpt"),
    "plus_on_a_group": ("cifar_lab.train", ["+data=cifar10"], "use data=cifar10"),
    "plus_on_experiment": ("cifar_lab.train", ["+experiment=smoke"], "use experiment=smoke"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_naming_the_fix(case: str, tmp_path: Path) -> None:
    module, args, fix = CASES[case]
    args = args(tmp_path) if callable(args) else args
    if module == "cifar_lab.train":
        args = [*args, "logger=none"]

    result = run_module(module, *args, cwd=tmp_path)

    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower()]
    assert errors == [lines[-1]] and lines[-1].startswith("error: ") and fix in lines[-1], lines
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_data_that_fails_to_load_leaves_no_logger_run(tmp_path: Path) -> None:
    """The data is read before the logger starts, so a typo in data.root leaves no wandb run
    (an offline run folder a user would have to find and delete)."""
    run_dir = tmp_path / "run"
    result = run_module(
        "cifar_lab.train", "experiment=smoke", f"data.root={tmp_path / 'no-data'}",
        "data.download=false", "logger=wandb", f"hydra.run.dir={run_dir}", cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1 and "not found" in result.stderr.strip().splitlines()[-1]
    assert not (run_dir / "wandb").exists() and not list(tmp_path.rglob("offline-run-*"))


@pytest.mark.slow
def test_a_user_error_inside_a_multirun_is_one_line_per_job_without_a_traceback(
    tmp_path: Path,
) -> None:
    result = run_module(
        "cifar_lab.train", "-m", "experiment=smoke", f"data.root={tmp_path / 'no-data'}",
        "data.download=false", "logger=none", "data.batch_size=16,32", cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    failed = lines.index(next(line for line in lines if line.startswith("Error executing job")))
    assert lines[failed + 1].startswith("error: cifar100 not found: ")
    assert "Traceback" not in result.stderr
    # both jobs ran and recorded their failure; the sweep goes on past a failed job
    records = sorted(tmp_path.glob("outputs/smoke/multirun/*/*/metrics.json"))
    assert len(records) == 2 and all('"failed"' in record.read_text() for record in records)
