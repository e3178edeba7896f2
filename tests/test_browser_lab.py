"""Each lesson with a widget, run in JupyterLab in a real browser: Run All in quick mode, then one
control moved. Marked `browser` (run by `make check`); skipped without Chromium."""

import json
from pathlib import Path

import pytest

from .browser import LESSONS, MARKS, browser, lab, wait_for, with_widgets  # noqa: F401 (fixtures)

pytestmark = MARKS


def quick_copy(path: Path, target: Path) -> None:
    """The lesson with its quick mode on, as a learner on a slow laptop sets it."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell["metadata"].get("tags", []):
            cell["source"] = "".join(cell["source"]).replace("FAST = False", "FAST = True", 1)
    target.write_text(json.dumps(nb))


FIGURES = "document.querySelectorAll('.jupyter-widgets img').length"
BUSY = "Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))" \
       ".some(p => p.textContent.includes('*'))"


@pytest.mark.parametrize("path", [p for p in LESSONS if with_widgets(p)], ids=lambda p: p.stem)
def test_lab_runs_the_lesson_and_its_widget_responds(path, lab, browser, tmp_path):
    """Run All in quick mode, then move the first slider (or change the first dropdown) of the
    lesson's widget: every cell runs without error and the widget draws a new figure."""
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    url, token, root = lab
    name = f"quick-{path.name}"
    quick_copy(path, root / name)
    browser.get(f"{url}/lab/tree/{name}?token={token}&reset")
    wait_for(browser, "return !!(window.jupyterapp && document.querySelector('.jp-Notebook')"
                      " && document.querySelector('.jp-Notebook-ExecutionIndicator, "
                      ".jp-KernelStatus, .jp-Toolbar-kernelStatus'))", 60, "the notebook to open")
    wait_for(browser, "return document.body.innerText.includes('Idle')", 120, "the kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait_for(browser, f"return {BUSY}", 60, "the run to start")
    wait_for(browser, f"return !{BUSY}", 400, "Run All to finish")
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
        ".map(e => e.innerText).filter(t => /Traceback|Error:/.test(t)).map(t => t.slice(0, 300))")
    assert not errors, f"cells failed: {errors[:2]}"
    wait_for(browser, f"return {FIGURES}", 60, "the widget's figure")
    # mark the figures drawn so far; a redraw replaces them with new elements
    browser.execute_script("document.querySelectorAll('.jupyter-widgets img')"
                           ".forEach(i => i.dataset.before = '1')")
    sliders = browser.find_elements("css selector", ".jupyter-widgets .noUi-handle")
    if sliders:  # one step down from the top of its range, else one step up
        at_top = sliders[0].get_attribute("aria-valuenow") == sliders[0].get_attribute("aria-valuemax")
        sliders[0].send_keys(Keys.ARROW_LEFT if at_top else Keys.ARROW_RIGHT)
    else:
        select = Select(browser.find_element("css selector", ".jupyter-widgets select"))
        select.select_by_index((select.options.index(select.first_selected_option) + 1)
                               % len(select.options))
    wait_for(browser, "return Array.from(document.querySelectorAll('.jupyter-widgets img'))"
                      ".some(i => !i.dataset.before && i.naturalWidth > 0)", 120,
             "the widget to draw a new figure")
    text = browser.execute_script("return document.body.innerText")
    assert "Error displaying widget" not in text
