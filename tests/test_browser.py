"""The course in a real browser (Debian's headless Chromium, driven by Selenium, on 127.0.0.1 only):
the offline site renders its maths and figures with the network cut off, and JupyterLab opens a
saved lesson showing each widget's first frame before anything has run. Running each lesson in
JupyterLab and moving its widget is in test_browser_lab.py (a second file, so `make check` runs
both on two workers).

Marked `browser` (run by `make check`); skipped where Chromium and its driver are not installed
(`apt-get install -y chromium chromium-driver`).
"""

import json

import pytest

from .browser import (  # noqa: F401 (browser and lab are fixtures)
    LESSONS,
    MARKS,
    MATHJAX_DONE,
    browser,
    failed_loads,
    lab,
    serve,
    site,
    wait_for,
    with_widgets,
)

pytestmark = MARKS


# ------------------------------------------------------------------------------ offline site

@pytest.fixture(scope="module")
def site_url(tmp_path_factory):
    """The offline site, built and served by a plain static server on 127.0.0.1."""
    with serve(tmp_path_factory, lambda out: site.build(out, LESSONS)) as url:
        yield url


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

def test_lab_applies_the_course_settings(lab, browser):
    url, token, _ = lab
    browser.get(f"{url}/lab/api/settings/@jupyterlab/apputils-extension:kernels-settings?token={token}")
    body = json.loads(browser.find_element("tag name", "pre").text)
    # an override changes the setting's default; the user has set nothing
    assert body["schema"]["properties"]["commsOverSubshells"]["default"] == "disabled"


@pytest.mark.parametrize("path", [p for p in LESSONS if with_widgets(p)], ids=lambda p: p.stem)
def test_lab_shows_each_widget_before_the_lesson_runs(path, lab, browser):
    url, token, _ = lab
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




def test_site_search_finds_a_section_and_its_link_lands_there(browser, site_url):
    browser.get(f"{site_url}/search.html?q=certified+radius")
    count = wait_for(browser, "return document.querySelectorAll('#results a').length", 10,
                     "search results")
    assert count >= 3
    first = browser.find_element("css selector", "#results a")
    href = first.get_attribute("href")
    first.click()
    wait_for(browser, "return location.href === arguments[0]", 10, "the result's page", href)
    anchor = href.partition("#")[2]
    if anchor:
        # a browser tries the fragment as written, then percent-decoded (nbconvert's ids keep
        # the encoding: "02a-%C2%B7-...")
        assert browser.execute_script("return !!(document.getElementById(arguments[0]) || "
                                      "document.getElementById(decodeURIComponent(arguments[0])))",
                                      anchor)
    browser.get(f"{site_url}/search.html?q=zzzz+no+such+words")
    assert browser.execute_script("return document.querySelectorAll('#results li').length") == 0
