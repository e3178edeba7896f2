"""Export each lesson as reveal.js slides that open offline (`make slides`):
build/slides/<lesson>.slides.html, with reveal.js and MathJax copied beside them.

nbconvert's SlidesExporter loads reveal.js (and require.js, jQuery, mermaid) from CDNs. Here:

- reveal.js 3.9 comes from the `rise` package (pinned in requirements/constraints.txt), which
  ships its static files; they are copied into reveal.js/ laid out as nbconvert's reveal template
  expects of reveal.js 4 (dist/reveal.js, dist/reveal.css, dist/theme/), so the template only
  replaces how Reveal is started (course/templates/slides-offline/);
- MathJax is copied and loaded as in course/site.py, and each widget shows its stored first
  frame (site.static_notebook);
- the lessons carry no slide metadata, so a copy of each is tagged (see `tag_slides`); the
  lessons themselves are not changed.

A deck loads nothing from outside build/slides/: tests/test_slides.py checks every src and href,
and tests/test_browser_slides.py opens decks in a real browser with the network cut off.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("course_site", Path(__file__).resolve().parent / "site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)

REVEAL = "reveal.js"
HIDE_INPUT = "slides-hide-input"
# A slide holds about this many lines of 20px text (reveal's 960x700 stage); past it the cells go
# on a sub-slide below, so a presenter scrolls nothing.
BUDGET = 22
LONG_CODE = 12          # a code cell longer than this shows its outputs only (the lesson has the code)
FIGURE = 12             # what a figure (or a widget's first frame) costs, in lines
# reveal.js 3.x's files in the rise package -> where nbconvert's reveal template looks for them
REVEAL_FILES = {"js/reveal.js": "dist/reveal.js", "css/reveal.css": "dist/reveal.css",
                "css/theme/white.css": "dist/theme/white.css",
                "lib/font/source-sans-pro": "lib/font/source-sans-pro",
                "plugin/notes/notes.js": "plugin/notes/notes.js",
                "plugin/notes/notes.html": "plugin/notes/notes.html", "LICENSE": "LICENSE"}


def heading_level(cell: dict) -> int:
    """1, 2 or 3 for a markdown cell that starts with such a heading, else 0."""
    if cell["cell_type"] != "markdown":
        return 0
    m = re.match(r"\s*(#{1,3})\s", "".join(cell["source"]))
    return len(m.group(1)) if m else 0


def _text_lines(text: str, width: int = 90) -> int:
    return sum(max(1, math.ceil(len(line) / width)) for line in text.splitlines())


def cell_height(cell: dict, show_input: bool = True) -> int:
    """A rough height of a cell on a slide, in lines of text."""
    if cell["cell_type"] == "markdown":
        return _text_lines("".join(cell["source"])) + 1
    height = len("".join(cell["source"]).splitlines()) + 1 if show_input else 0
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        html = "".join(data.get("text/html", ""))
        if "image/png" in data or 'src="data:image/png' in html:
            height += FIGURE * max(1, html.count("<img"))
        elif html:
            height += max(2, html.count("<tr"))
        else:
            height += min(_text_lines("".join(out.get("text", "") or data.get("text/plain", ""))), 10)
    return height


def tag_slides(nb: dict) -> dict:
    """A copy of `nb` with `slideshow.slide_type` set on every cell.

    A markdown cell that starts with a `#` or `##` heading starts a slide, one with `###` a
    sub-slide (below the slide, reached with the down arrow or space); every other cell
    continues the slide ('-') until the slide is fuller than BUDGET lines, when the cell starts a
    sub-slide of its own (a continuation: same heading, next screen). A code cell longer than
    LONG_CODE lines shows its outputs only; one that then shows nothing is skipped.
    """
    nb = json.loads(json.dumps(nb))
    used = 0
    for i, cell in enumerate(nb["cells"]):
        level = heading_level(cell)
        show_input = not (cell["cell_type"] == "code"
                          and len("".join(cell["source"]).splitlines()) > LONG_CODE)
        if not show_input:
            cell.setdefault("metadata", {}).setdefault("tags", []).append(HIDE_INPUT)
        height = cell_height(cell, show_input)
        if level in (1, 2) or i == 0:
            kind, used = "slide", height
        elif level == 3:
            kind, used = "subslide", height
        elif height == 0:
            kind = "skip"
        elif used + height > BUDGET and used > 0:
            kind, used = "subslide", height
        else:
            kind, used = "-", used + height
        cell.setdefault("metadata", {})["slideshow"] = {"slide_type": kind}
    return nb


def exporter():
    """nbconvert's slides exporter set up for offline decks (local reveal.js and MathJax)."""
    from nbconvert import SlidesExporter
    from traitlets.config import Config
    config = Config({"TagRemovePreprocessor": {"enabled": True, "remove_input_tags": [HIDE_INPUT]}})
    return SlidesExporter(config=config, template_name="slides-offline",
                          **site.TEMPLATE_DIRS, mathjax_url=site.MATHJAX_URL,
                          reveal_url_prefix=REVEAL, reveal_theme="white", reveal_scroll=True)


def deck(nb: dict) -> str:
    """The offline reveal.js deck of a lesson notebook (a dict as stored on disk)."""
    import nbformat
    static = site.static_notebook(tag_slides(nb))
    body, _ = exporter().from_notebook_node(nbformat.reads(json.dumps(static), as_version=4))
    # links between lessons point to their decks, not to the site's pages
    return re.sub(r'href="((?:\.\./lessons/)?[0-9][0-9a-z]*-[\w-]+)\.html', r'href="\1.slides.html', body)


def copy_reveal(out: Path) -> None:
    spec = importlib.util.find_spec("rise")  # not imported: rise's __init__ needs pkg_resources
    if spec is None:
        raise SystemExit("reveal.js comes from the rise package: pip install -c "
                         "requirements/constraints.txt rise (it is in the course extra)")
    source = Path(spec.submodule_search_locations[0]) / "static" / "reveal.js"
    for src, dst in REVEAL_FILES.items():
        target = out / REVEAL / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if (source / src).is_dir():
            shutil.copytree(source / src, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(source / src, target)


def build(out: Path, lessons: list[Path]) -> list[Path]:
    """Write one deck per lesson to `out`, with reveal.js and MathJax; returns the decks."""
    out.mkdir(parents=True, exist_ok=True)
    site.copy_mathjax(out)
    copy_reveal(out)
    decks = []
    for path in lessons:
        target = out / f"{path.stem}.slides.html"
        target.write_text(deck(json.loads(path.read_text(encoding="utf-8"))), encoding="utf-8")
        decks.append(target)
    return decks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "slides", help="output folder")
    ap.add_argument("--only", default="", help="comma-separated lesson prefixes, e.g. 01,02a")
    args = ap.parse_args(argv)
    decks = build(args.out, site.select_lessons(ap, args.only))
    print(f"{len(decks)} decks in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
