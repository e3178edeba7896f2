"""The offline site (`make site`, course/site.py): every page loads nothing from outside the site,
each widget shows its stored first frame, and the stored widget state a lesson needs is complete.
tests/test_browser.py opens the same pages in a real browser."""

import html
import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("course_site", ROOT / "course" / "site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)


def widget_views(nb: dict) -> list[str]:
    return [o["data"][site.WIDGET_VIEW]["model_id"] for c in nb["cells"] if c["cell_type"] == "code"
            for o in c.get("outputs", []) if site.WIDGET_VIEW in o.get("data", {})]


def stored_models(nb: dict) -> dict:
    return nb["metadata"].get("widgets", {}).get(site.WIDGET_STATE, {}).get("state", {})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    return out, site.build(out, LESSONS)


def test_every_lesson_has_a_page_and_the_index_links_them(built):
    out, pages = built
    assert [p.stem for p in pages] == [p.stem for p in LESSONS]
    index = (out / "index.html").read_text()
    for p in pages:
        assert f'href="{p.name}"' in index


def assert_loads_only_from(out, page):
    """Everything `page` makes a browser fetch by itself (scripts, images, stylesheets, frames,
    ES module imports) is a file under `out`; no require.js, no widget renderer."""
    text = page.read_text()
    loads = re.findall(r'<(?:script|img|iframe)[^>]*\ssrc="([^"]*)"', text)
    loads += re.findall(r'<link[^>]*\shref="([^"]*)"', text)
    loads += re.findall(r"\bimport\s[^;'\"]*\sfrom\s+['\"]([^'\"]+)['\"]", text)
    for url in loads:
        if url.startswith("data:"):
            continue
        assert "//" not in url, f"{page.name} loads {url}"
        assert (out / url.split("?")[0]).is_file(), f"{page.name} loads {url}, absent"
    assert "require.js" not in text and "html-manager" not in text, page.name


def test_pages_load_nothing_from_outside_the_site(built):
    out, pages = built
    for page in [*pages, out / "index.html"]:
        assert_loads_only_from(out, page)
        text = page.read_text()
        assert site.WIDGET_VIEW not in text, page.name


def test_links_between_lessons_point_to_pages(built):
    out, pages = built
    for page in pages:
        for target in re.findall(r'href="([^"#:]+\.(?:ipynb|html))', page.read_text()):
            assert target.endswith(".html"), f"{page.name} links to the notebook {target}"
            assert (out / target).is_file(), f"{page.name} links to {target}, absent"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_each_widget_shows_its_first_frame(path, built):
    out, _ = built
    nb = json.loads(path.read_text())
    text = (out / f"{path.stem}.html").read_text()
    blocks = re.findall(r'<div class="static-widget">(.*?)</div>', text, re.S)
    assert len(blocks) == len(widget_views(nb))
    for block in blocks:
        assert 'src="data:image/png;base64,' in block, "a widget without its stored figure"
        assert "None" not in block.split("</p>")[0], "a control stored with nothing selected"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_stored_widget_state_is_complete(path):
    """JupyterLab draws a saved lesson's widgets from this state before anything runs: every view
    and every child it names must be there, and no dropdown may be stored with nothing selected
    (it shows blank)."""
    nb = json.loads(path.read_text())
    models = stored_models(nb)
    for view in widget_views(nb):
        _, outputs = site.widget_outputs(view, models)
        assert any("image/png" in o.get("data", {}) for o in outputs), "no first frame stored"
    refs = set(re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(models)))
    assert refs <= set(models), "a widget refers to a model that was not stored"
    for model in models.values():
        if "_options_labels" in model["state"]:
            assert model["state"].get("index") is not None, \
                f"{model['state'].get('description')!r} is stored with nothing selected"


def test_a_missing_widget_model_is_named():
    with pytest.raises(ValueError, match="abc.*missing from the notebook's stored widget state"):
        site.widget_outputs("abc", {})


def test_static_notebook_replaces_views_and_keeps_the_rest():
    state = {"out": {"model_name": "OutputModel", "state": {"outputs": [
                 {"output_type": "display_data", "data": {"image/png": "AAAA"}}]}},
             "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_s", "IPY_MODEL_out"]}},
             "s": {"model_name": "FloatSliderModel", "state": {"description": "ε", "value": 0.25}}}
    view = {"output_type": "display_data", "data": {site.WIDGET_VIEW: {"model_id": "box"},
                                                    "text/plain": ["VBox(...)"]}}
    nb = {"cells": [{"cell_type": "markdown", "source": ["see [02a](02a-white-box.ipynb)"]},
                    {"cell_type": "code", "source": [], "outputs": [view]}],
          "metadata": {"widgets": {site.WIDGET_STATE: {"state": state}}}}
    static = site.static_notebook(nb)
    assert "widgets" not in static["metadata"] and "widgets" in nb["metadata"]  # a copy
    html = static["cells"][1]["outputs"][0]["data"]["text/html"]
    assert "ε 0.25" in html and 'src="data:image/png;base64,AAAA"' in html
    assert static["cells"][0]["source"] == "see [02a](02a-white-box.html)"


def test_each_page_links_to_its_neighbours_and_the_search(built):
    out, pages = built
    for i, page in enumerate(pages):
        text = page.read_text()
        assert text.count('<nav class="course-nav"') == 2  # above and below the lesson
        assert 'href="search.html"' in text and 'href="index.html"' in text
        if i > 0:
            assert f'rel="prev" href="{pages[i - 1].name}"' in text
        if i + 1 < len(pages):
            assert f'rel="next" href="{pages[i + 1].name}"' in text
        assert ("rel=\"prev\"" in text) == (i > 0) and ("rel=\"next\"" in text) == (i + 1 < len(pages))


def test_search_index_covers_every_lesson_and_its_links_land_on_headings(built):
    out, pages = built
    text = (out / "search.html").read_text()
    entries = json.loads(re.search(r"const ENTRIES = (.*);\n", text).group(1))
    assert {e["href"].split("#")[0] for e in entries} == {p.name for p in pages}
    ids = {p.name: {html.unescape(i) for i in re.findall(r'\sid="([^"]+)"', p.read_text())}
           for p in pages}
    for e in entries:
        page, _, anchor = e["href"].partition("#")
        assert not anchor or anchor in ids[page], e["href"]
    # the prose is indexed under its heading, the heading's pilcrow link is not
    hits = [e for e in entries if "Exercise 1" in e["heading"]]
    assert hits and all("¶" not in e["heading"] for e in entries)
    assert any("certified" in e["text"] for e in entries)


def test_titles_are_plain_text():
    cells = [{"cell_type": "markdown", "source": ["# 02b · Beyond $L_p$ and $\\ell_\\infty$"]}]
    assert site._title({"cells": cells}, "x") == "02b · Beyond Lp and ellinfty"
