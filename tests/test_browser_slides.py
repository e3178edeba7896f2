"""The offline slides in a real browser (Debian's headless Chromium, on 127.0.0.1 only, the network
cut off): reveal.js starts, the arrow keys move through the deck, the maths renders, nothing fails
to load and the first slide is not blank.

Marked `browser` (run by `make check`); skipped where Chromium and its driver are not installed.
"""

import importlib.util
import io

import pytest

from .browser import (  # noqa: F401 (browser is a fixture)
    LESSONS,
    MARKS,
    MATHJAX_DONE,
    ROOT,
    browser,
    failed_loads,
    serve,
    wait_for,
)

pytestmark = MARKS
_spec = importlib.util.spec_from_file_location("course_slides", ROOT / "course" / "slides.py")
slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slides)
# the first lesson with maths on its slides, and one with widgets (their first frames)
DECKS = [p for p in LESSONS if p.stem.startswith(("01", "02a"))]


@pytest.fixture(scope="module")
def slides_url(tmp_path_factory):
    """Two lessons' decks, built and served by a plain static server on 127.0.0.1."""
    with serve(tmp_path_factory, lambda out: slides.build(out, DECKS)) as url:
        yield url


def ink(png: bytes) -> float:
    """The share of a screenshot's pixels that are not (near) white."""
    from PIL import Image
    grey = Image.open(io.BytesIO(png)).convert("L")
    histogram = grey.histogram()
    return 1 - sum(histogram[240:]) / sum(histogram)


@pytest.mark.parametrize("path", DECKS, ids=lambda p: p.stem)
def test_deck_presents_offline(path, browser, slides_url):
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(f"{slides_url}/{path.stem}.slides.html")
    wait_for(browser, "return window.Reveal && Reveal.isReady && Reveal.isReady()", 30, "reveal.js")
    wait_for(browser, MATHJAX_DONE, 60, "MathJax to typeset the deck")
    assert browser.execute_script("return Reveal.getTotalSlides()") > 1
    first = browser.execute_script("return Reveal.getIndices()")
    assert first["h"] == 0 and first["v"] == 0
    assert ink(browser.get_screenshot_as_png()) > 0.01, "the first slide is blank"

    browser.find_element("tag name", "body").send_keys("\ue014")  # the right arrow
    wait_for(browser, "return Reveal.getIndices().h == 1", 10, "the right arrow to move on a slide")

    maths = browser.execute_script("return document.querySelectorAll('.MathJax').length")
    assert maths > 0, "no maths rendered"
    errors = browser.execute_script(
        "return Array.from(document.querySelectorAll('.MathJax_Error, .noError'))"
        ".map(e => e.textContent)")
    assert not errors, f"TeX that did not render: {errors[:3]}"
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [r for r in resources if not r.startswith((slides_url, "data:"))]
    assert not outside, f"the deck fetched {outside}"
    assert not failed_loads(browser)
