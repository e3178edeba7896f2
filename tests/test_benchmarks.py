"""Smoke tests of benchmarks/: every script runs end to end in a tiny configuration (one model, a
few examples, one repeat, one epoch), once with its reference library made unimportable (the
script must say so, skip the comparison and run the rest) and once with the reference where it
is installed. Each run is a subprocess, as `make bench` runs them: the scripts set threads and
seeds for their whole process, and a broken script fails here with its output in the message.

A reference is made absent by putting None in `sys.modules` under its name before the script
starts (`import` then raises ImportError), so the absent path is tested even where the library
is installed. Nothing here needs the network: the zoo's weights and the digits ship with
robustlab.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import robustlab

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# Runs the script sys.argv[2] as __main__ with the arguments after it, the modules named in
# sys.argv[1] (comma-separated) unimportable.
_LAUNCH = ("import runpy, sys; blocked, sys.argv = sys.argv[1], sys.argv[2:]; "
           "sys.modules.update(dict.fromkeys(filter(None, blocked.split(',')))); "
           "runpy.run_path(sys.argv[0], run_name='__main__')")

# script -> (its reference library, or None; the tiny configuration)
TINY = {
    "attacks.py": ("torchattacks", [
        "--device", "cpu", "--n", "16", "--n-slow", "2", "--repeats", "1", "--steps", "2",
        "--cw-steps", "2", "--queries", "10", "--popsize", "4", "--de-iter", "1"]),
    "defences.py": ("art", [
        "--device", "cpu", "--epochs", "1", "--replays", "1", "--steps", "2", "--rounds", "1",
        "--train-n", "128"]),
    "defence_methods.py": (None, [
        "--device", "cpu", "--epochs", "1", "--replays", "1", "--seeds", "0", "--train-n", "64",
        "--test-n", "8", "--square-queries", "5", "--token-epochs", "1", "--claim-epochs", "1"]),
    "verify.py": ("auto_LiRPA", [
        "--device", "cpu", "--n", "8", "--models", "digits-mlp", "--eps", "0.01", "--repeats",
        "1", "--milp-n", "2", "--milp-eps", "0.02", "--acc-n", "4", "--acc-eps", "0.01",
        "--acc-models", "digits-mlp", "--time-limit", "10"]),
    "host_syncs.py": (None, ["--device", "cpu", "--only", "pgd-linf", "stadv"]),
    "host_syncs_blackbox.py": (None, ["--only", "Oracle"]),
    "decision_attacks.py": (None, ["--device", "cpu", "--quick"]),
    "text_attacks.py": ("textattack", [
        "--device", "cpu", "--n", "6", "--models", "word-cnn", "char-cnn"]),
    "graph_attacks.py": ("deeprobust", [
        "--device", "cpu", "--targets", "2", "--budgets", "1", "2", "--pgd-budgets", "10",
        "--steps", "3", "--repeats", "1"]),
    "stats.py": ("art", [
        "--device", "cpu", "--n", "2", "--n-batches", "10", "--batch-size", "8", "--mc-n", "1000",
        "--particles", "200", "--mh-steps", "2", "--eps", "0.3"]),
    # its references are checkouts, not modules: CHECKOUTS below
    "stats_references.py": (None, [
        "--device", "cpu", "--repeats", "2", "--particles", "200", "--mh-steps", "2", "--eps",
        "0.3", "--models", "digits-mlp", "--dc-seeds", "1", "--dc-budgets", "3",
        # its DeepConcolic table needs a TensorFlow environment: off unless a test turns it on
        "--deepconcolic", ""]),
}

# scripts whose references are checkouts of research code: option -> (environment variable,
# default folder under the repository); an empty option makes the reference absent
CHECKOUTS = {
    "stats_references.py": {
        "--oval": ("OVAL_SPLITTING", "build/refs/statistical-robustness"),
        "--wc": ("WEIGHT_CORRELATION", "build/refs/NeurIPS2020_Weight_Correlation")},
}

# stats_references.py's DeepConcolic table: the checkout, and the python of a separate TensorFlow
# environment (benchmarks/README.md; `make bench-deepconcolic` builds both)
DEEPCONCOLIC = {
    "--deepconcolic": ("DEEPCONCOLIC", "build/refs/DeepConcolic"),
    "--deepconcolic-python": ("DEEPCONCOLIC_PYTHON", "build/tfvenv/bin/python")}

# what each script prints: without its reference, and in addition with it
ABSENT = {
    "attacks.py": ["torchattacks is not installed", "comparison skipped", "| FGSM (Linf)",
                   "| OnePixel", "robustlab s |"],
    "defences.py": ["ART is not installed", "table 1 skipped", "| Fast-AT", "| YOPO-3-3",
                    "| standard training (reference)"],
    "defence_methods.py": ["| PGD-AT", "| Björck + GroupSort, PGD-AT", "| FreeLB-3",
                           "Fast-AT takes"],
    "verify.py": ["auto_LiRPA is not installed", "skipping the comparison",
                  "### digits-mlp on cpu", "| CROWN | 0.01 |", "### MILP", "### Verified accuracy"],
    "stats.py": ["ART is not installed", "### Splitting", "| sum of 8 >= 7.5"],
    "stats_references.py": ["statistical-robustness is not checked out", "table 1) is skipped",
                            "NeurIPS2020_Weight_Correlation is not checked out",
                            "table 2) is skipped", "TrustAI/DeepConcolic is not checked out",
                            "table 3) is skipped"],
    "text_attacks.py": ["TextAttack is not installed or does not import", "comparison skipped",
                        "| word-cnn | textbugger | ", "| char-cnn | synonym | ", "robustlab s |"],
    "graph_attacks.py": ["DeepRobust is not installed or does not import", "comparison skipped",
                         "### Nettack", "| 2 | 2 | ", "### PGD topology attack", "robustlab s |"],
    "host_syncs.py": ["| pgd-linf", "| stadv"],
    "host_syncs_blackbox.py": ["| method (budget) |", "| Oracle (ledger queries) | 8 |"],
    "decision_attacks.py": ["| attack | norm | queries |", "| HopSkipJump L2 | l2 | 100 |",
                            "| RayS | linf | 300 |", "| Sign-OPT | l2 | 300 |"],
}
PRESENT = {
    "attacks.py": ["torchattacks s |", "| C&W", "| DeepFool"],
    "defences.py": ["PGD-AT against ART", "the same shuffling and random starts", "ART PGD-20"],
    "verify.py": ["### digits-mlp on cpu", "CROWN max |diff|", "agrees to"],
    "stats.py": ["### CLEVER on digits-mlp", "ART clever_u", "ratio robustlab / ART"],
    "stats_references.py": ["multilevel_uniform", "| sum of 8 >= 7.6 | -7.789 |",
                            "| digits-mlp, test image 0, eps 0.3 |", "Jin et al.'s notebook",
                            "| Linear(9, 6) | WC |", "| digits-mlp | PB |"],
    "text_attacks.py": ["TextAttack present", "TextAttack success |", "| same text |"],
    "graph_attacks.py": ["DeepRobust present", "DeepRobust success |", "| same flips |",
                         "largest log-probability difference 0.0e+00"],
}


def run_script(script: str, *, block: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> str:
    """Run benchmarks/`script` in its tiny configuration (and the options `extra`) with the
    modules `block` unimportable; its standard output. A non-zero exit fails the test with the
    script's output."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # the robustlab this test imported (a worktree's, say), not whichever the venv points at
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [
        str(Path(robustlab.__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-c", _LAUNCH, ",".join(block), str(BENCHMARKS / script),
           *TINY[script][1], *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, (f"{script} exited with {proc.returncode}\n--- stdout\n"
                                  f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc.stdout


def _says(out: str, expected: list[str]) -> None:
    missing = [s for s in expected if s not in out]
    assert not missing, f"the output lacks {missing}:\n{out[-4000:]}"


def checkouts(options: dict[str, tuple[str, str]]) -> tuple[str, ...]:
    """The options naming a script's references (checkouts, or a python); skips the test where
    one is missing."""
    extra = []
    for option, (variable, default) in options.items():
        path = Path(os.environ.get(variable) or BENCHMARKS.parent / default)
        if not path.exists():
            pytest.skip(f"nothing at {path} ({variable}; benchmarks/README.md says how)")
        extra += [option, str(path)]
    return tuple(extra)


# scripts of benchmarks/ that are not benchmarks themselves, with where they are tested
NOT_BENCHMARKS = {"gpu_check.py": "runs the others on CUDA (tests/test_gpu_check.py)",
                  "deepconcolic_side.py": "stats_references.py runs it with TensorFlow's python "
                                          "(test_stats_references_with_deepconcolic)"}


def test_every_benchmark_has_a_tiny_run():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == sorted({*TINY, *NOT_BENCHMARKS})


# each script's tiny run takes 10-40 s: in `make check` (marked `benchmarks`), not `make test`
@pytest.mark.benchmarks
@pytest.mark.parametrize("script", sorted(TINY))
def test_runs_without_reference(script):
    reference = TINY[script][0]
    absent = [arg for option in CHECKOUTS.get(script, {}) for arg in (option, "")]
    out = run_script(script, block=(reference,) if reference else (), extra=tuple(absent))
    _says(out, ABSENT[script])


@pytest.mark.benchmarks
@pytest.mark.parametrize("script", sorted(PRESENT))
def test_runs_with_reference(script):
    reference = TINY[script][0]
    if script in CHECKOUTS:
        extra = checkouts(CHECKOUTS[script])
    else:
        # find_spec, not import: auto_LiRPA's import resets this process's warning filters
        if importlib.util.find_spec(reference) is None:
            pytest.skip(f"{reference} is not installed (benchmarks/README.md says how)")
        # defences.py: also the option that hands both libraries the same draws (it patches ART)
        extra = ("--same-draws",) if script == "defences.py" else ()
    out = run_script(script, extra=extra)
    _says(out, PRESENT[script])
    if script == "stats_references.py":  # every relation of table 2 must hold
        assert "| MISS" not in out, out
    if script == "verify.py":  # no max pool in digits-mlp: CROWN must agree to 1e-5
        assert "DOES NOT agree" not in out, out


@pytest.mark.benchmarks
def test_stats_references_without_tensorflow(tmp_path):
    """A DeepConcolic checkout but no TensorFlow python: the script says so and skips table 3."""
    (tmp_path / "deepconcolic").mkdir()
    (tmp_path / "deepconcolic" / "nc_pulp.py").touch()
    out = run_script("stats_references.py", extra=(
        "--skip", "split", "--skip", "wc", "--deepconcolic", str(tmp_path),
        "--deepconcolic-python", ""))
    _says(out, ["no python of a TensorFlow environment", "table 3) is skipped"])


@pytest.mark.benchmarks
def test_stats_references_with_deepconcolic():
    """Table 3 with DeepConcolic run in its TensorFlow environment: the Keras rebuild computes
    robustlab's logits and the two neuron coverages agree neuron by neuron."""
    out = run_script("stats_references.py",
                     extra=("--skip", "split", "--skip", "wc", *checkouts(DEEPCONCOLIC)))
    _says(out, ["against DeepConcolic", "The two agree on 96 of 96 neurons: equal.",
                "| budget | robustlab solves |", "| 3 | 3 |"])
