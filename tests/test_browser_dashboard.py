"""The dashboard (`make dashboard`) served by Voilà on 127.0.0.1 and opened in headless Chromium
with the network cut off: its three widgets render, nothing loads from elsewhere, and one arrow key
on the attack explorer's ε slider redraws its figure with the new prediction. Marked `browser`."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from .browser import MARKS, ROOT, browser, free_port, wait_for, wait_for_port  # noqa: F401 (fixture)

pytestmark = MARKS

# the verdict line under the attack explorer (course/dashboard.ipynb)
VERDICT = "Array.from(document.querySelectorAll('.widget-html-content'))" \
          ".map(e => e.innerText).find(t => t.includes('→')) || ''"


def voila_flags() -> list[str]:
    """The Makefile's VOILA_FLAGS: the test serves the dashboard as `make dashboard` does."""
    flags = re.search(r"^VOILA_FLAGS := (.*?[^\\])$", (ROOT / "Makefile").read_text(), re.M | re.S)
    return shlex.split(flags.group(1).replace("\\\n", " "))


@pytest.fixture(scope="module")
def voila(tmp_path_factory):
    """`make dashboard`'s command, on a free port of 127.0.0.1, with no browser of its own."""
    root = tmp_path_factory.mktemp("voila")
    port = free_port()
    paths = [str(ROOT / "course"), *filter(None, [os.environ.get("JUPYTER_PATH")])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_PATH": os.pathsep.join(paths),
           "JUPYTER_DATA_DIR": str(root / "data"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    cmd = [sys.executable, "-m", "voila", str(ROOT / "course" / "dashboard.ipynb"), *voila_flags(),
           "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    log = (root / "voila.log").open("w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60)
        yield f"http://127.0.0.1:{port}", root / "voila.log"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def test_dashboard_renders_offline_and_its_slider_changes_the_prediction(voila, browser):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.keys import Keys
    url, log = voila
    try:
        browser.get(url + "/")
    except TimeoutException:
        # Voila answers once its kernel has run the whole dashboard; now and then that kernel
        # never replies to a cell (the nbclient hang course/run.py retries, jupyter/nbclient#312),
        # though the same page loads in about 10 s: a reload starts a fresh kernel
        browser.get(url + "/")
    wait_for(browser, "return document.querySelectorAll('.jupyter-widgets .noUi-handle').length >= 3"
                      " && document.querySelectorAll('.jupyter-widgets img').length >= 3", 120,
             "the three widgets and their figures")
    wait_for(browser, f"return ({VERDICT}).includes('holds')", 30, "the attack explorer's verdict")
    text = browser.execute_script("return document.body.innerText")
    assert "Error displaying widget" not in text and "Traceback" not in text, text[:2000]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors[:3]}\nvoila log: {log.read_text()[-2000:]}"
    outside = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
        ".filter(n => !n.startsWith('http://127.0.0.1') && !n.startsWith('data:'))")
    assert not outside, f"loaded from outside 127.0.0.1: {outside}"

    before = browser.execute_script(f"return {VERDICT}")
    assert "ε = 0.080" in before and "clean 7 → adversarial 7, holds" in before, before
    browser.execute_script("document.querySelectorAll('.jupyter-widgets img')"
                           ".forEach(i => i.dataset.before = i.src)")
    # its ε slider: the one whose readout says 0.080 (aria-valuenow rounds to one decimal)
    handle = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jupyter-widgets.widget-slider'))"
        ".filter(s => s.querySelector('.widget-readout')?.textContent.trim() === '0.080')"
        ".map(s => s.querySelector('.noUi-handle'))")
    assert len(handle) == 1, f"{len(handle)} sliders at ε = 0.080"
    handle[0].send_keys(Keys.ARROW_RIGHT)
    after = wait_for(browser, f"const v = {VERDICT}; return v.includes('fooled') && v", 60,
                     "the verdict to change")
    assert "ε = 0.090" in after and "adversarial 7" not in after, after
    # the explorer's figure (clean, perturbation, adversarial, probabilities) was redrawn
    wait_for(browser, "return Array.from(document.querySelectorAll('.jupyter-widgets img'))"
                      ".some(i => !i.dataset.before && i.naturalWidth > 0)", 60, "a new figure")
    assert "Error displaying widget" not in browser.execute_script("return document.body.innerText")
