"""Run every lesson headless and print a summary: `make course` (fast mode by default).

Executes lessons/*.ipynb in order with papermill, writes each executed notebook and an HTML copy
under build/, and prints one row per lesson: status, seconds and the key figures the lesson
reported with `robustlab.report(...)`. A failing lesson fails the command and names its cell.

    python course/run.py            # fast mode (FAST=True), what CI and `make course` run
    python course/run.py --full     # the full mode learners see
    python course/run.py --inplace  # re-execute in full mode and store outputs in lessons/
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
FIGURES_MIME = "application/vnd.robustlab.figures+json"


def key_figures(nb) -> dict:
    """The figures a notebook reported through robustlab.report (last report wins per key)."""
    figures = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            figures.update(out.get("data", {}).get(FIGURES_MIME, {}))
    return figures


def run_lesson(path: Path, out_dir: Path, fast: bool, inplace: bool) -> dict:
    import nbformat
    import papermill as pm
    from nbconvert import HTMLExporter

    target = path if inplace else out_dir / path.name
    t0 = time.time()
    row = {"lesson": path.stem, "status": "ok", "error": ""}
    try:
        # in place, the stored notebook keeps its own defaults: no injected-parameters cell
        params = {} if inplace else {"FAST": fast}
        nb = pm.execute_notebook(str(path), str(target), parameters=params,
                                 cwd=str(LESSONS), kernel_name="python3", progress_bar=False)
    except pm.PapermillExecutionError as e:
        row["status"] = "FAILED"
        row["error"] = f"cell {e.exec_count} (index {e.cell_index}): {e.ename}: {e.evalue}"
        nb = nbformat.read(str(target), as_version=4)
    except Exception as e:  # a kernel that died, a notebook that does not parse, ...
        row["status"] = "FAILED"
        row["error"] = f"{type(e).__name__}: {e}"
        nb = None
    row["seconds"] = time.time() - t0
    if nb is not None:
        row["figures"] = key_figures(nb)
        html, _ = HTMLExporter().from_notebook_node(nbformat.from_dict(nb))
        (out_dir / f"{path.stem}.html").write_text(html, encoding="utf-8")
    else:
        row["figures"] = {}
    return row


def table(rows) -> str:
    head = "| lesson | status | seconds | key figures |\n| --- | --- | ---: | --- |"
    lines = [f"| {r['lesson']} | {r['status']} | {r['seconds']:.1f} | "
             + (", ".join(f"{k} = {v}" for k, v in r["figures"].items()) or r["error"]) + " |"
             for r in rows]
    return "\n".join([head, *lines])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="run the full mode (FAST=False)")
    p.add_argument("--inplace", action="store_true",
                   help="execute in full mode and store the outputs in lessons/")
    p.add_argument("--only", default="", help="run only lessons whose file name contains this")
    p.add_argument("--out", default=str(ROOT / "build"), help="output folder (default build/)")
    args = p.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [q for q in sorted(LESSONS.glob("*.ipynb")) if args.only in q.name]
    if not paths:
        print(f"no lessons match {args.only!r} in {LESSONS}", file=sys.stderr)
        return 1
    rows = []
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        rows.append(run_lesson(path, out_dir, fast=not (args.full or args.inplace),
                               inplace=args.inplace))
        if rows[-1]["status"] != "ok":
            print(f"  {path.name} FAILED at {rows[-1]['error']}", flush=True)
    summary = table(rows)
    print("\n" + summary)
    (out_dir / "summary.md").write_text(summary + "\n")
    failed = [r["lesson"] for r in rows if r["status"] != "ok"]
    if failed:
        print(f"\n{len(failed)} lesson(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\nall {len(rows)} lessons ran; notebooks and HTML in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
