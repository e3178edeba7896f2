"""Shared by the browser tests: Debian's headless Chromium driven by Selenium, on 127.0.0.1 only,
and JupyterLab serving a copy of the lessons with the course's settings."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver")

MARKS = [pytest.mark.browser,
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


def wait_for(driver, script: str, timeout: float, what: str, *args):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script, *args)
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


@contextmanager
def serve(tmp_path_factory, build):
    """A fresh folder filled by `build(folder)` and served by a plain static server on 127.0.0.1;
    yields its URL."""
    folder = tmp_path_factory.mktemp("served")
    build(folder)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(folder)],
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
           "--LabApp.expose_app_in_browser=True", "--allow-root"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        proc.terminate()
        proc.wait(30)
