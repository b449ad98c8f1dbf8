"""The committed smoke tables are what HEAD computes: rebuilt from their committed records alone
(`castlib table 3 4 5 6 7 8 --from-records results/records`) they come out byte for byte. A change that moves a
run id (a config key, a stage's inputs, the synthetic data) or a table's reading fails here until `make reproduce`
regenerates results/ in the same change."""

from __future__ import annotations

import pytest
from _workspace import set_args

from castlib.__main__ import main
from castlib.config import REPO_ROOT

RESULTS = REPO_ROOT / "results"
FILES = [*(f"table{n}.{ext}" for n in range(3, 9) for ext in ("md", "csv")), "orderings.md", "orderings.csv"]


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    root = tmp_path_factory.mktemp("current")
    sets = set_args([f"data.data_dir={root / 'data'}", f"data.splits_dir={root / 'splits'}"])
    assert main(["prepare", "--profile", "smoke", *sets]) == 0
    out = root / "tables"
    assert main(["table", "3", "4", "5", "6", "7", "8", "--profile", "smoke", *sets,
                 "--from-records", str(RESULTS / "records"), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", FILES)
def test_committed_smoke_tables_rebuild_byte_for_byte_from_their_records(rebuilt, name):
    committed = RESULTS / "tables" / name
    assert committed.is_file(), f"{committed} missing: run `make reproduce`"
    assert (rebuilt / name).read_text() == committed.read_text(), (
        f"{committed} is stale: HEAD computes other runs or another reading for it; run `make reproduce` and "
        "commit results/ (tables and records)")


def test_every_committed_table_row_names_runs_that_have_records():
    import pandas as pd

    for number in range(3, 9):
        table = pd.read_csv(RESULTS / "tables" / f"table{number}.csv", comment="#")
        for row in table.itertuples():
            assert row.runs.split(), (number, row.variant)
            for run_id in row.runs.split():
                assert (RESULTS / "records" / run_id / "run.json").is_file(), (number, row.variant, run_id)
