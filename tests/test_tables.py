import math

import pytest

from robustlab.tables import markdown_table, timing_table


def test_significant_digits_by_default_and_dashes_for_missing():
    text = markdown_table(["a", "b"], [["x", 1 / 3], [None, math.nan]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| x | 0.3333 |", "| - | - |"]


def test_fixed_decimals_per_column_and_for_all():
    rows = [["pgd", 0.5, 12.0, 3], ["fgsm", 0.123456, 0.04, 7]]
    text = markdown_table(["attack", "rate", "L0", "n"], rows, decimals=[None, 3, 1, None])
    assert text.splitlines()[2:] == ["| pgd | 0.500 | 12.0 | 3 |", "| fgsm | 0.123 | 0.0 | 7 |"]
    assert markdown_table(["r"], [[2 / 3]], decimals=2).splitlines()[2] == "| 0.67 |"


def test_decimals_must_match_the_columns():
    with pytest.raises(ValueError, match="decimals has 1 entries for 2 columns"):
        markdown_table(["a", "b"], [[1.0, 2.0]], decimals=[3])


def test_timing_table_is_two_fixed_columns():
    assert timing_table(["pgd", "cw"], [0.1234, 12.0]).splitlines() == [
        "| attack | seconds |", "|---|---|", "| pgd | 0.12 |", "| cw | 12.00 |"]


def test_stored_result_is_found_from_any_directory(tmp_path, monkeypatch):
    from robustlab.tables import read_markdown_table, stored_result
    monkeypatch.chdir(tmp_path)  # a lesson opened outside lessons/, or a pip-installed package
    rows = read_markdown_table(stored_result("defence_methods"))
    assert rows and {"method", "clean", "PGD-20", "worst case"} <= set(rows[0])
    with pytest.raises(ValueError, match="name: no stored result 'nope'; stored: .*defence_methods"):
        stored_result("nope")
