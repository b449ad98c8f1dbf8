"""Training-step memory of the teacher and the student (issue 30), and what Table 2's batches need per GPU.

Each setting runs in a fresh process: the model with random weights at the profile's sizes (``--profile paper``:
the paper architectures, 559.5M teacher, 54.8M student), one synthetic image at the profile's crop with
``instances`` ground-truth instances and a strong view, and one real training step of the real objective
(:class:`castlib.engine.objective.Objective` with L_pxl, as teacher step A and knowledge transfer run it:
forward, backward; the teacher's K = ``model.teacher.top_k`` boxes), in float32 or under bfloat16 autocast. The
step's peak is the process's peak resident memory (``ru_maxrss``) minus its resident memory after the model was
built: activations, the trainable parameters' gradients and temporaries of one image.

Projected memory per GPU of Table 2's batches (teacher 4, student 8 images; per GPU ceil(batch / GPUs)) is a
projection, not a measurement: fixed (float32 weights, plus gradients and AdamW's two moments of the trainable
parameters) + the measured per-image step peak x images per GPU. CPU resident memory stands in for GPU memory
(same tensors; no CUDA context or allocator cache counted).

``python -m benchmarks`` runs it on the smoke profile (seconds); the paper numbers come from
``python -m benchmarks.bench_teacher_memory --profile paper --set model.pretrained=false`` (minutes and 8-11 GiB
per teacher setting on a CPU; docs/findings/teacher_step_memory.md).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from castlib.config import load_config
from castlib.data.classes import CITYSCAPES
from castlib.data.sample import Batch
from castlib.engine.objective import Objective
from castlib.io import write_json_atomic
from castlib.losses import SetCriterion, contrastive_options
from castlib.models import build_model

C = len(CITYSCAPES)
GLOBAL_BATCH = {"teacher": 4, "student": 8}  # supplementary Table 2
GPU_COUNTS = (1, 2, 4, 8)
GIB = 2**30


def synthetic_batch(height: int, width: int, instances: int, seed: int = 0) -> Batch:
    """One image with ``instances`` rectangular instances of random classes and a strong view."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(instances, height, width, dtype=torch.bool)
    for k in range(instances):
        h, w = (int(torch.randint(size // 16, size // 3, (), generator=g)) for size in (height, width))
        y, x = int(torch.randint(0, height - h, (), generator=g)), int(torch.randint(0, width - w, (), generator=g))
        masks[k, y:y + h, x:x + w] = True
    image = torch.rand(1, 3, height, width, generator=g)
    return Batch(images=image, valid=torch.ones(1, height, width, dtype=torch.bool), masks=[masks],
                 labels=[torch.randint(0, C, (instances,), generator=g)], image_ids=["0"], paths=[""],
                 sizes=[(height, width)], strong=(image + 0.1 * torch.rand(image.shape, generator=g)).clamp(0, 1))


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(profile: str, which: str, dtype: str, overrides: list[str], instances: int | None = None,
            cap_gib: float | None = None) -> dict:
    """One training step of ``which`` on one image in this process; see the module docstring. ``cap_gib`` caps the
    process's address space (an allocation beyond it fails: the step does not fit)."""
    if cap_gib:
        limit = int(cap_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    cfg = load_config(profile, overrides)
    torch.manual_seed(0)
    model = build_model(cfg, which, C, pretrained=False).train()
    criterion = SetCriterion.from_config(cfg.loss, C) if which == "student" else None
    section = cfg.train.teacher if which == "teacher" else cfg.train.student
    objective = Objective(model, "teacher" if which == "teacher" else "criterion", criterion,
                          contrastive=contrastive_options(cfg.loss.contrastive),
                          contrastive_weight=section.contrastive_weight)
    instances = cfg.model.teacher.loss.max_instances if instances is None else instances
    batch = synthetic_batch(*cfg.augment.crop, instances)
    build_peak, baseline = _max_rss(), psutil.Process().memory_info().rss
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
        losses = objective(batch)
    losses["loss"].backward()
    seconds = time.perf_counter() - start
    peak = _max_rss()
    params = [p for p in model.parameters()]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return {
        "which": which, "dtype": dtype, "profile": profile, "overrides": overrides, "crop": list(cfg.augment.crop),
        "instances": instances, "top_k": cfg.model.teacher.top_k if which == "teacher" else None,
        "parameters": sum(p.numel() for p in params), "trainable": trainable,
        "step_peak_gib": (peak - baseline) / GIB, "peak_rss_gib": peak / GIB, "baseline_rss_gib": baseline / GIB,
        "peak_is_the_steps": peak > build_peak, "step_s": seconds, "loss": float(losses["loss"]),
        "activation_checkpointing": bool(cfg.model.teacher.get("activation_checkpointing", False)),
    }


def measure_in_subprocess(profile: str, which: str, dtype: str, overrides: list[str],
                          instances: int | None = None, cap_gib: float | None = None) -> dict:
    """:func:`measure` in a fresh interpreter (peak resident memory is per process)."""
    job = json.dumps({"profile": profile, "which": which, "dtype": dtype, "overrides": overrides,
                      "instances": instances, "cap_gib": cap_gib})
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_teacher_memory", "--worker", job], cwd=root,
                          capture_output=True, text=True, env=os.environ)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        error = lines[-1][-300:] if lines else f"killed by signal {-done.returncode} (out of memory?)"
        return {"which": which, "dtype": dtype, "overrides": overrides, "cap_gib": cap_gib, "error": error}
    return json.loads(done.stdout.strip().splitlines()[-1])


def projection(record: dict) -> dict[str, float]:
    """GiB per GPU of Table 2's global batch on 1, 2, 4, 8 GPUs: fixed + per-image step peak x images per GPU."""
    fixed = (4 * record["parameters"] + 3 * 4 * record["trainable"]) / GIB  # weights; grads + AdamW moments
    batch = GLOBAL_BATCH[record["which"]]
    return {str(n): fixed + record["step_peak_gib"] * math.ceil(batch / n) for n in GPU_COUNTS}


def report(profile: str, overrides: list[str], models: list[str], dtypes: list[str],
           instances: int | None = None, cap_gib: float | None = None) -> dict:
    records = []
    for which in models:
        for dtype in dtypes:
            record = measure_in_subprocess(profile, which, dtype, overrides, instances, cap_gib)
            if "error" not in record:
                record["fixed_gib"] = (4 * record["parameters"] + 12 * record["trainable"]) / GIB
                record["projected_gib_per_gpu"] = projection(record)
            records.append(record)
            print(json.dumps(record), flush=True)
    return {"profile": profile, "overrides": overrides, "global_batch": GLOBAL_BATCH, "records": records,
            "note": "projected_gib_per_gpu is a projection (fixed + per-image step peak x images per GPU), "
                    "CPU resident memory standing in for GPU memory"}


def run() -> dict:
    """The smoke profile's sizes (``python -m benchmarks``)."""
    return report("smoke", [], ["teacher", "student"], ["float32", "bfloat16"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_teacher_memory")
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--models", nargs="+", default=["teacher", "student"], choices=["teacher", "student"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--instances", type=int, default=None,
                        help="ground-truth instances of the image (default: model.teacher.loss.max_instances)")
    parser.add_argument("--cap-gib", type=float, default=None, help="address-space cap of each measuring process")
    parser.add_argument("--out", default=None, help="JSON file for the records")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return 0
    result = report(args.profile, args.set, args.models, args.dtypes, args.instances, args.cap_gib)
    if args.out:
        write_json_atomic(Path(args.out), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
