"""era-utils compare: the table's numbers and the figure's legends are read back from the runs that made them."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from era_utils import cli
from era_utils import plan as plan_module
from era_utils.compare import compare_runs, comparison_table, plot_comparison, write_comparison
from era_utils.recipes import get_recipe
from era_utils.runner import run_recipe, run_seeds


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A 2-seed cross-entropy run with flip averaging and a 1-seed CosFace run, each for 1 tiny epoch."""
    from fake_data import write_fashion_mnist

    tmp = tmp_path_factory.mktemp("compare")
    root = write_fashion_mnist(tmp / "data", n_train=200, n_test=100)
    recipe = get_recipe("hw2p2").override(model="face_baseline", epochs=1, batch_size=16, lr=0.01)
    common = dict(dataset="fashion_mnist", data_dir=str(root), device="cpu", amp="off", num_workers=0, verbose=False,
                  verification_pairs=40)
    run_seeds(plan_module.plan_run(recipe, tta="flip", out=tmp / "ce", **common), 2, command="era-utils run hw2p2 --seeds 2")
    run_recipe(plan_module.plan_run(recipe, loss="cosface", out=tmp / "cosface", **common), command="era-utils run hw2p2")
    return tmp


def test_the_table_holds_each_runs_numbers_with_their_spread(two_runs):
    rows = compare_runs([two_runs / "ce", two_runs / "cosface"])
    assert [row.name for row in rows] == ["ce", "cosface"] and [row.loss for row in rows] == ["cross_entropy", "cosface"]
    assert rows[0].seeds == [1, 2] and rows[1].seeds == [1]
    seeds = [json.loads((two_runs / "ce" / f"seed_{s}" / "metrics.json").read_text()) for s in (1, 2)]
    aucs = [m["verification"]["auc"] for m in seeds]
    assert rows[0].values("verification.auc") == aucs
    assert rows[0].values("verification.without_flip.auc") == [m["verification"]["without_flip"]["auc"] for m in seeds]
    table = comparison_table(rows)
    mean, sd = np.mean(aucs), np.std(aucs, ddof=1)
    assert f"{mean:.4f} ± {sd:.4f} ({min(aucs):.4f}-{max(aucs):.4f})" in table
    cosface = json.loads((two_runs / "cosface" / "metrics.json").read_text())
    line = next(line for line in table.splitlines() if line.startswith("| cosface"))
    assert f"| {cosface['verification']['auc']:.4f} |" in line and f"{cosface['final_test_acc']:.2f}" in line
    assert "| - | - |" in line  # no flip in that run: nothing to show without it
    # the seeds' own summary carries the same numbers
    summary = json.loads((two_runs / "ce" / "metrics.json").read_text())
    assert summary["mean_auc"] == pytest.approx(mean) and summary["std_auc"] == pytest.approx(sd)
    assert f"{mean:.4f} mean" in (two_runs / "ce" / "report.md").read_text()


def test_the_device_cell_names_the_precision_and_a_channels_last_layout(two_runs, tmp_path):
    nhwc = tmp_path / "cosface_channels_last"
    shutil.copytree(two_runs / "cosface", nhwc)
    metrics = json.loads((nhwc / "metrics.json").read_text())
    assert metrics["channels_last"] is False and metrics["precision"] == "fp32"  # amp off on the CPU: NCHW
    (nhwc / "metrics.json").write_text(json.dumps({**metrics, "channels_last": True}))  # as on an AVX2 CPU
    lines = comparison_table(compare_runs([two_runs / "cosface", nhwc])).splitlines()
    assert ", fp32 |" in lines[2] and ", fp32, channels_last |" in lines[3]


def test_the_figure_draws_each_run_from_its_files(two_runs):
    rows = compare_runs([two_runs / "ce", two_runs / "cosface"])
    fig = plot_comparison(rows, title="losses")
    accuracy, roc = fig.axes
    labels = [text.get_text() for text in roc.get_legend().get_texts()]
    cosface_auc = json.loads((two_runs / "cosface" / "roc.json").read_text())["auc"]
    assert f"cosface: AUC {cosface_auc:.4f}" in labels
    assert len(roc.lines) == 2 + 1 + 1  # two seeds, one seed, chance
    first_acc = [json.loads((two_runs / "ce" / f"seed_{s}" / "history.json").read_text())["test_acc"][-1] for s in (1, 2)]
    assert f"ce: {np.mean(first_acc):.2f}% (mean of 2)" in [t.get_text() for t in accuracy.get_legend().get_texts()]


def test_the_command_prints_the_table_and_writes_the_comparison(two_runs, capsys):
    out = two_runs / "cmp"
    assert cli.main(["compare", str(two_runs / "ce"), str(two_runs / "cosface"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| run | recipe |") and "cosface" in printed
    assert {p.name for p in out.iterdir()} == {"comparison.md", "comparison.json", "comparison.png"}
    made = (out / "comparison.md").read_text()
    assert "era-utils compare" in made and "era-utils run hw2p2 --seeds 2" in made
    assert str(two_runs) not in made and "compare RUN_DIR RUN_DIR --out OUT" in made  # no machine paths
    assert json.loads((out / "comparison.json").read_text())[1]["loss"] == "cosface"
    write_comparison(compare_runs([two_runs / "cosface"]), two_runs / "one")  # one run alone works too


def test_a_folder_without_a_run_is_named_with_the_fix(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        compare_runs([tmp_path])
    with pytest.raises(ValueError, match="at least one"):
        compare_runs([])
    assert cli.main(["compare", str(tmp_path)]) == 2
    assert "no metrics.json" in capsys.readouterr().err


def test_the_committed_loss_tables_are_the_comparisons_numbers():
    """results/README.md and the HW2P2 notebook quote results/hw2p2_losses: the same numbers, per loss."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = json.loads((root / "results" / "hw2p2_losses" / "comparison.json").read_text())
    assert [r["loss"] for r in rows] == ["cross_entropy", "arcface", "cosface", "center"]
    readme = (root / "results" / "README.md").read_text()
    notebook = (root / "notebooks" / "hw2p2_faces.py").read_text()
    for r in rows:
        assert len(r["seeds"]) == 3 and "hw2p2 --preview --loss " + r["loss"] in r["command"]
        for key in ("auc", "auc_without_flip", "eer"):
            values = np.array(r[key])
            assert f"{values.mean():.4f} ± {values.std(ddof=1):.4f}" in readme or key == "eer", (r["loss"], key)
            assert f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" in notebook, (r["loss"], key)
        acc = np.array(r["final_test_acc"])
        assert f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}" in notebook and f"{acc.mean():.2f} ± " in readme


@pytest.mark.parametrize("folder", ["preview_seeds", "sizing_seeds"])
def test_the_committed_seed_tables_are_the_comparisons_rows(folder):
    """results/README.md's tables of runs over seeds are era-utils compare's rows, copied whole (issue 28)."""
    from pathlib import Path

    results = Path(__file__).resolve().parents[1] / "results"
    made = (results / folder / "comparison.md").read_text().splitlines()
    rows = [line for line in made if line.startswith("| ") and not line.startswith("| run |")]
    readme = (results / "README.md").read_text().splitlines()
    assert rows and all(row in readme for row in rows), [row for row in rows if row not in readme]
    assert all(len(json_row["seeds"]) == 5 for json_row in json.loads((results / folder / "comparison.json").read_text()))
