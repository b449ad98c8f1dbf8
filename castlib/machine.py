"""The machine and the code a result was made on, named in run records and table provenance: the git commit
(``-dirty`` with uncommitted changes outside ``results/``), the CPU's model and the hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

from castlib.config import REPO_ROOT


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return done.stdout.strip() + ("-dirty" if dirty else "") if done.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere ``platform.processor()``), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """The machine a run trains on, named: GPU count and model (with the CPU beside it) or the CPU's model, its
    cores and the threads torch uses, e.g. "CPU AMD EPYC, 2 cores, 1 thread" (run.json; table provenance)."""
    threads = torch.get_num_threads()
    cpu = f"CPU {cpu_model()}, {os.cpu_count()} cores, {threads} thread{'s' if threads != 1 else ''}"
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}; {cpu}"
    return cpu
