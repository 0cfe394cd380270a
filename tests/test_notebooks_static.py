"""Static checks of the assignment notebooks (no kernel, well under a second).

Each notebook must open in Colab from its badge, install the kit from the one repository address
in scripts/make_notebooks.py (in a cell CI skips), run headless from a `parameters` cell with a
quick mode, and read as the assignment's steps: a markdown line before every code cell, no
function, class or loop defined inline. They load data, make loaders and place One Cycle's peak
with the calls `era-utils run` uses, and their committed quick-run outputs (what GitHub shows) hold
no error, NaN or diverged loss. Executing them is `pytest --nbmake notebooks/`.
"""
from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
GENERATOR = ROOT / "scripts" / "make_notebooks.py"
NAMES = ("s7_resnet18_gradcam", "s7_lite", "s10_custom_resnet_one_cycle", "hw2p2_faces")
MAX_BYTES = 2 * 2**20  # committed with outputs, still light enough for GitHub to render


def _repo() -> str:
    """REPO = "https://github.com/..." from the generator, read without importing it (no torch)."""
    for node in ast.parse(GENERATOR.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "REPO" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"no REPO constant in {GENERATOR}")


def _load(name: str) -> dict:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing: run `python scripts/make_notebooks.py --execute`"
    return json.loads(path.read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _python(cell: dict) -> str:
    """The cell's code with IPython magics (%pip, %matplotlib) blanked, ready for ast."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in _source(cell).splitlines())


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.fixture(params=NAMES)
def notebook(request) -> tuple[str, dict]:
    return request.param, _load(request.param)


def test_every_assignment_has_a_notebook():
    found = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert set(NAMES) <= found, f"missing notebooks: {sorted(set(NAMES) - found)}"


def test_repo_address_is_a_github_url():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", _repo()), _repo()


def test_format_kernel_and_size(notebook):
    name, nb = notebook
    assert nb["nbformat"] == 4
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    size = (NOTEBOOK_DIR / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name}.ipynb is {size / 2**20:.1f} MB; keep figures small"


def test_colab_badge_points_at_this_notebook(notebook):
    name, nb = notebook
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown"
    owner_repo = _repo().split("github.com/", 1)[1]
    url = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}.ipynb"
    text = _source(first)
    assert "colab-badge.svg" in text and f"({url})" in text, f"no Open in Colab badge for {url}"
    assert "quick" in text.lower(), "the first cell must say the committed outputs come from the quick run"


def test_install_cell_is_first_tagged_and_uses_repo(notebook):
    _, nb = notebook
    first_code = _code_cells(nb)[0]
    assert "skip-execution" in _tags(first_code), "the install cell must be tagged skip-execution (CI skips it)"
    assert re.search(r"^%pip install .*git\+" + re.escape(_repo()), _source(first_code), re.M), _source(first_code)
    assert not first_code.get("outputs"), "the install cell was skipped in the quick run: no outputs"
    others = [c for c in _code_cells(nb)[1:] if "pip install" in _source(c) or "skip-execution" in _tags(c)]
    assert not others, "only the install cell installs anything or is skipped"


def test_parameters_cell_defaults_and_quick_mode(notebook, monkeypatch, tmp_path):
    _, nb = notebook
    cells = [c for c in _code_cells(nb) if "parameters" in _tags(c)]
    assert len(cells) == 1, "exactly one cell tagged 'parameters' (papermill injects after it)"
    assert _code_cells(nb).index(cells[0]) == 1, "the parameters cell comes right after the install cell"
    source = _python(cells[0])
    # quick runs write under tempfile.gettempdir(): point it at tmp_path
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    full: dict = {}
    monkeypatch.setenv("ERA_UTILS_QUICK", "0")
    exec(compile(source, "parameters", "exec"), full)
    for name in ("DATASET", "EPOCHS", "SUBSET", "DEVICE", "BATCH_SIZE", "SEED", "OUT"):
        assert name in full, f"the parameters cell must define {name}"
    assert full["SUBSET"] is None and full["DEVICE"] is None and full["EPOCHS"] > 1, "defaults = the full recipe"
    quick: dict = {}
    monkeypatch.setenv("ERA_UTILS_QUICK", "1")
    exec(compile(source, "parameters", "exec"), quick)
    assert (quick["DATASET"], quick["EPOCHS"], quick["SUBSET"], quick["DEVICE"]) == ("fashion_mnist", 1, 500, "cpu")
    assert Path(quick["OUT"]).resolve().is_relative_to(tmp_path.resolve()), "quick runs write to a temp folder"


def test_each_code_cell_follows_a_markdown_line(notebook):
    _, nb = notebook
    cells = nb["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            assert i > 0 and cells[i - 1]["cell_type"] == "markdown" and _source(cells[i - 1]).strip(), (
                f"code cell {i} ({_source(cell).splitlines()[0]!r}) needs a markdown line before it"
            )


BANNED = {
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.Lambda: "a lambda",
    ast.ClassDef: "a class definition",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
}


def test_no_model_or_loop_defined_inline(notebook):
    name, nb = notebook
    for i, cell in enumerate(_code_cells(nb)):
        tree = ast.parse(_python(cell), filename=f"{name} code cell {i}")
        for node in ast.walk(tree):
            what = BANNED.get(type(node))
            assert what is None, f"{name}: code cell {i} defines {what} (line {node.lineno}); call era_utils instead"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                names = [a.name for a in node.names]
                assert not (module == "torch" and "nn" in names) and "torch.nn" not in names + [module], (
                    f"{name}: code cell {i} imports torch.nn: models come from era_utils.models"
                )


def test_committed_outputs_have_figures_and_no_errors(notebook):
    name, nb = notebook
    outputs = [o for c in _code_cells(nb) for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{name}: committed outputs contain an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert images, f"{name}: commit it with its outputs (python scripts/make_notebooks.py --execute)"


def test_quick_mode_variable_matches_root_conftest():
    conftest = (ROOT / "conftest.py").read_text()
    assert 'os.environ.setdefault("ERA_UTILS_QUICK", "1")' in conftest
    assert os.environ.get("ERA_UTILS_QUICK") in ("0", "1")  # the root conftest has set it


def _code_text(nb: dict) -> str:
    return "\n".join(_source(c) for c in _code_cells(nb))


def test_loader_parameter_defaults_to_auto(notebook, monkeypatch):
    _, nb = notebook
    source = _python(next(c for c in _code_cells(nb) if "parameters" in _tags(c)))
    for quick in ("0", "1"):
        monkeypatch.setenv("ERA_UTILS_QUICK", quick)
        params: dict = {}
        exec(compile(source, "parameters", "exec"), params)
        assert params.get("LOADER") == "auto", "LOADER = \"auto\" in the parameters cell, quick mode included"


def test_data_loaders_and_schedule_are_the_runners(notebook):
    """The notebooks make their data, loaders and One Cycle peak with the calls `era-utils run` uses."""
    name, nb = notebook
    text = _code_text(nb)
    assert "load_splits(" in text and "make_loaders(" in text, f"{name}: use loaders.load_splits/make_loaders"
    assert "loader=LOADER" in text, f"{name}: pass the LOADER parameter to make_loaders"
    for hand_made in ("GPULoader(", "load_dataset(", ".subset(", "AlbumentationsDataset("):
        assert hand_made not in text, f"{name}: {hand_made} by hand; load_splits/make_loaders do it"
    if "one_cycle(" in text:
        assert ".peak_epoch_for(EPOCHS, len(train_loader))" in text, f"{name}: One Cycle's peak from the recipe"
        assert "PEAK_EPOCH" not in text, f"{name}: no hand-set peak epoch"
    if "gradcam(" in text:
        assert "item.input" not in text, f"{name}: gradcam takes get_misclassified's items as they are"


def test_standin_verification_uses_balanced_class_pairs():
    text = _code_text(_load("hw2p2_faces"))
    assert "class_pairs(" in text and "np.random" not in text, "stand-in pairs come from verification.class_pairs"


def _text_outputs(nb: dict) -> str:
    parts = []
    for cell in _code_cells(nb):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


EPOCH_LINE = re.compile(r"train loss\s+(\S+)\s+acc\s+(\S+)%\s+test loss\s+(\S+)\s+acc\s+(\S+)%")


def test_committed_quick_run_trained_sensibly(notebook):
    """The committed outputs are what GitHub shows: no NaN, no diverged loss, no collapsed scores."""
    name, nb = notebook
    text = _text_outputs(nb)
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), f"{name}: NaN or inf in the committed outputs"
    epochs = EPOCH_LINE.findall(text)
    assert epochs, f"{name}: no epoch line (train loss ... test loss ...) in the committed outputs"
    for train_loss, _, test_loss, _ in epochs:
        # chance on 10 classes is ln(10) = 2.3; a diverged run shows 10 .. 1e6
        assert float(train_loss) < 5 and float(test_loss) < 5, f"{name}: diverged loss in {epochs}"
    if name == "hw2p2_faces":
        auc = re.search(r"auc=([\d.]+)", text)
        assert auc and float(auc.group(1)) > 0.55, f"{name}: verification AUC near chance: {auc}"
        scores = re.findall(r"'\S+ \S+,([\d.]+)'", text)
        assert len(set(scores)) > 1, f"{name}: every pair has the same similarity: {scores}"


def test_committed_outputs_hold_no_ci_only_warnings(notebook):
    name, nb = notebook
    assert "IProgress not found" not in _text_outputs(nb), f"{name}: regenerate with --execute (drops it)"
