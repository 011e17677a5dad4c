"""`cifar_lab.report` on multirun folders laid out as Hydra and `train` write them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cifar_lab.report import main
from cifar_lab.sweeps.sweep_report import plot, read_job, write_sweep_report

CSV_HEADER = ["epoch", "step", "val/acc", "val/acc_best", "val/loss"]


def write_job(
    sweep: Path,
    name: str,
    overrides: list[str],
    val_acc: list[float],
    status: str | None = "finished",
    error: str | None = None,
    direction: str | None = None,
) -> Path:
    """A job folder: .hydra/{overrides,config,hydra}.yaml, csv/metrics.csv and (unless status is
    None, a job still running) metrics.json."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save({"optimized_metric": "val/acc_best"}, job / ".hydra" / "config.yaml")
    sweeper = {"direction": direction} if direction else {"max_batch_size": None}
    OmegaConf.save({"hydra": {"sweeper": sweeper}}, job / ".hydra" / "hydra.yaml")
    (job / "csv").mkdir()
    with (job / "csv" / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_HEADER)
        for epoch, acc in enumerate(val_acc):
            writer.writerow([epoch, 10 * epoch + 9, acc, max(val_acc[: epoch + 1]), 2.0 - acc])
    if status is not None:
        metrics = {"status": status, "epochs_completed": len(val_acc)}
        if status == "finished":
            metrics.update({"val/acc": val_acc[-1], "val/acc_best": max(val_acc)})
            metrics["val/loss"] = 2.0 - val_acc[-1]
        if error:
            metrics["error"] = error
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Five jobs of a drop_rate x smoothing grid: three finished, one failed, one running."""
    root = tmp_path / "multirun"
    common = ["data.root=/data", "trainer=cpu"]
    write_job(root, "0", ["model.drop_rate=0.2", "loss.label_smoothing=0", *common], [0.3, 0.5])
    write_job(root, "1", ["model.drop_rate=0.5", "loss.label_smoothing=0", *common], [0.4, 0.7])
    write_job(
        root, "2", ["model.drop_rate=0.2", "loss.label_smoothing=0.1", *common], [0.1],
        status="failed", error="ValueError: Optimizer bogus not found in registry",
    )  # fmt: skip
    write_job(root, "3", ["model.drop_rate=0.5", "loss.label_smoothing=0.1", *common], [0.6, 0.2])
    write_job(root, "10", ["model.drop_rate=0.8", "loss.label_smoothing=0", *common], [0.55], None)
    return root


def table_rows(text: str) -> list[dict[str, str]]:
    """The markdown table of the report as dicts keyed by its header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def test_finished_jobs_come_best_first_then_unfinished_then_failed(sweep: Path) -> None:
    rows = table_rows(write_sweep_report(sweep))

    assert [row["job"] for row in rows] == ["1", "3", "0", "10", "2"]
    assert [row["status"] for row in rows] == [
        "finished", "finished", "finished", "unfinished", "failed",
    ]  # fmt: skip
    assert [row["rank"] for row in rows] == ["1", "2", "3", "", ""]
    assert rows[0]["val/acc_best"] == "0.7"


def test_only_the_overrides_that_differ_become_columns(sweep: Path) -> None:
    (first, *_) = table_rows(write_sweep_report(sweep))

    assert "model.drop_rate" in first and "loss.label_smoothing" in first
    assert "data.root" not in first and "trainer" not in first


def test_an_unfinished_job_shows_its_value_so_far_from_the_csv_log(sweep: Path) -> None:
    rows = {row["job"]: row for row in table_rows(write_sweep_report(sweep))}

    assert rows["10"]["val/acc_best"] == "0.55"
    assert rows["10"]["epochs"] == "1"
    assert "bogus" in rows["2"]["note"]


def test_min_mode_ranks_the_lowest_value_first(sweep: Path) -> None:
    rows = table_rows(write_sweep_report(sweep, metric="val/loss", mode="min"))

    finished = [row["job"] for row in rows if row["status"] == "finished"]
    assert finished == ["1", "0", "3"]  # last val/acc 0.7, 0.5, 0.2 -> loss 1.3, 1.5, 1.8


def test_the_sweepers_direction_sets_the_default_order(tmp_path: Path) -> None:
    for name, acc in [("0", 0.2), ("1", 0.6)]:
        write_job(tmp_path, name, [f"optim.optimizer.lr={acc}"], [acc], direction="minimize")

    assert [row["job"] for row in table_rows(write_sweep_report(tmp_path))] == ["0", "1"]


def test_the_csv_and_png_are_written_into_the_sweep_folder(sweep: Path) -> None:
    write_sweep_report(sweep)

    with (sweep / "report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["job"] for row in rows] == ["1", "3", "0", "10", "2"]
    assert float(rows[0]["val/acc_best"]) == 0.7
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_folder_without_jobs_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])

    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path} holds no job folder") and "\n" not in err


def test_the_command_prints_the_markdown_table(sweep: Path, capsys) -> None:
    main([str(sweep), "--top", "2"])

    out = capsys.readouterr().out
    assert out.startswith("5 jobs (3 finished, 1 unfinished, 1 failed), sorted by val/acc_best")
    assert len(table_rows(out)) == 5


def test_a_metric_no_job_logged_is_one_line_and_writes_nothing(sweep: Path, capsys) -> None:
    write_sweep_report(sweep)
    before = {name: (sweep / name).read_bytes() for name in ("report.csv", "report.png")}

    with pytest.raises(SystemExit) as exit_info:
        main([str(sweep), "--metric", "val/accc"])

    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "'val/accc'" in err and "did you mean --metric val/acc?" in err and "\n" not in err
    assert {name: (sweep / name).read_bytes() for name in before} == before


def test_a_failed_jobs_multi_line_error_stays_one_row(sweep: Path) -> None:
    write_job(sweep, "11", ["model.drop_rate=0.9"], [0.2], status="failed",
              error="RuntimeError: first line\n  second line | with a bar")  # fmt: skip

    rows = {row["job"]: row for row in table_rows(write_sweep_report(sweep))}

    assert rows["11"]["note"] == "RuntimeError: first line" and len(rows) == 6


@pytest.mark.parametrize("status", ["diverged", "interrupted"])
def test_diverged_and_interrupted_jobs_are_shown_as_such(sweep: Path, status: str) -> None:
    write_job(sweep, "11", ["model.drop_rate=0.9"], [0.2], status=status, error="loss nan")

    rows = {row["job"]: row for row in table_rows(write_sweep_report(sweep))}

    assert rows["11"]["status"] == status and rows["11"]["rank"] == ""


def test_the_figure_is_titled_and_counts_epochs_from_one(sweep: Path) -> None:
    jobs = [read_job(job, sweep, "val/acc_best") for job in sorted(sweep.iterdir()) if job.is_dir()]

    figure = plot(jobs, ["model.drop_rate"], "val/acc_best", "val/acc", 2, "multirun: 5 jobs")

    assert figure._suptitle.get_text() == "multirun: 5 jobs"
    curves = figure.axes[-1].get_lines()
    assert curves and all(line.get_xdata()[0] == 1 for line in curves)


@pytest.mark.parametrize(
    ("damaged", "content"),
    [
        ("metrics.json", '{"status": "finished", "val/acc_best": "abc", "epochs_completed": "x"}'),
        ("metrics.json", "[1, 2]"),
        (".hydra/overrides.yaml", "{a: ["),
        (".hydra/config.yaml", None),  # deleted
    ],
    ids=["text-metric", "list-record", "bad-yaml", "no-config"],
)
def test_a_damaged_job_file_is_shown_not_a_traceback(sweep: Path, damaged, content) -> None:
    path = sweep / "0" / damaged
    if content is None:
        path.unlink()
    else:
        path.write_text(content)

    rows = {row["job"]: row for row in table_rows(write_sweep_report(sweep))}

    assert len(rows) == 5 and rows["1"]["status"] == "finished"
    assert rows["0"]["val/acc_best"] in ("", "0.5")  # no value, or its CSV log's
