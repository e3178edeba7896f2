import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab import data, models, verify
from robustlab.__main__ import main
from robustlab.defences.smoothing import certified_accuracy
from robustlab.evaluate import PRESETS, robust_accuracy


def test_attack_table(capsys):
    assert main(["attack", "--model", "digits-cnn", "--attack", "fgsm", "--eps", "0", "0.2",
                 "-n", "100"]) == 0
    out = capsys.readouterr().out.splitlines()
    clean, attacked = float(out[2].split("|")[2]), float(out[3].split("|")[2])
    assert clean > 0.95 and attacked < 0.3


def test_bad_arguments():
    with pytest.raises(SystemExit):
        main(["attack", "--attack", "nope"])


@pytest.mark.parametrize("args, message", [
    (["-n", "-350"], "argument -n: -n must be a whole number > 0, got '-350'"),
    (["-n", "0"], "argument -n: -n must be a whole number > 0, got '0'"),
    (["-n", "2.5"], "argument -n: -n must be a whole number > 0, got '2.5'"),
    (["--eps", "-0.1"], "argument --eps: --eps must be a finite number >= 0, got -0.1"),
    (["--eps", "0.1", "nan"], "argument --eps: --eps must be a finite number >= 0, got nan"),
    (["--eps", "inf"], "argument --eps: --eps must be a finite number >= 0, got inf"),
    (["--eps", "big"], "argument --eps: could not convert string to float: 'big'"),
])
def test_bad_numbers_are_usage_errors(args, message, capsys):
    """A usage error (exit code 2, the option named on stderr), never a traceback or a run."""
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: robustlab attack") and message in err


# issue 15: -n 99999 silently used the 360 test examples there are
def test_n_beyond_the_test_split_says_so(capsys):
    assert main(["attack", "--attack", "fgsm", "--eps", "0", "-n", "99999"]) == 0
    captured = capsys.readouterr()
    assert ("note: -n 99999 is more than the 360 test examples of digits: using all 360"
            in captured.err)
    assert "| 0 |" in captured.out and "note" not in captured.out  # the table stays clean
    assert main(["attack", "--attack", "fgsm", "--eps", "0", "-n", "360"]) == 0
    assert capsys.readouterr().err == ""


# issue 16: the command line had no --device and ran on the CPU even on a GPU machine
def test_attack_runs_on_the_device_asked(device, capsys):
    argv = ["attack", "--attack", "fgsm", "--eps", "0", "0.2", "-n", "60"]
    assert main([*argv, "--device", "cpu"]) == 0
    on_cpu = capsys.readouterr().out
    assert main([*argv, "--device", device]) == 0
    there = capsys.readouterr().out.splitlines()
    # the clean row is a count of 60: equal; the attacked row within one example (float sums)
    assert there[2] == on_cpu.splitlines()[2]
    assert abs(float(there[3].split("|")[2]) - float(on_cpu.splitlines()[3].split("|")[2])) <= 1 / 60


@pytest.mark.parametrize("device", ["gpu", "cuda:99"] + ([] if torch.cuda.is_available()
                                                         else ["cuda"]))
def test_a_device_this_machine_lacks_is_a_usage_error(device, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "--device", device])
    assert exit_info.value.code == 2
    assert f"argument --device: --device {device!r} is not usable here" in capsys.readouterr().err


# issue 22: a command line for your own models (TorchScript / torch.export files, .npz data)
@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> dict:
    """digits-mlp saved as TorchScript and as torch.export (batch size free), and the original."""
    folder = tmp_path_factory.mktemp("models")
    model = models.pretrained("digits-mlp").eval()
    x, _ = data.load("digits", "test")
    torch.jit.script(model).save(str(folder / "mlp.pt"))
    program = torch.export.export(model, (x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, folder / "mlp.pt2")
    return {"model": model, "torchscript": folder / "mlp.pt", "export": folder / "mlp.pt2"}


def _rows(out: str) -> list[list[str]]:
    """The cells of a printed markdown table's body."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[2:]]


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_evaluate_a_saved_model_as_the_library_does(kind, saved_models, tmp_path, capsys):
    out_json = tmp_path / "report.json"
    assert main(["evaluate", "--model", str(saved_models[kind]), "--data", "digits", "--attack",
                 "fgsm", "--eps", "0.05", "0.1", "-n", "40", "--device", "cpu",
                 "--json", str(out_json)]) == 0
    x, y = data.load("digits", "test")
    curve = robust_accuracy(saved_models["model"], x[:40], y[:40], PRESETS["fgsm"],
                            eps_list=[0.0, 0.05, 0.1])
    rows = _rows(capsys.readouterr().out)
    assert [r[:2] for r in rows] == [["none (clean)", "0"], ["fgsm", "0.05"], ["fgsm", "0.1"]]
    assert [float(r[2]) for r in rows] == [round(a, 3) for a in curve.accuracy]
    assert curve.accuracy[2] < curve.accuracy[0]  # the attack did something to compare
    report = json.loads(out_json.read_text())
    assert report["examples"] == 40 and report["model"] == str(saved_models[kind])
    assert [(r["attack"], r["eps"]) for r in report["rows"]] == [
        ("none (clean)", 0.0), ("fgsm", 0.05), ("fgsm", 0.1)]
    assert [r["accuracy"] for r in report["rows"]] == pytest.approx(curve.accuracy, abs=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary left behind


def test_evaluate_npz_data_and_several_attacks(saved_models, tmp_path, capsys):
    x, y = data.load("digits", "test")
    np.savez(tmp_path / "mine.npz", x=x[100:130].numpy(), y=y[100:130].numpy())
    assert main(["evaluate", "--model", str(saved_models["torchscript"]), "--data",
                 str(tmp_path / "mine.npz"), "--attack", "fgsm", "--attack", "pgd",
                 "--eps", "0.1", "--norm", "linf", "--device", "cpu"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [r[0] for r in rows] == ["none (clean)", "fgsm", "pgd"]
    model = saved_models["model"]
    fgsm = robust_accuracy(model, x[100:130], y[100:130], PRESETS["fgsm"], eps_list=[0.1])
    pgd = robust_accuracy(model, x[100:130], y[100:130], PRESETS["pgd"], eps_list=[0.1],
                          generator=torch.Generator().manual_seed(0))
    clean = (model(x[100:130]).argmax(1) == y[100:130]).float().mean().item()
    assert [float(r[2]) for r in rows] == [round(clean, 3), round(fgsm.accuracy[0], 3),
                                           round(pgd.accuracy[0], 3)]


def test_evaluate_a_zoo_name(capsys):
    assert main(["evaluate", "--model", "digits-mlp", "--data", "digits", "--attack", "fgsm",
                 "--eps", "0.1", "-n", "20", "--device", "cpu"]) == 0
    assert [r[0] for r in _rows(capsys.readouterr().out)] == ["none (clean)", "fgsm"]


def test_certify_agrees_with_the_library(saved_models, tmp_path, capsys):
    out_json = tmp_path / "certify.json"
    assert main(["certify", "--model", str(saved_models["export"]), "--data", "digits",
                 "-n", "8", "--sigma", "0.25", "--n0", "20", "--n", "200", "--alpha", "0.01",
                 "--radius", "0", "0.25", "--seed", "3", "--device", "cpu",
                 "--json", str(out_json)]) == 0
    x, y = data.load("digits", "test")
    result = certified_accuracy(saved_models["model"], x[:8], y[:8], sigma=0.25, radii=[0, 0.25],
                                n0=20, n=200, alpha=0.01, generator=torch.Generator().manual_seed(3))
    rows = _rows(capsys.readouterr().out)
    assert [float(r[0]) for r in rows] == [0.0, 0.25]
    assert [float(r[1]) for r in rows] == [round(a, 3) for a in result.accuracy]
    report = json.loads(out_json.read_text())
    assert [r["certified accuracy"] for r in report["rows"]] == pytest.approx(result.accuracy)
    assert report["sigma"] == 0.25 and report["samples"] == 200


@pytest.mark.parametrize("method", ["interval", "crown", "milp"])
def test_verify_agrees_with_the_library(method, capsys):
    """At eps = 0.02 interval bounds verify 2 of these 6 digits and CROWN all 6: the methods
    are told apart."""
    eps = 0.02
    assert main(["verify", "--model", "digits-mlp", "--data", "digits", "-n", "6",
                 "--eps", "0", str(eps), "--method", method, "--device", "cpu"]) == 0
    rows = _rows(capsys.readouterr().out)
    model = models.pretrained("digits-mlp").eval()
    x, y = data.load("digits", "test")
    x, y = x[:6], y[:6]
    if method == "milp":
        statuses = [v.status for v in verify.milp(model, x, y, eps=eps)]
        expected = statuses.count("verified") / 6
        assert float(rows[1][2]) == round(statuses.count("falsified") / 6, 3)
    else:
        bound = verify.interval if method == "interval" else verify.crown
        lower = bound(model, x, eps=eps, C=verify.margin_spec(y, 10)).lower
        expected = (lower > 0).all(dim=1).float().mean().item()
    clean = (model(x).argmax(1) == y).float().mean().item()
    assert [float(r[1]) for r in rows] == [round(clean, 3), round(expected, 3)]


def test_verify_refuses_a_graph_it_cannot_read(saved_models, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "--model", str(saved_models["torchscript"]), "--data", "digits",
              "--eps", "0.01", "-n", "2"])
    assert exit_info.value.code == 2
    assert "argument --model: verify reads a zoo model" in capsys.readouterr().err


def _bad_inputs(folder, saved_models) -> dict:
    """Command lines (without the command) that must be usage errors, with what they say."""
    (folder / "notes.txt").write_text("not a model\n")
    torch.save(saved_models["model"].state_dict(), folder / "state.pt")
    np.savez(folder / "no_y.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    np.savez(folder / "bright.npz", x=np.full((2, 1, 8, 8), 255.0), y=np.zeros(2, int))
    np.savez(folder / "colour.npz", x=np.zeros((2, 3, 8, 8), np.float32), y=np.zeros(2, int))
    pt, digits = str(saved_models["torchscript"]), ["--data", "digits"]
    return {
        "missing model": (["--model", str(folder / "absent.pt"), *digits],
                          "argument --model: '" + str(folder / "absent.pt") + "' is neither"),
        "text model": (["--model", str(folder / "notes.txt"), *digits],
                       "argument --model: '" + str(folder / "notes.txt") + "' is not a TorchScript"),
        "state dict": (["--model", str(folder / "state.pt"), *digits],
                       "argument --model: '" + str(folder / "state.pt") + "' is not a TorchScript"),
        "zoo name": (["--model", "digits-nope", *digits], "argument --model: 'digits-nope' is "
                     "neither an existing file nor a zoo model (zoo models: colour-digits-cnn"),
        "attack": (["--model", pt, *digits, "--attack", "cw"],
                   "argument --attack: invalid choice: 'cw'"),
        "missing data": (["--model", pt, "--data", str(folder / "absent.npz")],
                         "argument --data: '" + str(folder / "absent.npz") + "' is neither"),
        "no y": (["--model", pt, "--data", str(folder / "no_y.npz")], "has no array y (it has x)"),
        "range": (["--model", pt, "--data", str(folder / "bright.npz")],
                  "must lie in [0, 1] (pixels scaled to [0, 1]), got values in [255, 255]"),
        "shape": (["--model", pt, "--data", str(folder / "colour.npz")],
                  "argument --data: the model does not take inputs of shape (1, 3, 8, 8)"),
        "eps": (["--model", pt, *digits, "--eps", "-0.1"],
                "argument --eps: --eps must be a finite number >= 0, got -0.1"),
        "json folder": (["--model", pt, *digits, "--json", str(folder / "no" / "r.json")],
                        "argument --json: the folder of"),
    }


@pytest.mark.parametrize("case", ["missing model", "text model", "state dict", "zoo name", "attack",
                                  "missing data", "no y", "range", "shape", "eps", "json folder"])
def test_bad_input_to_evaluate_is_a_usage_error(case, saved_models, tmp_path, capsys):
    argv, message = _bad_inputs(tmp_path, saved_models)[case]
    eps = [] if "--eps" in argv else ["--eps", "0.1"]
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", *argv, *eps, "-n", "2", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: robustlab evaluate") and message in err
    assert "Traceback" not in err


def test_an_export_in_training_mode_is_refused(tmp_path, capsys):
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 10)).train()
    program = torch.export.export(model, (torch.rand(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "train.pt2")
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", str(tmp_path / "train.pt2"), "--data", "digits",
              "--eps", "0.1", "-n", "2"])
    assert exit_info.value.code == 2
    assert "was exported in training mode (dropout in training behaviour)" in \
        capsys.readouterr().err


def test_python_dash_m_runs_evaluate_and_reports_errors(saved_models, tmp_path):
    """Once as a user runs it: `python -m robustlab` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "robustlab", "evaluate", "--model",
               str(saved_models["export"]), "--attack", "fgsm", "--eps", "0.1", "-n", "10",
               "--device", "cpu"]
    ran = subprocess.run([*command, "--data", "digits"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == "| attack | eps | accuracy |"
    refused = subprocess.run([*command, "--data", str(tmp_path / "absent.npz")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 2 and "argument --data:" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_evaluate_runs_on_the_device_asked(device, saved_models, capsys):
    """Both file kinds load onto the device (map_location / .to) and give the CPU's numbers."""
    for kind in ("torchscript", "export"):
        argv = ["evaluate", "--model", str(saved_models[kind]), "--data", "digits", "--attack",
                "fgsm", "--eps", "0.1", "-n", "60"]
        assert main([*argv, "--device", "cpu"]) == 0
        on_cpu = _rows(capsys.readouterr().out)
        assert main([*argv, "--device", device]) == 0
        there = _rows(capsys.readouterr().out)
        assert there[0] == on_cpu[0]  # a count of 60 correct: equal
        assert abs(float(there[1][2]) - float(on_cpu[1][2])) <= 1 / 60 + 1e-9  # float sums


def test_n_beyond_the_data_says_so(saved_models, tmp_path, capsys):
    x, y = data.load("digits", "test")
    np.savez(tmp_path / "five.npz", x=x[:5].numpy(), y=y[:5].numpy())
    assert main(["evaluate", "--model", str(saved_models["torchscript"]), "--data",
                 str(tmp_path / "five.npz"), "--attack", "fgsm", "--eps", "0.1", "-n", "9"]) == 0
    captured = capsys.readouterr()
    assert "note: -n 9 is more than the 5 examples of" in captured.err
    assert "note" not in captured.out


@pytest.mark.parametrize("command, args, message", [
    ("certify", ["--sigma", "0"], "argument --sigma: --sigma must be a number in (0, inf], got '0'"),
    ("certify", ["--sigma", "0.25", "--alpha", "1.5"],
     "argument --alpha: --alpha must be a number in (0, 1], got '1.5'"),
    ("certify", ["--sigma", "0.25", "--n", "0"], "argument --n: --n must be a whole number > 0"),
    ("certify", ["--sigma", "0.25", "--n0", "x"],
     "argument --n0: --n0 must be a whole number > 0, got 'x'"),
    ("certify", ["--sigma", "0.25", "--radius", "-1"],
     "argument --radius: --radius must be a finite number >= 0, got -1.0"),
    ("verify", ["--eps", "0.1", "--method", "lp"], "argument --method: invalid choice: 'lp'"),
    ("evaluate", ["--eps", "0.1", "--seed", "1.5"],
     "argument --seed: --seed must be a whole number in [0, 2**32), got '1.5'"),
])
def test_bad_numbers_of_certify_and_verify_are_usage_errors(command, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--model", "digits-mlp", "--data", "digits", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: robustlab {command}") and message in err


def test_clever_matches_the_library(capsys, tmp_path):
    """`robustlab clever` reports the mean and median of stats.clever's scores with its seed."""
    from robustlab import stats
    out = tmp_path / "clever.json"
    assert main(["clever", "--model", "digits-mlp", "--data", "digits", "-n", "3", "--radius", "1",
                 "--batches", "10", "--batch-size", "16", "--seed", "4", "--json", str(out)]) == 0
    x, _ = data.digits("test")
    want = stats.clever(models.pretrained("digits-mlp"), x[:3], norm="l2", radius=1.0,
                        n_batches=10, batch_size=16,
                        generator=torch.Generator().manual_seed(4)).score.double()
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["examples"] == "all"
    assert abs(rows[0]["mean CLEVER score"] - want.mean().item()) < 1e-9
    assert "| all |" in capsys.readouterr().out


def test_clever_refuses_too_few_batches(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["clever", "--model", "digits-mlp", "--data", "digits", "-n", "2", "--radius", "1",
              "--batches", "3"])
    assert stop.value.code == 2 and "--batches" in capsys.readouterr().err
