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
            if m:
                return m.group(1).strip()
    return stem


def index_page(rows: list[tuple[str, str]]) -> str:
    """A plain index of the lesson pages."""
    items = "\n".join(f'<li><a href="{html.escape(stem)}.html">{html.escape(title)}</a></li>'
                      for stem, title in rows)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>"
            "<title>robustlab: the course</title></head><body>\n"
            "<h1>robustlab: adversarial robustness of deep learning</h1>\n"
            "<p>Static copies of the lessons with their stored outputs; run them in JupyterLab "
            "(<code>make lab</code>) to use the widgets.</p>\n"
            f"<ol>\n{items}\n</ol>\n</body></html>\n")


def copy_mathjax(out: Path) -> None:
    import jupyter_server_mathjax
    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(source, out / "mathjax", dirs_exist_ok=True)


def build(out: Path, lessons: list[Path]) -> list[Path]:
    """Write the offline site to `out`: an index, one page per lesson, MathJax; returns the pages."""
    out.mkdir(parents=True, exist_ok=True)
    copy_mathjax(out)
    rows, pages = [], []
    for path in lessons:
        nb = json.loads(path.read_text(encoding="utf-8"))
        target = out / f"{path.stem}.html"
        target.write_text(page(nb), encoding="utf-8")
        rows.append((path.stem, _title(nb, path.stem)))
        pages.append(target)
    (out / "index.html").write_text(index_page(rows), encoding="utf-8")
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
