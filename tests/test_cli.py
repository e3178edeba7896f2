import pytest
import torch

from robustlab.__main__ import main


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
