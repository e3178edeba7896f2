import pytest

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
