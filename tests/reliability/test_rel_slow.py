"""Kill and resume, end to end (``make test-slow``): `make reproduce` killed with SIGKILL to its process group at
several points and rerun writes the same tables and metrics as an uninterrupted run; a smoke run made twice
gives bit-identical metrics on CPU. Everything runs in a private workspace (profile, data, splits, runs,
results), so the user's ``results/`` is never touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from castlib.config import CONFIG_DIR, REPO_ROOT

pytestmark = pytest.mark.slow

EFFICIENCY_ROWS = ["params (M)", "GFLOPs", "maskAP"]  # Fig. 2's other rows are timings and memory readings


def _profile(root: Path) -> Path:
    """The smoke profile with every folder it writes inside ``root``."""
    profile = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    profile["runs_dir"] = str(root / "results" / "runs")
    profile.setdefault("data", {}).update(data_dir=str(root / "data"), splits_dir=str(root / "data_splits"))
    path = root / "smoke-private.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return path


def _reproduce(root: Path) -> subprocess.Popen:
    command = ["make", "-o", "setup", "reproduce", f"PY={sys.executable}", f"PROFILE={_profile(root)}",
               f"RESULTS={root / 'results'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _outputs(root: Path) -> dict[str, object]:
    """What the comparison covers: the tables' cells but their measured time ratios (the provenance lines hold
    wall times), the efficiency columns that are not timings, every run's metrics;
    the workspace's own path (metrics name the ground truth's folder) reads ``<root>``."""
    results = root / "results"
    out: dict[str, object] = {}

    def text(path: Path) -> str:
        return path.read_text().replace(str(root), "<root>")

    for path in sorted((results / "tables").glob("*.csv")):  # the cells; provenance lines and timings aside
        table = pd.read_csv(path, comment="#")
        out[str(path.relative_to(results))] = table[[c for c in table.columns if "time" not in c]].to_csv(index=False)
    for path in sorted((results / "efficiency").glob("*.csv")):
        out[str(path.relative_to(results))] = pd.read_csv(path, comment="#").set_index("metric").loc[
            EFFICIENCY_ROWS].to_csv()  # the leading # lines: caption, notes (with times) and provenance
    for path in sorted((results / "runs").glob("*/metrics.json")):
        out[str(path.relative_to(results))] = json.loads(text(path))
    return out


def test_make_reproduce_killed_at_several_points_then_rerun_writes_what_a_straight_run_writes(tmp_path):
    straight = tmp_path / "straight"
    straight.mkdir()
    start = time.time()
    process = _reproduce(straight)
    assert process.wait(timeout=3600) == 0, process.stderr.read()[-3000:]
    duration = time.time() - start

    killed = tmp_path / "killed"
    killed.mkdir()
    for share in (0.3, 0.35):  # killed about 30% and 65% of the way through
        process = _reproduce(killed)
        time.sleep(share * duration)
        assert process.poll() is None, "make reproduce ended before it could be killed"
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    process = _reproduce(killed)
    assert process.wait(timeout=3600) == 0, process.stderr.read()[-3000:]

    expected, got = _outputs(straight), _outputs(killed)
    assert any(k.startswith("runs/") for k in expected) and any(k.startswith("efficiency/") for k in expected)
    assert got.keys() == expected.keys()
    assert [k for k in expected if got[k] != expected[k]] == []


def test_a_smoke_run_made_twice_gives_bit_identical_metrics(tmp_path):
    """The same command twice in the same place (the first run's folders moved away in between)."""
    profile = str(_profile(tmp_path))
    runs = tmp_path / "results" / "runs"
    metrics = []
    for attempt in ("first", "second"):
        for command in (["prepare", "--profile", profile], ["train", "--profile", profile, "--stage", "cast"]):
            done = subprocess.run([sys.executable, "-m", "castlib", *command], cwd=REPO_ROOT, capture_output=True,
                                  text=True, timeout=3600, env={**os.environ, "OMP_NUM_THREADS": "1"})
            assert done.returncode == 0, done.stderr[-3000:]
        metrics.append({p.parent.name: p.read_bytes() for p in runs.glob("*/metrics.json")})
        stages = sorted(json.loads(p.read_text())["stage"] for p in runs.glob("*/run.json"))
        runs.rename(tmp_path / f"runs-{attempt}")
    assert stages == ["knowledge_transfer", "pretrain_backbone", "pretrain_teacher", "pseudo_labels", "pseudo_labels",
                      "student_refinement", "teacher_finetune", "teacher_init", "teacher_self_training"]
    assert len(metrics[0]) == len(stages) and metrics[0] == metrics[1]
