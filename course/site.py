"""Build the course as a static site that works offline (`make site`): build/site/index.html and
one HTML page per lesson.

nbconvert's own export of a lesson needs the network (require.js, MathJax and the widgets'
html-manager come from CDNs) and shows an empty output where each widget is. Here:

- each widget output is replaced by what the lesson stored for it: the figures its output areas
  drew when the lesson ran (its first frame), below a line naming its controls and their start
  values, and a note that the widget is live in JupyterLab;
- MathJax is copied beside the pages (from the jupyter-server-mathjax package) and loaded
  from there; require.js, which only the widgets' renderer needs, is not loaded at all;
- links between lessons (``02a-white-box.ipynb``) point to the pages (``02a-white-box.html``).

A page loads nothing from outside build/site/: tests/test_site.py checks every src and href,
and a real browser (tests/test_browser.py) checks that the maths renders and the figures show.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
TEMPLATES = Path(__file__).resolve().parent / "templates"
# course/templates/: where the course's templates live, and the root their includes are found under
TEMPLATE_DIRS = {"extra_template_basedirs": [str(TEMPLATES)], "extra_template_paths": [str(TEMPLATES)]}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
MATHJAX_URL = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
CONTROLS = {"FloatSlider", "IntSlider", "FloatLogSlider", "Dropdown", "ToggleButtons",
            "RadioButtons", "Checkbox", "SelectionSlider", "IntText", "FloatText", "Text"}


def _children(state: dict) -> list[str]:
    refs = state.get("children", [])
    return [r.removeprefix("IPY_MODEL_") for r in refs if isinstance(r, str)]


def _control_text(name: str, state: dict) -> str:
    label = state.get("description") or name.removesuffix("Model")
    if "_options_labels" in state and state.get("index") is not None:
        value = state["_options_labels"][state["index"]]
    else:
        value = state.get("value")
    return f"{label} {value}"


def widget_outputs(model_id: str, models: dict) -> tuple[list[str], list[dict]]:
    """The controls (as "label value" strings) and stored outputs of a widget and its children.

    Walks the stored widget state from `model_id` depth first, in display order: a control
    contributes its description and start value, an Output widget the outputs it captured.
    """
    controls, outputs = [], []
    stack = [model_id]
    while stack:
        mid = stack.pop(0)
        model = models.get(mid)
        if model is None:
            raise ValueError(f"widget model {mid} is shown in the lesson but missing from the "
                             "notebook's stored widget state: re-run the lesson with "
                             "`course/run.py --inplace`")
        name, state = model["model_name"], model["state"]
        if name == "OutputModel":
            outputs.extend(state.get("outputs", []))
        elif name.removesuffix("Model") in CONTROLS:
            controls.append(_control_text(name, state))
        stack[:0] = _children(state)
    return controls, outputs


def _static_widget(controls: list[str], outputs: list[dict]) -> dict:
    """One display_data output standing for a widget: a caption and its stored figures."""
    parts = ['<div class="static-widget">',
             '<p class="static-widget-note"><em>Interactive widget (live when the lesson runs in '
             'JupyterLab); its first frame'
             + (": " + html.escape(", ".join(controls)) if controls else "") + ".</em></p>"]
    for out in outputs:
        data = out.get("data", {})
        if "image/png" in data:
            parts.append(f'<img alt="widget figure" src="data:image/png;base64,{data["image/png"]}"/>')
        elif "text/html" in data:
            parts.append("".join(data["text/html"]))
        elif out.get("output_type") == "stream" or "text/plain" in data:
            text = "".join(out.get("text", "") or data.get("text/plain", ""))
            parts.append(f"<pre>{html.escape(text)}</pre>")
    parts.append("</div>")
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": "\n".join(parts)}}


def static_notebook(nb: dict) -> dict:
    """A copy of lesson `nb` with each widget output replaced by its first frame, no widget state."""
    nb = json.loads(json.dumps(nb))
    models = nb["metadata"].pop("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            src = "".join(cell["source"])
            cell["source"] = re.sub(r"\]\(((?:\.\./lessons/)?[0-9][0-9a-z]*-[\w-]+)\.ipynb", r"](\1.html",
                                    src)
        for i, out in enumerate(cell.get("outputs", [])):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is not None:
                cell["outputs"][i] = _static_widget(*widget_outputs(view["model_id"], models))
    return nb


def exporter():
    """nbconvert's lab HTML exporter set up for offline pages (local MathJax, no require.js)."""
    from nbconvert import HTMLExporter
    return HTMLExporter(template_name="offline", **TEMPLATE_DIRS, mathjax_url=MATHJAX_URL)


def page(nb: dict) -> str:
    """The offline HTML page of a lesson notebook (a dict as stored on disk)."""
    import nbformat
    body, _ = exporter().from_notebook_node(nbformat.reads(json.dumps(static_notebook(nb)), as_version=4))
    return body


def _title(nb: dict, stem: str) -> str:
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            m = re.search(r"^#\s+(.+)$", "".join(cell["source"]), re.M)
            if m:  # plain text: the title also goes where no MathJax runs (index, links)
                title = re.sub(r"\$([^$]*)\$", r"\1", m.group(1).strip())
                return re.sub(r"_(?=\w)", "", re.sub(r"[\\{}]", "", title))
    return stem


def index_page(rows: list[tuple[str, str]]) -> str:
    """A plain index of the lesson pages."""
    items = "\n".join(f'<li><a href="{html.escape(stem)}.html">{html.escape(title)}</a></li>'
                      for stem, title in rows)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            "<title>robustlab: the course</title></head><body>\n"
            "<h1>robustlab: adversarial robustness of deep learning</h1>\n"
            "<p>Static copies of the lessons with their stored outputs; run them in JupyterLab "
            "(<code>make lab</code>) to use the widgets. <a href=\"search.html\">Search the course</a>."
            "</p>\n"
            f"<ol>\n{items}\n</ol>\n</body></html>\n")


def copy_mathjax(out: Path) -> None:
    import jupyter_server_mathjax
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(source, out / "mathjax", dirs_exist_ok=True)


def navigation(rows: list[tuple[str, str]], i: int) -> str:
    """The bar above and below lesson `i` of `rows` ((stem, title) in order): index, previous,
    next, search."""
    links = ['<a href="index.html">All lessons</a>']
    if i > 0:
        links.append(f'<a rel="prev" href="{rows[i - 1][0]}.html">← {html.escape(rows[i - 1][1])}</a>')
    if i + 1 < len(rows):
        links.append(f'<a rel="next" href="{rows[i + 1][0]}.html">{html.escape(rows[i + 1][1])} →</a>')
    links.append('<a href="search.html">Search</a>')
    return ('<nav class="course-nav" style="max-width:1000px;margin:1em auto;font-family:sans-serif">'
            + " · ".join(links) + "</nav>")


def with_navigation(page_html: str, nav: str) -> str:
    """`page_html` with `nav` right after <body ...> and right before </body>."""
    start = page_html.index(">", page_html.index("<body")) + 1
    end = page_html.rindex("</body>")
    return page_html[:start] + nav + page_html[start:end] + nav + page_html[end:]


class _Sections(HTMLParser):
    """The text of a page's markdown cells, cut at its headings: [(anchor, heading, text)]."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[list[str]] = [["", "", ""]]
        self.depth = 0          # > 0 inside a markdown cell's rendered output
        self.heading = None     # the id of the heading being read
        self.skip = 0           # inside the heading's anchor link (a pilcrow)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += tag not in VOID
        elif "jp-MarkdownOutput" in (attrs.get("class") or ""):
            self.depth = 1
        if self.depth and re.fullmatch(r"h[1-4]", tag) and attrs.get("id"):
            self.heading = attrs["id"]
            self.sections.append([attrs["id"], "", ""])
        if tag == "a" and "anchor-link" in (attrs.get("class") or ""):
            self.skip += 1

    def handle_endtag(self, tag):
        if tag == "a" and self.skip:
            self.skip -= 1
        if self.depth:
            self.depth -= 1
        if re.fullmatch(r"h[1-4]", tag):
            self.heading = None

    def handle_data(self, data):
        if not self.depth or self.skip:
            return
        field = 1 if self.heading else 2
        self.sections[-1][field] += data


VOID = {"br", "img", "hr", "input", "meta", "link", "col", "area", "base", "wbr", "source"}


def search_entries(stem: str, title: str, page_html: str) -> list[dict]:
    """One search entry per heading of a lesson page: its link, heading and the prose under it."""
    parser = _Sections()
    parser.feed(page_html)
    entries = []
    for anchor, heading, text in parser.sections:
        text = " ".join(text.split())
        if heading.strip() or text:
            entries.append({"href": f"{stem}.html" + (f"#{anchor}" if anchor else ""),
                            "lesson": title, "heading": " ".join(heading.split()), "text": text})
    return entries


SEARCH_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>robustlab: search the course</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}li{margin:.6em 0}
.snippet{color:#444;font-size:90%}</style></head><body>
<p><a href="index.html">All lessons</a></p>
<h1>Search the course</h1>
<input id="q" type="search" size="50" placeholder="e.g. certified radius" autofocus/>
<p id="count"></p><ol id="results"></ol>
<script>
const ENTRIES = __ENTRIES__;
function show(query) {
  const words = query.toLowerCase().split(/\s+/).filter(w => w);
  const list = document.getElementById("results");
  list.innerHTML = "";
  const hits = words.length ? ENTRIES.filter(e => {
    const hay = (e.heading + " " + e.text).toLowerCase();
    return words.every(w => hay.includes(w)); }) : [];
  document.getElementById("count").textContent = words.length ? hits.length + " sections" : "";
  for (const e of hits.slice(0, 100)) {
    const item = document.createElement("li"), link = document.createElement("a");
    link.href = e.href;
    link.textContent = e.lesson + (e.heading ? " — " + e.heading : "");
    const at = e.text.toLowerCase().indexOf(words[0]);
    const snippet = document.createElement("div");
    snippet.className = "snippet";
    snippet.textContent = e.text.slice(Math.max(0, at - 80), at + 160);
    item.append(link, snippet);
    list.append(item);
  }
}
const box = document.getElementById("q");
box.addEventListener("input", () => show(box.value));
const given = new URLSearchParams(location.search).get("q");
if (given) { box.value = given; show(given); }
</script></body></html>
"""


def search_page(entries: list[dict]) -> str:
    """A search page that works offline: the index is inside it (a file:// page cannot fetch)."""
    data = json.dumps(entries, ensure_ascii=False).replace("</", "<\\/")
    return SEARCH_PAGE.replace("__ENTRIES__", data)


def build(out: Path, lessons: list[Path]) -> list[Path]:
    """Write the offline site to `out`: an index, one page per lesson with links to the previous
    and next lessons, a search page, MathJax; returns the lesson pages."""
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    notebooks = [json.loads(path.read_text(encoding="utf-8")) for path in lessons]
    rows = [(path.stem, _title(nb, path.stem)) for path, nb in zip(lessons, notebooks)]
    pages, entries = [], []
    for i, (path, nb) in enumerate(zip(lessons, notebooks)):
        body = page(nb)
        entries += search_entries(*rows[i], body)
        target = out / f"{path.stem}.html"
        target.write_text(with_navigation(body, navigation(rows, i)), encoding="utf-8")
        pages.append(target)
    (out / "index.html").write_text(index_page(rows), encoding="utf-8")
    (out / "search.html").write_text(search_page(entries), encoding="utf-8")
    return pages


def select_lessons(ap: argparse.ArgumentParser, only: str) -> list[Path]:
    """The lessons, or those whose names start with one of the comma-separated prefixes `only`."""
    lessons = sorted(LESSONS.glob("*.ipynb"))
    if only:
        wanted = [p.strip() for p in only.split(",") if p.strip()]
        lessons = [p for p in lessons if any(p.stem.startswith(w) for w in wanted)]
        if not lessons:
            ap.error(f"--only {only!r} matches no lesson in {LESSONS}")
    return lessons


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="output folder")
    ap.add_argument("--only", default="", help="comma-separated lesson prefixes, e.g. 01,02a")
    args = ap.parse_args(argv)
    pages = build(args.out, select_lessons(ap, args.only))
    print(f"{len(pages)} lesson pages and index.html in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
