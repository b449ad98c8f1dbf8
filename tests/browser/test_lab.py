"""The notebooks as a reader opens them (``make test-browser``): JupyterLab in the background, headless Chromium
driving Run All and the widgets. Notebooks 01, 03 and 05 run from their sources with the parameters papermill
would inject (smoke, one seed, the small synthetic set of ``small_data``, temporary folders; 05 builds Table 4
only), so the test fits a few minutes; then the committed notebook 01 runs as it is, from the repository, to show
that the lab writes nothing new outside ``results/``. Screenshots go to ``results/browser/``."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from castlib.config import REPO_ROOT
from castlib.notebooks import NOTEBOOK_DIR, notebook_parameters
from tests.browser import lab

pytestmark = [pytest.mark.slow, pytest.mark.browser]
if (reason := lab.missing()) is not None:
    pytestmark.append(pytest.mark.skip(reason=reason))

SHOTS = REPO_ROOT / "results" / "browser"
RUN_ALL_TIMEOUT = 1200  # seconds: notebook 03 trains the teacher chain and two students on a shared 2-core machine
FIGURE_CALL = re.compile(r"save_figure\(")


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    import jupytext
    import nbformat
    from papermill.parameterize import parameterize_notebook
    from playwright.sync_api import sync_playwright

    from tests.test_notebooks import small_data

    root = tmp_path_factory.mktemp("lab")
    folder = root / "notebooks"  # the kernel starts here, as it starts in notebooks/ for the committed ones
    folder.mkdir()
    given = {"profile": "smoke", "seeds": [0], "overrides": small_data(root), "runs_dir": str(root / "runs"),
             "tables_dir": str(root / "tables"), "figures_dir": str(root / "figures"), "tables": [4]}
    for stem in ("01_data_and_splits", "03_knowledge_transfer", "05_ablation_tables"):
        notebook = jupytext.read(NOTEBOOK_DIR / f"{stem}.py")
        for cell in notebook.cells:
            cell.metadata.setdefault("tags", [])  # as papermill's reader leaves them
        notebook.metadata.papermill = nbformat.NotebookNode()
        chosen = {**given, "output_dir": str(root / "out" / stem)}
        chosen = {name: value for name, value in chosen.items() if name in notebook_parameters(notebook)}
        nbformat.write(parameterize_notebook(notebook, chosen), folder / f"{stem}.ipynb")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with lab.jupyter_lab("/", root / "home") as (base, token), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=lab.chromium_path(), headless=True,
                                             args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield SimpleNamespace(root=root, folder=folder, base=base, token=token, browser=browser)
        browser.close()


def open_notebook(session, path) -> lab.Notebook:
    page = session.browser.new_page(viewport={"width": 1400, "height": 1100})
    return lab.Notebook(page, session.base, session.token, str(path).lstrip("/"))


def run_and_check(notebook: lab.Notebook, path) -> dict:
    """Run All, then what every reader should see: no error output, and each figure cell showing its images (in
    the page, and in the notebook as the lab saves it). Returns the saved notebook."""
    seconds = notebook.run_all(RUN_ALL_TIMEOUT)
    print(f"{path.name}: Run All took {seconds:.0f} s")
    saved = notebook.save(path)
    code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, [f"{e['ename']}: {e['evalue']}" for e in errors]
    assert all(c["execution_count"] for c in code), "a cell did not run"
    figure_cells = [c for c in code if FIGURE_CALL.search("".join(c["source"]))]
    for cell in figure_cells:
        source = "".join(cell["source"])
        images = [o for o in cell["outputs"] if "image/png" in o.get("data", {})]
        assert len(images) >= len(FIGURE_CALL.findall(source)), source
        shown = lab.image_sources(notebook.code_cell(source.splitlines()[-1].strip()[:60]))
        assert shown and all(lab.png_ink(src) > 0.005 for src in shown), source
    assert not notebook.panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']",
                                      has_text="Traceback").count()
    return saved


def test_01_shows_its_figures_and_the_slider_redraws(session):
    path = session.folder / "01_data_and_splits.ipynb"
    notebook = open_notebook(session, path)
    run_and_check(notebook, path)
    notebook.code_cell("show_samples(").screenshot(path=SHOTS / "01_samples_figure.png")
    cell = notebook.code_cell("sample_browser(")
    handle = cell.locator(".widget-slider .noUi-handle")
    lab.wait_until(lambda: handle.count() and lab.image_sources(cell), 60, "01's slider and its image")
    before = lab.image_sources(cell)
    cell.screenshot(path=SHOTS / "01_slider_before.png")
    handle.first.focus()
    notebook.page.keyboard.press("ArrowRight")
    after = lab.wait_until(lambda: (now := lab.image_sources(cell)) != before and now, 120, "the slider's new image")
    assert len(after) == 1 and lab.png_ink(after[0]) > 0.005
    assert cell.locator(".widget-readout").first.inner_text().strip() == "1"
    cell.screenshot(path=SHOTS / "01_slider_after.png")
    notebook.page.close()


def press_and_watch(cell, timeout: float = 900) -> list[str]:
    """Press the panel's button and wait until it is enabled again with its own label; returns the labels it showed
    while disabled (a mutation observer sees them however short the run)."""
    button = cell.locator(".widget-button").first
    label = button.inner_text().strip()
    button.evaluate("""b => {
        window.__busy = [];
        new MutationObserver(() => { if (b.disabled) window.__busy.push(b.innerText.trim()); })
            .observe(b, {attributes: true, childList: true, subtree: true, characterData: true});
    }""")
    button.click()
    lab.wait_until(lambda: button.evaluate("b => window.__busy.length > 0"), 60, "the button disabled while it runs")
    lab.wait_until(lambda: not button.is_disabled() and button.inner_text().strip() == label, timeout,
                   "the button enabled again with its label")
    return button.evaluate("b => window.__busy")


def test_03_shows_its_figures_and_the_curves_panel_draws_each_figure(session):
    path = session.folder / "03_knowledge_transfer.ipynb"
    notebook = open_notebook(session, path)
    saved = run_and_check(notebook, path)
    proposition = next(c for c in saved["cells"] if "proposition.set_index" in "".join(c["source"]))
    assert any("text/html" in o.get("data", {}) for o in proposition["outputs"])  # a table, not a raw dict
    notebook.code_cell("contrastive_diagnostics(logs)").screenshot(path=SHOTS / "03_proposition_figure.png")
    cell = notebook.code_cell("variant_panel(")
    assert cell.locator(".widget-dropdown").count() == 9 and cell.locator(".widget-button").count() == 1
    press_and_watch(cell)  # the default choices: cast() trains the refinement notebook 03 did not
    shown = lab.wait_until(lambda: len(s := lab.image_sources(cell.locator(".widget-output"))) == 2 and s, 60,
                           "the panel's two figures")
    cell.screenshot(path=SHOTS / "03_curves_after_button.png")
    for k, src in enumerate(shown):
        (session.root / f"03_panel_figure_{k}.png").write_bytes(base64.b64decode(src.split(",", 1)[1]))
    assert all(lab.png_ink(src) > 0.005 for src in shown), ([lab.png_ink(src) for src in shown], session.root)
    notebook.page.close()


def test_05_shows_its_table_and_the_button_adds_one_row_per_variant(session):
    path = session.folder / "05_ablation_tables.ipynb"
    notebook = open_notebook(session, path)
    run_and_check(notebook, path)
    cell = notebook.code_cell("variant_panel(")
    rows = cell.locator(".widget-output table tbody tr")
    assert cell.locator(".widget-dropdown").count() == 9 and rows.count() == 0
    labels = cell.locator(".widget-dropdown label")
    assert "negatives per pixel R" in labels.all_inner_texts()
    assert labels.evaluate_all("ls => ls.every(l => l.scrollWidth <= l.clientWidth + 1)"), "a label is cut"
    cell.screenshot(path=SHOTS / "05_variant_before.png")
    press_and_watch(cell)
    lab.wait_until(lambda: rows.count() == 1, 60, "the default variant's row")
    first = rows.first.inner_text()
    assert "default (CAST)" in first
    press_and_watch(cell)  # the same choices: the same row, not a second
    assert rows.count() == 1
    loss = cell.locator(".widget-dropdown", has_text="contrastive loss").locator("select")
    loss.select_option(label="hinge")
    busy = press_and_watch(cell)  # Table 4 trained its hinge student; the refinement of it trains now
    lab.wait_until(lambda: rows.count() == 2, 60, "the hinge variant's row")
    assert "loss=hinge" in rows.nth(1).inner_text() and any("training" in text for text in busy), busy
    header = cell.locator(".widget-output table thead").inner_text()
    assert "AP theta_s* (distilled)" in header and "AP theta_s+ (refined)" in header
    output = cell.locator(".widget-output").first
    assert output.evaluate("e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowX)"), "a wide table is cut"
    cell.screenshot(path=SHOTS / "05_variant_after.png")
    notebook.page.close()


def git_status() -> set[str]:
    out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO_ROOT, check=True,
                         capture_output=True, text=True).stdout
    return set(out.splitlines())


def test_the_committed_notebook_run_in_the_lab_writes_nothing_new_outside_results(session):
    """Notebook 01 from notebooks/, as a reader opens it (its own parameters: its kernel starts in notebooks/).
    After Run All and Save the only change is its own saved outputs, which git's nbstripout filter (`make
    notebook-filter`) strips: the file nbstripout reads back equals the committed one. The file is put back after."""
    pytest.importorskip("nbstripout")
    path = NOTEBOOK_DIR / "01_data_and_splits.ipynb"
    paired = path.with_suffix(".py")
    kept = {p: p.read_bytes() for p in (path, paired)}
    before = git_status()
    try:
        notebook = open_notebook(session, path)
        run_and_check(notebook, path)
        notebook.page.close()
        stripped = subprocess.run([sys.executable, "-m", "nbstripout", *lab.NBSTRIPOUT_ARGS, "-t", str(path)],
                                  check=True, capture_output=True, text=True).stdout
        assert json.loads(stripped) == json.loads(kept[path]), "the saved notebook differs once stripped"
        assert paired.read_bytes() == kept[paired]
        new = {line for line in git_status() - before if not line[3:].startswith("results/")}
        assert new <= {f" M {path.relative_to(REPO_ROOT)}"}, new
        # git ignores .ipynb_checkpoints/, so git status cannot see a checkpoint the lab's Save left in the checkout
        left = [str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.rglob(".ipynb_checkpoints")
                if p.relative_to(REPO_ROOT).parts[0] not in (".venv", "results")]
        assert not left, f"the lab left checkpoints in the checkout: {left}"
        assert not (NOTEBOOK_DIR / "results").exists()
    finally:
        for p, content in kept.items():
            p.write_bytes(content)
