"""The paper's orderings read from the tables' per-seed values (castlib.report.orderings): pairing by seed,
the verdict rules, and main Table 3's rows taken from supplementary Tables 3 and 6."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from castlib import paper
from castlib.report.orderings import orderings, paired, read_tables, verdict, write_orderings


def _table(rows: dict[str, tuple[float, dict]], metric: str = "AP") -> pd.DataFrame:
    return pd.DataFrame([{"variant": name, f"paper {metric}": value, f"{metric} seeds": json.dumps(seeds)}
                         for name, (value, seeds) in rows.items()])


@pytest.mark.parametrize(("differences", "expected"), [
    ([1.0, 2.0, 1.5], "holds"),
    ([1.0, -0.5, 2.0], "not seen"),       # a seed disagrees
    ([-1.0, -2.0, -1.5], "not seen"),     # the order flips
    ([0.01, 0.02], "holds"),              # small, but every seed agrees
    ([0.0, 1.0, 1.0], "not seen"),        # a tie is no agreement
    ([3.0], "one seed"),
    ([], "not run"),
])
def test_verdicts(differences, expected):
    assert verdict(differences)[0] == expected


def test_pairs_by_seed_and_a_one_evaluation_cell_with_every_seed():
    assert paired({"0": 5.0, "1": 6.0, "2": 4.0}, {"0": 1.0, "2": 1.0}) == {"0": 4.0, "2": 3.0}
    assert paired({"0": 5.0, "1": 6.0}, {"*": 2.0}) == {"0": 3.0, "1": 4.0}
    assert paired({"*": 2.0}, {"*": 1.0}) == {"*": 1.0}


def test_every_pair_the_paper_orders_is_a_claim_in_the_papers_direction(tmp_path):
    table5 = _table({"original": (32.2, {"0": 14.0, "1": 15.0, "2": 13.5}),
                     "squared": (32.0, {"0": 13.0, "1": 14.5, "2": 12.0}),
                     "sqrt": (31.9, {"0": 15.0})})
    table4 = _table({"infonce": (32.2, {"0": 1.0}), "hinge": (32.2, {"0": 2.0})})  # a tie claims nothing
    table6 = _table({"teacher_t1_zero_shot": (22.0, {"*": 8.0}), "teacher_t2_adapted": (30.5, {"0": 9.0, "1": 7.0}),
                     "student_under_t1": (23.8, {"0": 14.0, "1": 13.0}),
                     "student_under_t2": (32.2, {"0": 15.0, "1": 14.5})})
    result = orderings({4: table4, 5: table5, 6: table6}).set_index("claim")
    assert "infonce > hinge" not in result.index and "hinge > infonce" not in result.index
    assert result.loc["original > squared", "verdict"] == "holds"
    assert result.loc["original > squared", "seeds agreeing"] == "3/3"
    assert result.loc["original > sqrt", "verdict"] == "one seed"
    assert result.loc["squared > sqrt", "mean difference"] == pytest.approx(-2.0)  # seed 0 only: 13 - 15
    t2_over_t1 = result.loc["teacher_t2_adapted > teacher_t1_zero_shot"]
    assert t2_over_t1["paired differences"] == "0:+1.00 1:-1.00" and t2_over_t1["verdict"] == "not seen"
    main3 = result[result.table == "main Table 3"]
    assert list(main3.index) == ["no_student_ft > distillation_only"]  # Table 3's full pipeline is not here
    assert main3.iloc[0]["paper a"] == paper.MAIN_TABLE3_STAGES["no_student_ft"]
    assert main3.iloc[0]["paired differences"] == "0:+1.00 1:+1.50"


def test_written_from_the_table_files_of_a_folder(tmp_path):
    assert write_orderings(tmp_path) is None  # no table: nothing written
    rows = _table({"batch": (32.2, {"0": 10.0, "1": 11.0}), "memory_bank": (32.7, {"0": 12.0, "1": 13.5})})
    (tmp_path / "table7.csv").write_text("# a caption line\n" + rows.to_csv(index=False))
    (tmp_path / "table4.csv").write_text("# an old table\nvariant,AP,paper AP,n seeds\ninfonce,1.0,32.2,1\n")
    csv, md = write_orderings(tmp_path, ["Profile test."])
    assert set(read_tables(tmp_path)) == {7}  # table4.csv holds no per-seed values: left out, and said so
    back = pd.read_csv(csv, comment="#")
    assert list(back.claim) == ["memory_bank > batch"] and list(back.verdict) == ["holds"]
    text = md.read_text()
    assert "Profile test." in text and "1 orderings, 1 holds, 0 not seen, 0 one seed, 0 not run" in text
    assert "Left out: table4.csv" in text
