"""`make gpu-check`: on a machine with CUDA, the CUDA tests, every lesson in full mode (timed) and
every benchmark with ``--device cuda``, written to one markdown report that names the card.

    python benchmarks/gpu_check.py [--out build/gpu-check] [--skip tests lessons benchmarks]

Without CUDA it stops at once with exit code 2 and says so. Each part runs as a subprocess of
this Python (the tests with pytest ``-k cuda``, which selects the cases the ``device`` fixture
and the other device lists give a "cuda" id; the lessons with ``course/run.py --full``, whose
models and data go to ``default_device()``; the benchmarks one by one), so a failing part is
reported with the tail of its output and the others still run. The report goes to
``<out>/report.md``; the exit code is 1 when any part failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
PARTS = ("tests", "lessons", "benchmarks")
COURSE_TARGET_S = 15 * 60  # issue 16: the whole course in full mode on one H100-class GPU
TAIL = 3000  # characters of a failing part's output kept in the report


@dataclass
class Part:
    """One command's outcome: its title, the command, exit code, seconds and what to show."""

    title: str
    command: list[str]
    returncode: int
    seconds: float
    body: str


def run_part(title: str, command: list[str], *, body=None, timeout: float | None = None) -> Part:
    """Run `command` from the repository root; `body(stdout)` is what the report shows of it
    (its whole output when None; the tail of stdout and stderr when it fails)."""
    print(f"gpu-check: {title} ...", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as e:  # a hung part must not hang the check
        code, out, err = 124, _text(e.stdout), _text(e.stderr) + f"\ntimed out after {timeout} s"
    seconds = time.perf_counter() - start
    if code == 0:
        shown = out.strip() if body is None else body(out)
    else:
        shown = "```\n" + (out + "\n" + err).strip()[-TAIL:] + "\n```"
    print(f"gpu-check: {title}: {'ok' if code == 0 else f'FAILED (exit {code})'} in "
          f"{seconds:.0f} s", flush=True)
    return Part(title, command, code, seconds, shown)


def _text(raw) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")


def _pytest_summary(out: str) -> str:
    """The last line of pytest's output ("N passed, M skipped in S s"), in a code span."""
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return f"`{lines[-1].strip('= ')}`" if lines else "(no output)"


def tests_part(timeout: float) -> Part:
    """Every test case with a CUDA id (the `device` fixture's and the other device lists')."""
    return run_part("CUDA tests", [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "tests"],
                    body=_pytest_summary, timeout=timeout)


def lesson_part(out_dir: Path, timeout: float) -> Part:
    """Every lesson in full mode, timed by course/run.py (its summary table), on the GPU."""
    folder = out_dir / "lessons"

    def body(_: str) -> str:
        summary = folder / "summary.md"
        return summary.read_text().strip() if summary.exists() else "(no summary written)"
    return run_part("lessons (full mode)", [sys.executable, "course/run.py", "--full", "--out",
                                            str(folder)], body=body, timeout=timeout)


def benchmarks() -> tuple[list[str], list[str]]:
    """(the scripts here that take --device, the others), this one left out: a new benchmark
    joins the check by itself once it takes --device (a CPU-only count does not need to)."""
    names = sorted(p.name for p in HERE.glob("*.py") if p.name != Path(__file__).name)
    takes = [name for name in names if '"--device"' in (HERE / name).read_text()]
    return takes, [name for name in names if name not in takes]


def benchmark_parts(names: list[str], timeout: float) -> list[Part]:
    """Each benchmark script of `names` with --device cuda, its tables as it prints them."""
    return [run_part(f"benchmarks/{name} --device cuda",
                     [sys.executable, f"benchmarks/{name}", "--device", "cuda"], timeout=timeout)
            for name in names]


def report(card: str, parts: list[Part], notes: list[str] = ()) -> str:
    """The markdown report: the machine, `notes`, then one section per part with its time and
    status."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# GPU check: {card}", "",
             f"torch {torch.__version__}, CUDA {torch.version.cuda}, {when}; "
             f"{sum(p.returncode == 0 for p in parts)} of {len(parts)} parts passed.", ""]
    lines += [f"- {note}" for note in notes] + ([""] if notes else [])
    for part in parts:
        status = "ok" if part.returncode == 0 else f"FAILED (exit {part.returncode})"
        lines += [f"## {part.title}", "",
                  f"{status} in {part.seconds:.0f} s: `{' '.join(part.command[1:])}`", ""]
        if part.title.startswith("lessons"):
            verdict = "within" if part.seconds <= COURSE_TARGET_S else "OVER"
            lines += [f"The whole course took {part.seconds / 60:.1f} min: {verdict} the "
                      f"{COURSE_TARGET_S // 60}-minute target.", ""]
        lines += [part.body, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(ROOT / "build" / "gpu-check"),
                   help="folder for the report and the executed lessons (default build/gpu-check)")
    p.add_argument("--skip", nargs="+", choices=PARTS, default=[], help="parts not to run")
    p.add_argument("--timeout", type=float, default=3600,
                   help="seconds after which one part is stopped and reported failed")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU and torch with CUDA; here torch "
              f"{torch.__version__} sees none (CUDA build: {torch.version.cuda}). Run it on a "
              "GPU machine; the CPU tests are `make test`.", file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(0)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, notes = [], []
    if "tests" not in args.skip:
        parts.append(tests_part(args.timeout))
    if "lessons" not in args.skip:
        parts.append(lesson_part(out_dir, args.timeout))
    if "benchmarks" not in args.skip:
        names, others = benchmarks()
        parts += benchmark_parts(names, args.timeout)
        if others:
            notes.append(f"not run (no --device option: CPU-only): {', '.join(others)}")
    path = out_dir / "report.md"
    path.write_text(report(card, parts, notes) + "\n")
    print(f"gpu-check: report on {card} written to {path}")
    return 0 if all(part.returncode == 0 for part in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
