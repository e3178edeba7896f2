"""Run every lesson headless and print a summary: `make course` (fast mode by default).

Executes lessons/*.ipynb in order with papermill, writes each executed notebook and an HTML copy
under build/, and prints one row per lesson: status, seconds and the key figures the lesson
reported with `robustlab.report(...)`. A failing lesson fails the command and names its cell;
so does a cell that runs longer than --timeout seconds (default 600, far above the slowest
cell of any lesson, about 12 s in full mode), so a hanging cell cannot block `make course`.

    python course/run.py            # fast mode (FAST=True), what CI and `make course` run
    python course/run.py --full     # the full mode learners see
    python course/run.py --inplace  # re-execute in full mode and store outputs in lessons/
    python course/run.py --timeout 60   # fail any cell that runs longer than 60 s
    python course/run.py --seed 1       # another seed for every random draw of the lessons
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"
FIGURES_MIME = "application/vnd.robustlab.figures+json"
CELL_TIMEOUT = 600  # seconds; the slowest cell of any lesson takes about 12 s in full mode
# The kernel's own log is noise a learner cannot act on: a warning that the local TCP socket is
# unencrypted, and "KeyboardInterrupt caught in kernel" when jupyter_client's shutdown (which
# always sends SIGINT first) lands while the kernel handles a message. What a cell prints,
# warnings included, still reaches the notebook, and a failing cell still fails the run.
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


def key_figures(nb) -> dict:
    """The figures a notebook reported through robustlab.report (last report wins per key)."""
    figures = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            figures.update(out.get("data", {}).get(FIGURES_MIME, {}))
    return figures


def timed_out_cell(nb) -> str:
    """Which cell of a notebook papermill stopped on a timeout: the last one it started."""
    started = [i for i, cell in enumerate(nb.cells)
               if cell.get("metadata", {}).get("papermill", {}).get("start_time")]
    if not started:
        return "an unknown cell"
    first_line = (nb.cells[started[-1]].source.strip().splitlines() or [""])[0]
    return f"cell index {started[-1]} ({first_line[:60]!r})"


def no_output_sync() -> None:
    """Make nbclient stop echoing Output-widget contents back to the kernel.

    nbclient imitates a front end for `ipywidgets.Output`: each output a cell displays inside
    one is stored in the widget state (what the static pages show) and also sent back to the
    kernel as a comm message on the shell channel, from the task that reads IOPub while another
    task waits on that same channel for the cell's reply. Now and then that reply is then not
    seen until the cell's timeout runs out, with the kernel long idle (jupyter/nbclient#312):
    3 of 4 runs of 02d's audio widget waited the full timeout. Nothing in the lessons reads an
    Output widget's outputs back in the kernel, so the echo is dropped; the stored widget state
    is unchanged (18 of 18 runs without a stall, same state).
    """
    import nbclient.client
    from nbclient.output_widget import OutputWidget

    if nbclient.client.OutputWidget is not OutputWidget:
        return  # already replaced

    class StoredOnly(OutputWidget):
        def sync_state(self) -> None:  # the echo to the kernel, the only shell-channel send
            pass

    nbclient.client.OutputWidget = StoredOnly


def execute(path: Path, target: Path, parameters: dict, timeout: int = CELL_TIMEOUT,
            retries: int = 1):
    """Run a notebook headless with papermill, from lessons/, and save it to `target`.

    The one way the course runner and the tests execute a lesson: same working folder, kernel,
    per-cell timeout and quiet kernel log. The kernel inherits this process's environment, so a
    caller imitates another CPU by setting ATEN_CPU_CAPABILITY and friends before the call.

    A cell that times out is run again, with the whole lesson, up to `retries` times; a cell
    that really runs too long times out again and fails. (The stall that once made cells with
    widgets wait out the whole timeout with the kernel idle is removed by `no_output_sync`.)
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError

    no_output_sync()

    for attempt in range(retries + 1):
        try:
            return pm.execute_notebook(str(path), str(target), parameters=parameters,
                                       cwd=str(LESSONS), kernel_name="python3",
                                       progress_bar=False, execution_timeout=timeout,
                                       extra_arguments=list(KERNEL_ARGS))
        except CellTimeoutError:
            if attempt == retries:
                raise
            print(f"{path.name}: a cell passed {timeout} s; running the lesson once more",
                  file=sys.stderr, flush=True)


def run_lesson(path: Path, out_dir: Path, fast: bool, inplace: bool,
               timeout: int = CELL_TIMEOUT, seed: int | None = None) -> dict:
    """Execute one lesson and return its summary row; `timeout` bounds each cell, in seconds.

    `seed`, when given, replaces the lesson's SEED parameter (every random draw it makes).
    """
    import nbformat
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    from nbconvert import HTMLExporter

    target = path if inplace else out_dir / path.name
    t0 = time.time()
    row = {"lesson": path.stem, "status": "ok", "error": ""}
    try:
        # in place, the stored notebook keeps its own defaults: no injected-parameters cell
        params = {} if inplace else {"FAST": fast}
        if seed is not None:
            params["SEED"] = seed
        nb = execute(path, target, params, timeout)
    except pm.PapermillExecutionError as e:
        row["status"] = "FAILED"
        row["error"] = f"cell {e.exec_count} (index {e.cell_index}): {e.ename}: {e.evalue}"
        nb = nbformat.read(str(target), as_version=4)
    except CellTimeoutError:  # papermill has saved the notebook up to the cell that hung
        row["status"] = "FAILED"
        nb = nbformat.read(str(target), as_version=4)
        row["error"] = f"{timed_out_cell(nb)} timed out after {timeout} s (--timeout)"
    except Exception as e:  # a kernel that died, a notebook that does not parse, ...
        row["status"] = "FAILED"
        row["error"] = f"{type(e).__name__}: {e}"
        nb = None
    row["seconds"] = time.time() - t0
    if nb is not None and inplace:
        # papermill records where it ran, absolute paths of this machine, in the stored lesson
        meta = nb.metadata.get("papermill", {})
        for key in ("input_path", "output_path"):
            if key in meta:
                meta[key] = f"{path.parent.name}/{path.name}"
        nbformat.write(nb, str(target))
    if nb is not None:
        row["figures"] = key_figures(nb)
        html, _ = HTMLExporter().from_notebook_node(nbformat.from_dict(nb))
        (out_dir / f"{path.stem}.html").write_text(html, encoding="utf-8")
    else:
        row["figures"] = {}
    return row


def table(rows) -> str:
    """The summary: one markdown row per lesson, with the library's one table helper."""
    from robustlab.evaluate import markdown_table

    return markdown_table(["lesson", "status", "seconds", "key figures"],
                          [(r["lesson"], r["status"], f"{r['seconds']:.1f}",
                            ", ".join(f"{k} = {v}" for k, v in r["figures"].items()) or r["error"])
                           for r in rows])


def whole_number(option: str, what: str, low: int, high: float = math.inf):
    """An argparse type for `option`: a whole number in [low, high], else a usage error that
    says `option` must be `what`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{option} must be {what}, got {text!r}")
        return value
    return parse


# nbclient takes whole seconds
positive_seconds = whole_number("--timeout", "a whole number of seconds > 0", 1)
# the lessons pass SEED to robustlab.seed_everything, and numpy takes seeds in [0, 2**32)
seed_value = whole_number("--seed", "a whole number from 0 to 2**32 - 1", 0, 2 ** 32 - 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help="run the full mode (FAST=False)")
    p.add_argument("--inplace", action="store_true",
                   help="execute in full mode and store the outputs in lessons/")
    p.add_argument("--only", default="", help="run only lessons whose file name contains this")
    p.add_argument("--out", default=str(ROOT / "build"), help="output folder (default build/)")
    p.add_argument("--timeout", type=positive_seconds, default=CELL_TIMEOUT,
                   help=f"fail a cell that runs longer than this, in seconds "
                        f"(default {CELL_TIMEOUT})")
    p.add_argument("--seed", type=seed_value, default=None,
                   help="run the lessons with this SEED (0 to 2**32 - 1) instead of their own (0)")
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
                               inplace=args.inplace, timeout=args.timeout,
                               seed=args.seed))
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
