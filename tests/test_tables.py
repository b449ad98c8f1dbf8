"""Supplementary Tables 3-8 from the stages: one row per variant beside the paper, missing runs "not run",
runs shared between tables (the CAST teacher trained once per seed), the plan, and the command line."""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from _workspace import prepared_config, set_args, workspace_overrides

from castlib import paper
from castlib.__main__ import main
from castlib.config import load_config
from castlib.engine import fitting, stages
from castlib.engine.logs import read_timing, training_seconds
from castlib.engine.plan import planning
from castlib.engine.runs import runs_dir
from castlib.errors import ConfigError
from castlib.machine import cpu_model
from castlib.report import jobs, paper_tables
from castlib.report.costs import plan_frame, registry_step_times
from castlib.report.tables import write_table

VARIANTS = {
    3: list(paper.TABLE3_TEACHER_ADAPTATION),
    4: list(paper.TABLE4_LOSS_VARIANT),
    5: list(paper.TABLE5_DEBIAS_SCORE),
    6: list(paper.TABLE6_TEACHER_CHOICE),
    7: list(paper.TABLE7_SAMPLING_SCOPE),
    8: ["cast_dinov2_s", "gd_resnet50", "gd_dinov2_b", "gd_dinov2_l"],
}


def _overrides(root: Path) -> list[str]:
    """The smoke profile cut to the bone: one seed, 20 + 2 images, one or two iterations per stage."""
    return workspace_overrides(root, "seeds=[0]", "data.synthetic.cityscapes.train=20",
                               "data.synthetic.cityscapes.val=2", "train.teacher.finetune_iterations=1",
                               "train.teacher.self_training_iterations=1", "train.student.iterations=2",
                               "train.refinement.iterations=1")


def _run_folders(cfg) -> set[str]:
    root = runs_dir(cfg)
    return {p.parent.name for p in root.glob("*/run.json")} if root.is_dir() else set()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    return prepared_config(root, _overrides(root))


@pytest.fixture(scope="module")
def built(cfg):
    """Tables 3-7 built in order, training what is missing; per table the runs it trained and created."""
    trained: list[tuple[str, str]] = []
    original = fitting.train

    def counting_train(run, *args, **kwargs):
        trained.append((run.id, run.info["stage"]))
        return original(run, *args, **kwargs)

    fitting.train = counting_train
    try:
        tables, new_runs, trained_by = {}, {}, {}
        for number in (3, 4, 5, 6, 7):
            before, start = _run_folders(cfg), len(trained)
            tables[number] = paper_tables.build_table(cfg, number)
            new_runs[number] = _run_folders(cfg) - before
            trained_by[number] = trained[start:]
    finally:
        fitting.train = original
    return {"tables": tables, "new_runs": new_runs, "trained": trained, "trained_by": trained_by}


def test_missing_runs_read_not_run_and_nothing_is_trained_or_written(tmp_path):
    empty = load_config("smoke", _overrides(tmp_path))
    for number, variants in VARIANTS.items():
        table = paper_tables.build_table(empty, number, train=False)
        assert list(table.variant) == variants
        reproduced = [c for c in table.attrs["display_columns"] if c != "variant" and not c.startswith("paper ")]
        for column in reproduced:
            assert list(table[column]) == [paper_tables.NOT_RUN] * len(table), (number, column)
            assert (table[f"{column} n"] == 0).all() and (table[f"{column} seeds"] == "{}").all()
    assert not runs_dir(empty).exists() and not (tmp_path / "data").exists()


def test_table_seeds_replace_the_seeds_of_the_tables_they_name_only(tmp_path):
    cfg = load_config("smoke", [*_overrides(tmp_path), "seeds=[0,1,2]", "table_seeds={4: [0], 8: [1, 2]}"])
    plan = {n: paper_tables.build_table(cfg, n, train=False).attrs["seeds"] for n in (3, 4, 8)}
    assert plan == {3: [0, 1, 2], 4: [0], 8: [1, 2]}
    for bad, problem in (("{9: [0]}", "not a table number"), ("{4: []}", "non-empty list")):
        wrong = load_config("smoke", [*_overrides(tmp_path), f"table_seeds={bad}"])
        with pytest.raises(ConfigError, match=problem) as caught:
            paper_tables.build_table(wrong, 4, train=False)
        assert caught.value.key.startswith("table_seeds.")


def test_each_table_has_one_row_per_variant_beside_the_paper(built):
    paper_ap = {4: paper.TABLE4_LOSS_VARIANT, 5: paper.TABLE5_DEBIAS_SCORE, 6: paper.TABLE6_TEACHER_CHOICE,
                7: paper.TABLE7_SAMPLING_SCOPE}
    for number, table in built["tables"].items():
        assert list(table.variant) == VARIANTS[number]
        assert table.runs.str.len().gt(0).all()
        if number == 3:
            values = paper.TABLE3_TEACHER_ADAPTATION.values()
            assert list(table["paper student AP"]) == [v["student_ap"] for v in values]
            assert list(table["paper teacher AP"]) == [v["teacher_ap"] for v in values]
        else:
            assert list(table["paper AP"]) == [v["ap"] for v in paper_ap[number].values()]
            assert list(table["paper AP50"]) == [v["ap50"] for v in paper_ap[number].values()]
        assert table.attrs["profile"] == "smoke" and table.attrs["seeds"] == [0]
        assert any("0 by design" in note for note in table.attrs["notes"])


def _read_from(table, column: str) -> dict[str, tuple[str, str]]:
    """A cell's sources: seed -> (run id, metric key)."""
    return {seed: tuple(source.split(":")) for seed, source in json.loads(table[f"{column} from"]).items()}


def test_tables_4_to_7_read_the_distilled_student_and_3_the_refined_one(cfg, built):
    """The paper's 32.2 (Tables 4-7) is theta_s* after knowledge transfer, its 33.9 (Tables 3, 8) theta_s+: each
    student cell is read from a run of that stage, and its value is that run's metrics.json."""
    runs = runs_dir(cfg)
    for number, table in built["tables"].items():
        for row in table.itertuples():
            column = "student AP" if number == 3 else "AP"
            if number == 6 and row.variant.startswith("teacher"):
                continue
            ((seed, (run_id, key)),) = _read_from(table.set_index("variant").loc[row.variant], column).items()
            info = json.loads((runs / run_id / "run.json").read_text())
            assert info["stage"] == ("student_refinement" if number == 3 else "knowledge_transfer"), (number, row)
            recorded = json.loads((runs / run_id / "metrics.json").read_text())[key]
            assert table.set_index("variant").loc[row.variant, f"{column} mean"] == pytest.approx(recorded)
        note = "theta_s+" if number == 3 else "theta_s*"
        assert note in table.attrs["caption"], number
    assert not any(json.loads((runs / rid / "run.json").read_text())["stage"] == "student_refinement"
                   for number in (4, 5, 7) for rid in " ".join(built["tables"][number].runs).split())


def test_tables_3_to_7_train_the_cast_teacher_once_and_4_5_7_add_only_student_runs(cfg, built):
    counts = collections.Counter(run_id for run_id, _ in built["trained"])
    assert max(counts.values()) == 1  # no run is trained twice
    cast_teacher = stages.teacher_adaptation(cfg, seed=0)
    assert counts[cast_teacher.id] == 1
    assert (cast_teacher.id, "teacher_self_training") in built["trained_by"][3]
    for number in (4, 5, 7):  # theta_s* only: no refinement trained for them
        extra_variants = len(VARIANTS[number]) - 1  # the default row is the CAST student of Table 3
        stages_trained = sorted(stage for _, stage in built["trained_by"][number])
        assert stages_trained == ["knowledge_transfer"] * extra_variants, number
        assert len(built["new_runs"][number]) == extra_variants
    # Table 6: the student under T1 is new (its pseudo-labels too); both teachers and the student under T2 exist.
    assert sorted(stage for _, stage in built["trained_by"][6]) == ["knowledge_transfer"]
    assert len(built["new_runs"][6]) == 2


def test_training_time_ratios_come_from_the_runs_own_logs(built):
    for number, paper_ratio in ((4, paper.TRAINING_TIME_RATIO["hinge_vs_infonce"]),
                                (7, paper.TRAINING_TIME_RATIO["memory_bank_vs_batch"])):
        table = built["tables"][number]
        ratios = table["train time ratio mean"].tolist()
        assert ratios[0] == pytest.approx(1.0) and 0.0 < ratios[1] < math.inf
        assert table["paper train time ratio"].tolist() == [1.0, paper_ratio]


def test_write_table_records_provenance_and_the_runs_of_each_row(built, tmp_path):
    table = built["tables"][4]
    csv, md = write_table(table, tmp_path / "table4")
    header = [line for line in csv.read_text().splitlines() if line.startswith("# ")]
    machine = f"CPU {cpu_model()}, {os.cpu_count()} cores"
    for key in ("profile: smoke", "dataset: cityscapes", "data: synthetic set cityscapes-synthetic-", "seeds: 0",
                f"machines of the runs: {machine}", "torch of the runs: ", "commits of the runs: "):
        assert any(line.startswith(f"# {key}") for line in header), key
    assert not any("wall time" in line for line in header)  # a function of the runs alone
    back = pd.read_csv(csv, comment="#")
    assert list(back.variant) == list(table.variant) and list(back.runs) == list(table.runs)
    text = md.read_text()
    assert "Provenance:" in text and "m = 0.1" in text and "caption 0.2" in text
    for row in table.itertuples():
        assert f"- {row.variant}: {row.runs}" in text
        for run_id in row.runs.split():  # every run behind the row, stand-ins included, with its commit and machine
            facts = table.attrs["runs_behind"][run_id]
            assert f"| {run_id} | {facts['stage']}" in text and facts["machine"].startswith("CPU ")
    stages_behind = {facts["stage"] for facts in table.attrs["runs_behind"].values()}
    assert {"pretrain_teacher", "pretrain_backbone", "teacher_init", "teacher_finetune"} <= stages_behind


def test_a_table_rebuilds_byte_for_byte_from_its_records_alone(cfg, built, tmp_path, capsys):
    """`castlib table N` exports the records of every run behind it (no weights); `--from-records` rebuilds the
    same bytes from them, with no registry; a record that changes changes the rebuilt table."""
    sets = set_args(_overrides(Path(cfg.runs_dir).parent))
    first, again = tmp_path / "first" / "tables", tmp_path / "again"
    assert main(["table", "4", "6", *sets, "--out", str(first), "--no-train"]) == 0
    records = tmp_path / "first" / "records"
    assert {p.name for p in records.iterdir()} == set(built["tables"][4].attrs["runs_behind"]) | set(
        built["tables"][6].attrs["runs_behind"])
    assert not list(records.rglob("*.pt")) and not list(records.rglob("model"))
    assert main(["table", "4", "6", *sets, "--from-records", str(records), "--out", str(again)]) == 0
    for name in ("table4.md", "table4.csv", "table6.md", "table6.csv", "orderings.md", "orderings.csv"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    student = _read_from(built["tables"][4].set_index("variant").loc["hinge"], "AP")["0"][0]
    metrics = json.loads((records / student / "metrics.json").read_text())
    (records / student / "metrics.json").write_text(json.dumps({**metrics, "ap": 12.5}))
    assert main(["table", "4", *sets, "--from-records", str(records), "--out", str(again)]) == 0
    assert "12.50 (n=1)" in (again / "table4.md").read_text()
    capsys.readouterr()


def test_plan_lists_shared_and_complete_runs_and_trains_nothing(cfg, built, capsys):
    before = _run_folders(cfg)
    with planning() as plan:
        for number in (4, 8):
            with plan.requested_by(f"Table {number}"):
                paper_tables.build_table(cfg, number, train=False)
    frame = plan_frame(plan, registry_step_times(runs_dir(cfg), cfg.profile, cfg.data.dataset)).set_index("run")
    cast_runs = stages.cast(cfg, 0)
    for name in ("teacher", "student"):
        row = frame.loc[cast_runs[name].id]
        assert row.complete and row.shared and row.tables == "Table 4, Table 8", name
    assert frame.loc[cast_runs["refined"].id].tables == "Table 8"  # Table 4 reads theta_s*
    hinge = built["tables"][4].set_index("variant").loc["hinge", "runs"].split()
    assert frame.loc[hinge[0]].complete and not frame.loc[hinge[0]].shared
    # the stand-ins and the zero-shot teacher (keyed on what it reads, not the label fraction) are shared, and built
    other_fractions = frame[frame["needed by"].str.contains("5% labels|30% labels")
                            & ~frame.stage.str.startswith("pretrain") & (frame.stage != "teacher_init")]
    assert len(other_fractions) and not other_fractions.complete.any()
    zero_shot = frame[frame.stage == "teacher_init"]
    assert zero_shot.complete.all() and zero_shot["needed by"].str.contains("5% labels").any()
    missing_training = other_fractions[other_fractions.iterations > 0]
    # step times from the complete runs' timing.json, per backbone where it varies: Table 3 trained Guided
    # Distillation on ResNet-50 only, so DINOv2-B/L's have none (not DINOv2-S's or ResNet-50's, several times less)
    timed = missing_training.backbone.isin(["", cfg.model.student_backbone, "resnet50"])
    assert timed.any() and (missing_training[timed]["estimated s"] > 0).all()
    assert (~timed).any() and missing_training[~timed]["estimated s"].isna().all()
    stand_ins = frame[frame.stage.str.startswith("pretrain")]
    lengths = {"pretrain_teacher": cfg.train.pretrain.teacher_iterations,
               "pretrain_backbone": cfg.train.pretrain.backbone_iterations}
    assert (stand_ins.iterations == stand_ins.stage.map(lengths)).all()
    untrained = stand_ins[~stand_ins.complete]  # Table 8's other backbones
    assert set(untrained.backbone) == {"dinov2_b", "dinov2_l"} and untrained["estimated s"].isna().all()
    done, left = frame[frame.complete], frame[~frame.complete]
    assert (done["spent s"] > 0).all() and left["spent s"].isna().all()  # what each complete run took
    student_seconds = training_seconds(cast_runs["student"])
    assert done.loc[cast_runs["student"].id, "spent s"] == pytest.approx(student_seconds)
    assert _run_folders(cfg) == before
    timing = read_timing(cast_runs["student"].dir)
    assert timing["iterations"] == cfg.train.student.iterations and timing["seconds"] > 0

    args = ["plan", "--profile", "smoke", *set_args(_overrides(Path(cfg.runs_dir).parent)),
            "--tables", "4", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out
    shared, complete = int(frame.shared.sum()), int(frame.complete.sum())
    assert f"{len(frame)} runs, {shared} shared by several tables, {complete} complete" in out
    assert "cost per table" in out and "estimated: FLOPs of one training step" in out  # no stage without a cost
    assert _run_folders(cfg) == before


def test_plan_measures_untimed_stages_in_a_few_steps_and_writes_no_run(cfg, built, capsys):
    args = ["plan", "--profile", "smoke", *set_args(_overrides(Path(cfg.runs_dir).parent)), "--tables", "8"]
    before = _run_folders(cfg)
    assert main([*args, "--measure-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "timed here (1 steps after 1 untimed, no run written)" in out and "cost per table" in out
    # Guided Distillation's DINOv2-B/L stages: no complete run and no fitting.training step, so estimated
    gd = [line for line in out.splitlines() if " guided_distillation " in line and "dinov2_l" in line]
    assert gd and all(line.split()[-2] == "estimated" for line in gd)
    assert _run_folders(cfg) == before and not (runs_dir(cfg) / "step_time").exists()


def test_table_and_train_commands(cfg, built, tmp_path, capsys):
    sets = set_args(_overrides(Path(cfg.runs_dir).parent))
    assert main(["table", "6", *sets, "--out", str(tmp_path), "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "student_under_t1" in out and (tmp_path / "table6.csv").is_file() and (tmp_path / "table6.md").is_file()
    assert main(["train", *sets, "--stage", "cast", "--teacher", "zero_shot", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    under_t1 = built["tables"][6].set_index("variant").loc["student_under_t1", "runs"].split()
    assert under_t1[0] in out  # the table's student under T1 is the command's
    assert main(["train", *sets, "--stage", "teacher_finetune", "--teacher", "zero_shot"]) == 2


def test_table_units_go_seed_by_seed_over_each_tables_own_seeds():
    mini = load_config("mini")  # table_seeds: one seed for Tables 4, 5 and 8
    assert jobs.table_units(mini, [3, 4, 8]) == [(3, 0), (4, 0), (8, 0), (3, 1), (3, 2)]


def test_table_jobs_train_two_tables_missing_runs_in_two_processes_at_once(cfg, built, tmp_path, capsys):
    """`castlib table 4 7 --jobs 2`: the hinge and memory-bank students (a student length no run has yet)
    train in two worker processes at the same time, the CAST row they share was trained first; every table
    is then written from complete runs."""
    overrides = [*_overrides(Path(cfg.runs_dir).parent), "train.student.iterations=3"]
    longer = load_config("smoke", overrides)
    stages.cast(longer, 0, refine=False)  # the row both tables share, so the workers' runs do not overlap
    needed = {n: jobs.missing_runs(longer, n, 0) for n in (4, 7)}
    assert len(needed[4]) == len(needed[7]) == 1 and not needed[4] & needed[7]
    capsys.readouterr()
    assert main(["table", "4", "7", *set_args(overrides), "--jobs", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    started = [i for i, line in enumerate(lines) if line.endswith(": training 1 runs")]
    finished = [i for i, line in enumerate(lines) if line.endswith(": its runs are complete")]
    assert len(started) == len(finished) == 2 and max(started) < min(finished)  # both ran at once
    assert not jobs.missing_runs(longer, 4, 0) and not jobs.missing_runs(longer, 7, 0)
    for n in (4, 7):
        assert "not run" not in (tmp_path / f"table{n}.md").read_text()


def test_a_table_workers_error_reaches_the_parent_as_one_line(monkeypatch):
    """An error in a `--jobs` worker is pickled back to the parent; the kit's errors with their own arguments
    (RunError, DataError) would fail to unpickle there and end in a traceback."""
    import pickle

    from castlib.engine.runs import RunError
    from castlib.errors import CastError

    def broken(cfg, number, train):
        raise RunError("/runs/abc/checkpoints/last.pt", "corrupt checkpoint")

    monkeypatch.setattr(jobs, "build_table", broken)
    with pytest.raises(CastError) as err:
        jobs._train_unit(load_config("smoke"), 6, 1, threads=1)
    again = pickle.loads(pickle.dumps(err.value))
    assert str(again) == "/runs/abc/checkpoints/last.pt: corrupt checkpoint (Table 6, seed 1)"


_POOL_SCRIPT = """
import os, time
from castlib.report.jobs import worker_pool

if __name__ == "__main__":
    pool = worker_pool(1)
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 300)  # a worker busy with a long (table, seed) pair
    time.sleep(300)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that its new parent has not reaped yet has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_table_workers_end_when_the_command_is_killed(tmp_path, signal_name):
    """`castlib table --jobs` killed (`kill`, `timeout`, a scheduler: no clean-up runs in the parent) must not
    leave its spawned workers training on, unseen: they end within seconds (their runs resume on a rerun, from
    their checkpoints, as tests/reliability/test_rel_slow.py checks of a killed `make reproduce`)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(parent.stdout.readline())
        time.sleep(2)
        assert _alive(worker)  # busy with its task while the parent lives
        parent.send_signal(getattr(signal, signal_name))
        parent.wait(timeout=30)
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(worker), f"worker {worker} still runs 15 s after its parent's {signal_name}"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
