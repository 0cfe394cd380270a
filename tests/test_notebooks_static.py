"""Static checks of the assignment notebooks (no kernel, about a second).

Each notebook's source is a jupytext percent script in notebooks/ and its .ipynb must match it
cell for cell. Each opens in Colab from its badge, installs the kit from the repository in
pyproject.toml (in a cell CI skips), runs headless from a `parameters` cell with a quick mode, and
reads as the assignment's steps: a markdown line before every code cell, each code cell a call
into era_utils (no function, class or loop, no hand-built loader, optimizer or schedule), and no
recipe number written into it (the recipe is read at run time). Their committed outputs (what
GitHub shows) hold no error or NaN. Executing them is `pytest --nbmake notebooks/` (CI does).
"""
from __future__ import annotations

import ast
import importlib.util
import os
import re
import tomllib
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NAMES = ("s7_resnet18_gradcam", "s7_lite", "s10_custom_resnet_one_cycle", "hw2p2_faces")
RECIPE_OF = {"s7_resnet18_gradcam": "s7", "s7_lite": "s7_lite", "s10_custom_resnet_one_cycle": "s10",
             "hw2p2_faces": "hw2p2"}
MAX_BYTES = 2 * 2**20  # committed with outputs, still light enough for GitHub to render


def _build_script():
    """scripts/build_notebooks.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _repo() -> str:
    """The repository address, from pyproject.toml: the one place it is written for the package."""
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    return urls["Repository"]


def _load(name: str) -> nbformat.NotebookNode:
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing: run `python scripts/build_notebooks.py --execute`"
    return nbformat.read(path, as_version=4)


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _python(cell) -> str:
    """The cell's code with IPython magics (%pip, %matplotlib) blanked, ready for ast."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture(params=NAMES)
def notebook(request) -> tuple[str, nbformat.NotebookNode]:
    return request.param, _load(request.param)


def test_every_assignment_has_a_script_and_a_notebook():
    scripts = {p.stem for p in NOTEBOOK_DIR.glob("*.py")}
    notebooks = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
    assert scripts == notebooks == set(NAMES), (scripts, notebooks)
    assert not (ROOT / "scripts" / "make_notebooks.py").exists(), "notebooks come from their scripts only"


def test_each_ipynb_matches_its_script(notebook):
    name, _ = notebook
    problem = _build_script().stale(NOTEBOOK_DIR / f"{name}.py")
    assert problem is None, f"{problem}: run python scripts/build_notebooks.py --execute {name}"


def test_the_sync_check_fails_when_a_script_changes(tmp_path, monkeypatch):
    """The check above can fail: a script edited after its notebook was built is caught."""
    build = _build_script()
    script = tmp_path / "nb.py"
    script.write_text("# %% [markdown]\n# Title\n\n# %%\nx = 1\n")
    nbformat.write(build.from_script(script), script.with_suffix(".ipynb"))
    monkeypatch.setattr(build, "ROOT", tmp_path)
    assert build.stale(script) is None
    script.write_text("# %% [markdown]\n# Title\n\n# %%\nx = 2\n")
    assert "cell 1 differs" in build.stale(script)


def test_format_kernel_and_size(notebook):
    name, nb = notebook
    assert nb.nbformat == 4 and nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.metadata.get("accelerator") == "GPU", "Colab opens it on a GPU runtime"
    size = (NOTEBOOK_DIR / f"{name}.ipynb").stat().st_size
    assert size < MAX_BYTES, f"{name}.ipynb is {size / 2**20:.1f} MB; keep figures small"


def test_colab_badge_points_at_this_notebook(notebook):
    name, nb = notebook
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    owner_repo = _repo().split("github.com/", 1)[1]
    url = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{name}.ipynb"
    assert "colab-badge.svg" in first.source and f"({url})" in first.source, f"no Open in Colab badge for {url}"
    assert "quick" in first.source.lower(), "the first cell must say where the committed outputs come from"


def test_install_cell_is_first_tagged_and_uses_the_repository(notebook):
    _, nb = notebook
    first_code = _code_cells(nb)[0]
    assert "skip-execution" in _tags(first_code), "the install cell must be tagged skip-execution (CI skips it)"
    assert re.search(r"^%pip install .*git\+" + re.escape(_repo()), first_code.source, re.M), first_code.source
    assert not first_code.get("outputs"), "the install cell was skipped in the quick run: no outputs"
    others = [c for c in _code_cells(nb)[1:] if "pip install" in c.source or "skip-execution" in _tags(c)]
    assert not others, "only the install cell installs anything or is skipped"


def test_a_failed_install_stops_run_all(notebook):
    """Right after the install cell, a cell that raises with a clear message when era_utils is missing."""
    name, nb = notebook
    check = _code_cells(nb)[1]
    assert "find_spec(\"era_utils\")" in check.source and "raise ModuleNotFoundError" in check.source, name
    namespace: dict = {}
    exec(compile(check.source, "install check", "exec"), namespace)  # installed here: it passes
    source = check.source.replace('"era_utils"', '"era_utils_not_installed"')
    with pytest.raises(ModuleNotFoundError, match="install cell above failed"):
        exec(compile(source, "install check", "exec"), {})


def test_parameters_cell_names_the_recipe_and_the_size(notebook, monkeypatch):
    name, nb = notebook
    cells = [c for c in _code_cells(nb) if "parameters" in _tags(c)]
    assert len(cells) == 1, "exactly one cell tagged 'parameters' (papermill injects after it)"
    assert _code_cells(nb).index(cells[0]) == 2, "the parameters cell follows the install cell and its check"
    for size in ("full", "preview", "quick"):
        monkeypatch.setenv("ERA_UTILS_SIZE", size)
        params: dict = {}
        exec(compile(_python(cells[0]), "parameters", "exec"), params)
        assert params["RECIPE"] == RECIPE_OF[name] and params["SIZE"] == size
    monkeypatch.delenv("ERA_UTILS_SIZE")
    exec(compile(_python(cells[0]), "parameters", "exec"), params)
    assert params["SIZE"] == "full", "opened in Colab, a notebook runs the assignment's full recipe"
    for key in ("DATASET", "EPOCHS", "SUBSET", "DEVICE", "OUT", "RESUME"):
        assert key in params, f"the parameters cell must define {key}"
    assert params["EPOCHS"] is None and params["SUBSET"] is None and params["DEVICE"] is None, (
        "defaults are the recipe's own: the notebook passes None and the plan reads the recipe")
    assert params.get("LOADER", "auto") == "auto"


def test_no_recipe_number_is_written_into_a_notebook(notebook):
    """Code holds no number at all (the recipe's are read at run time); the prose names none of the
    recipe's training numbers either, so it cannot drift from era_utils.recipes."""
    from era_utils.recipes import get_recipe

    name, nb = notebook
    for i, cell in enumerate(_code_cells(nb)):
        for node in ast.walk(ast.parse(_python(cell))):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                raise AssertionError(f"{name}: code cell {i} holds the number {node.value!r}: read it from the recipe")
    recipe = get_recipe(RECIPE_OF[name])
    numbers = {f"{recipe.lr:g}", f"{recipe.weight_decay:g}", str(recipe.batch_size), str(recipe.epochs)}
    if recipe.label_smoothing:
        numbers.add(f"{recipe.label_smoothing:g}")
    if recipe.target_accuracy:
        numbers.add(f"{recipe.target_accuracy:g}%")
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    prose = re.sub(r"\(https?://\S+\)", "", prose)  # the badge's address
    for number in numbers:
        assert not re.search(rf"(?<![\w.]){re.escape(number)}(?![\w.])", prose), (
            f"{name}: the markdown says {number!r}, a number of the recipe: let the plan's table show it")


def test_each_code_cell_follows_a_markdown_line(notebook):
    _, nb = notebook
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            before = nb.cells[i - 1] if i else None
            assert before is not None and before.cell_type == "markdown" and before.source.strip(), (
                f"code cell {i} ({cell.source.splitlines()[0]!r}) needs a markdown line before it")


BANNED = {
    ast.FunctionDef: "a function definition",
    ast.AsyncFunctionDef: "a function definition",
    ast.Lambda: "a lambda",
    ast.ClassDef: "a class definition",
    ast.For: "a for loop",
    ast.AsyncFor: "a for loop",
    ast.While: "a while loop",
}
# What the steps build: a notebook that calls these builds a loader, model, optimizer or schedule by hand.
HAND_BUILT = ("GPULoader(", "DataLoader(", "load_dataset(", "load_splits(", "make_loaders(", ".subset(",
              "create_model(", "make_optimizer(", "make_criterion(", "one_cycle(", "cosine_warm_restarts(",
              "torch.optim", "fit(", "find_lr(", "set_seed(", "class_pairs(")


def test_each_cell_calls_steps_and_builds_nothing_by_hand(notebook):
    name, nb = notebook
    for i, cell in enumerate(_code_cells(nb)):
        for node in ast.walk(ast.parse(_python(cell), filename=f"{name} code cell {i}")):
            what = BANNED.get(type(node))
            assert what is None, f"{name}: code cell {i} defines {what} (line {node.lineno}); call era_utils"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = getattr(node, "module", None) or ""
                assert module.startswith(("era_utils", "google.colab")) or module in ("", "os", "importlib.util"), (
                    f"{name}: imports {module}")
    code = "\n".join(c.source for c in _code_cells(nb))
    for hand_made in HAND_BUILT:
        assert hand_made not in code, f"{name}: {hand_made} by hand; a step of era_utils.steps does it"
    for step in ("plan_run(RECIPE, size=SIZE", "start(plan)", "load_data(plan)", "build_loaders(plan, data)",
                 "build_model(plan, data)", "optimizer_and_schedule(plan, model, train_loader",
                 "train(plan, model, train_loader, test_loader, optimizer, scheduler)",
                 "final_predictions(plan, model, test_loader, history)"):
        assert step in code, f"{name}: no cell calls {step}"


def test_every_step_of_the_run_command_is_a_notebook_cell():
    """era-utils run is the chain of steps the notebooks call: each step the runner calls is called by
    a notebook cell too (names of era_utils.steps, analysis, gradcam, kaggle, loaders and plots)."""
    runner = ast.parse((ROOT / "era_utils" / "runner.py").read_text())
    imported = {alias.asname or alias.name for node in ast.walk(runner) if isinstance(node, ast.ImportFrom)
                and node.module in ("era_utils.steps", "era_utils.analysis", "era_utils.gradcam",
                                    "era_utils.kaggle", "era_utils.loaders") for alias in node.names}
    run_recipe = next(n for n in runner.body if isinstance(n, ast.FunctionDef) and n.name == "run_recipe")
    called = {n.func.id for n in ast.walk(run_recipe) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    called |= {f"plots.{n.func.attr}" for n in ast.walk(run_recipe) if isinstance(n, ast.Call)
               and isinstance(n.func, ast.Attribute) and getattr(n.func.value, "id", "") == "plots"}
    steps = sorted((called & imported) | {c for c in called if c.startswith("plots.")})
    assert len(steps) > 15, steps
    code = "\n".join(c.source for name in NAMES for c in _code_cells(_load(name)))
    missing = [step for step in steps if f"{step}(" not in code]
    assert not missing, f"run_recipe calls {missing}, which no notebook cell does"


def test_committed_outputs_hold_figures_and_no_errors(notebook):
    name, nb = notebook
    outputs = [o for c in _code_cells(nb) for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{name}: committed outputs contain an error: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any("image/png" in o.get("data", {}) for o in outputs), (
        f"{name}: commit it with its preview outputs (python scripts/build_notebooks.py --execute)")


def test_quick_mode_variable_matches_root_conftest():
    conftest = (ROOT / "conftest.py").read_text()
    assert 'os.environ.setdefault("ERA_UTILS_SIZE", "quick")' in conftest
    assert os.environ.get("ERA_UTILS_SIZE") in ("quick", "preview", "full")  # the root conftest has set it


def _text_outputs(nb) -> str:
    parts = []
    for cell in _code_cells(nb):
        for output in cell.get("outputs", []):
            parts.append(output.get("text") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


EPOCH_LINE = re.compile(r"train loss\s+(\S+)\s+acc\s+(\S+)%\s+test loss\s+(\S+)\s+acc\s+(\S+)%")


def test_committed_outputs_show_a_preview_that_learned(notebook):
    """The committed outputs are what GitHub shows: the preview run (the plan's table says so), no NaN,
    and a model that learned: at least 80% test accuracy at the end (chance is 10%)."""
    name, nb = notebook
    text = _text_outputs(nb)
    markdown = "\n".join(o.get("data", {}).get("text/markdown", "") for c in _code_cells(nb) for o in c.get("outputs", []))
    assert "| preview run |" in markdown, f"{name}: the committed outputs are not the preview run's"
    assert not re.search(r"\b(nan|inf)\b", text, re.IGNORECASE), f"{name}: NaN or inf in the committed outputs"
    assert "IProgress not found" not in text, f"{name}: rebuild with --execute (it drops the CI-only warning)"
    epochs = EPOCH_LINE.findall(text)
    assert len(epochs) >= 3, f"{name}: fewer than 3 epoch lines (train loss ... test loss ...) in the outputs"
    assert float(epochs[-1][3]) >= 80.0, f"{name}: the committed run ends at {epochs[-1][3]}% test accuracy"
    if name == "hw2p2_faces":
        auc = re.search(r"auc=([\d.]+)", text)
        assert auc and float(auc.group(1)) > 0.7, f"{name}: verification AUC near chance (0.5): {auc}"
