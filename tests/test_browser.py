"""The course in a real browser (Debian's headless Chromium, driven by Selenium, on 127.0.0.1 only):
the offline site renders its maths and figures with the network cut off, and JupyterLab opens a
saved lesson showing each widget's first frame before anything has run.

Marked `browser` (run by `make check`); skipped where Chromium and its driver are not installed
(`apt-get install -y chromium chromium-driver`).
"""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                 reason="no Chromium: apt-get install -y chromium chromium-driver")]

_spec = importlib.util.spec_from_file_location("course_site", ROOT / "course" / "site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)


def with_widgets(path: Path) -> bool:
    return site.WIDGET_VIEW in path.read_text()


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                # the network is cut off: only 127.0.0.1 and files resolve
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


# ------------------------------------------------------------------------------ offline site

@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    """The offline site, built and served by a plain static server on 127.0.0.1."""
    out = tmp_path_factory.mktemp("site")
    site.build(out, LESSONS)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


# MathJax 2's MathML output declares TeX web fonts (MathJax_AMS, _Script, ...) that
# jupyter-server-mathjax does not ship; the browser falls back to its own fonts for those few
# symbols. Anything else that fails to load is a defect of the site.
BENIGN = ("/mathjax/fonts/HTML-CSS/TeX/", "about:blank", "/favicon.ico")


def failed_loads(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and not any(b in e["message"] for b in BENIGN)]


MATHJAX_DONE = """
if (!window.MathJax || !MathJax.Hub) return false;
if (window.__typeset === undefined) { window.__typeset = false;
  MathJax.Hub.Queue(function () { window.__typeset = true; }); }
return window.__typeset;"""


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_site_page_renders_offline(path, browser, site_url):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{site_url}/{path.stem}.html")
    wait_for(browser, MATHJAX_DONE, 60, "MathJax to typeset the page")
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [r for r in resources if not r.startswith((site_url, "data:"))]
    assert not outside, f"the page fetched {outside}"
    assert not failed_loads(browser)
    maths = browser.execute_script("return document.querySelectorAll('.MathJax').length")
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.mjx-merror, .MathJax_Error, .noError'))"
        ".map(e => e.textContent)")
    assert not errors, f"TeX that did not render: {errors[:3]}"
    raw = browser.execute_script(
        "return Array.from(document.querySelectorAll('.jp-MarkdownOutput'))"
        ".filter(e => /\\$[^$\\s][^$]*\\$/.test(e.innerText)).map(e => e.innerText.slice(0, 80))")
    assert not raw, f"maths left as raw $...$: {raw[:3]}"
    if "$" in path.read_text():
        assert maths > 0
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    assert broken == 0, "an image did not load"
    if with_widgets(path):
        frames = browser.execute_script(
            "return document.querySelectorAll('.static-widget img').length")
        assert frames >= 1, "no widget first frame on the page"


# ------------------------------------------------------------------------------ JupyterLab

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of the lessons on 127.0.0.1, with the course's settings."""
    root = tmp_path_factory.mktemp("lab")
    for path in LESSONS:
        shutil.copy(path, root / path.name)
    settings = root / ".settings"
    settings.mkdir()
    shutil.copy(ROOT / "binder" / "overrides.json", settings / "overrides.json")
    user = root / ".user-settings" / "@jupyterlab" / "notebook-extension"
    user.mkdir(parents=True)
    # every cell in the page, not only those scrolled into view, so the test can find them all
    (user / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = free_port(), "robustlab-test"
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(root / ".user-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(root / ".workspaces"), "OMP_NUM_THREADS": "1",
           "JUPYTER_DATA_DIR": str(root / ".data")}
    # what `make lab` and binder/postBuild do: JupyterLab renders no widget of an untrusted
    # notebook (it shows the widget's text, "VBox(children=...)")
    subprocess.run([sys.executable, "-m", "jupyter", "trust", *[p.name for p in LESSONS]],
                   cwd=root, env=env, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}", f"--LabApp.app_settings_dir={settings}",
           "--allow-root"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        proc.wait(30)


def test_lab_applies_the_course_settings(lab, browser):
    url, token = lab
    browser.get(f"{url}/lab/api/settings/@jupyterlab/apputils-extension:kernels-settings?token={token}")
    body = json.loads(browser.find_element("tag name", "pre").text)
    # an override changes the setting's default; the user has set nothing
    assert body["schema"]["properties"]["commsOverSubshells"]["default"] == "disabled"


@pytest.mark.parametrize("path", [p for p in LESSONS if with_widgets(p)], ids=lambda p: p.stem)
def test_lab_shows_each_widget_before_the_lesson_runs(path, lab, browser):
    url, token = lab
    browser.get(f"{url}/lab/tree/{path.name}?token={token}&reset")
    views = sum(site.WIDGET_VIEW in o.get("data", {})
                for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", []))
    wait_for(browser, f"return document.querySelectorAll('.jupyter-widgets img').length >= {views}",
             120, f"{views} widget first frames drawn from the stored state")
    text = browser.execute_script("return document.body.innerText")
    assert "Error displaying widget" not in text
    assert "model not found" not in text
    logs = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [m for m in logs if "widget" in m.lower()], logs
