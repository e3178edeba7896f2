"""The offline slides (`make slides`, course/slides.py): every lesson exports to a reveal.js deck
that loads nothing from outside build/slides/, with one slide per `#`/`##` heading.
tests/test_browser_slides.py opens decks in a real browser."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

from .test_site import assert_loads_only_from

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "lessons").glob("*.ipynb"))
_spec = importlib.util.spec_from_file_location("course_slides", ROOT / "course" / "slides.py")
slides = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slides)


def sections(text: str) -> tuple[int, int]:
    """How many slides (top-level <section>s) and sub-slides (sections inside them) a deck has."""
    body = text[text.index('<div class="slides">'):]
    depth, top, sub = 0, 0, 0
    for tag in re.findall(r"<section[\s>]|</section>", body):
        if tag == "</section>":
            depth -= 1
            continue
        depth += 1
        top += depth == 1
        sub += depth == 2
    assert depth == 0, "unbalanced sections"
    return top, sub


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides")
    return out, slides.build(out, LESSONS)


def test_every_lesson_has_a_deck_with_reveal_beside_it(built):
    out, decks = built
    assert [d.name for d in decks] == [f"{p.stem}.slides.html" for p in LESSONS]
    for dst in slides.REVEAL_FILES.values():
        assert (out / slides.REVEAL / dst).exists(), dst


def test_decks_load_nothing_from_outside_the_folder(built):
    out, decks = built
    for deck in decks:
        assert_loads_only_from(out, deck)
        text = deck.read_text()
        assert "unpkg.com" not in text and "cdn" not in text.split("<body")[0].lower(), deck.name
        assert slides.site.WIDGET_VIEW not in text, deck.name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_one_slide_per_heading(path, built):
    out, _ = built
    nb = json.loads(path.read_text())
    levels = [slides.heading_level(c) for c in nb["cells"]]
    top, sub = sections((out / f"{path.stem}.slides.html").read_text())
    assert levels[0] in (1, 2), "a lesson starts with its title"
    assert top == sum(level in (1, 2) for level in levels)
    # each slide is one sub-slide or more; each ### heading starts one more
    assert sub >= top + levels.count(3)
    assert "slideshow" not in json.dumps([c.get("metadata", {}) for c in nb["cells"]]), \
        "the lessons themselves carry no slide metadata (course/slides.py tags a copy)"


def test_links_between_lessons_point_to_decks(built):
    out, decks = built
    for deck in decks:
        for target in re.findall(r'href="([^"#:]+\.(?:ipynb|html))', deck.read_text()):
            assert target.endswith(".slides.html"), f"{deck.name} links to {target}"
            assert (out / target).is_file(), f"{deck.name} links to {target}, absent"


def md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": [text]}


def code(lines, outputs=()):
    return {"cell_type": "code", "metadata": {}, "source": ["x = 1\n"] * lines, "outputs": list(outputs)}


def test_tagging_rule():
    figure = {"output_type": "display_data", "data": {"image/png": "AAAA"}}
    nb = {"cells": [md("# Title\nintro"), md("text"), code(3), md("## Part"), md("### Detail"),
                    code(3, [figure]), code(3, [figure]), code(40), code(40, [figure]), md("## Next")],
          "metadata": {}}
    tagged = slides.tag_slides(nb)
    kinds = [c["metadata"]["slideshow"]["slide_type"] for c in tagged["cells"]]
    # two figures overflow a screen: the second goes on a sub-slide; a long code cell with no
    # output is skipped, one with a figure shows the figure only
    assert kinds == ["slide", "-", "-", "slide", "subslide", "-", "subslide", "skip", "subslide", "slide"]
    assert slides.HIDE_INPUT in tagged["cells"][8]["metadata"]["tags"]
    assert "tags" not in tagged["cells"][5]["metadata"]
    assert "slideshow" not in nb["cells"][0]["metadata"], "tag_slides changes a copy"
