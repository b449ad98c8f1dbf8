"""``python -m benchmarks.gpu_check [--tiny] [--out DIR]`` (``make gpu-check``): the paper path on one GPU in
under 10 minutes, with random weights in the paper architectures and a synthetic Cityscapes-format set at
1024 x 2048 (issue 30 item 5). Writes ``DIR/gpu_check.json``: the device, torch / CUDA versions, the commit, and
per part its result, error or reason for being skipped; one part failing keeps the others' results.

Parts, each under its own time budget (SIGALRM ends a part that overruns it):

- ``student_step`` / ``teacher_step``: one training step of knowledge transfer (student) and of teacher step A,
  built by :func:`castlib.report.costs.stage_training` (the stage's own objective, batch and optimiser), timed
  (median of 3 after 1 untimed; tiny: 1) with bf16 autocast (the kit's training setting) and in fp32, with
  ``torch.cuda.max_memory_allocated``;
- ``inference``: student and teacher forward passes at 1024 x 2048 (fp32 and bf16), FPS against main-paper
  Fig. 2's student 13.0 FPS / 76.9 ms and teacher 2.85 FPS (:func:`castlib.eval.efficiency.measure_efficiency`);
- ``contrastive``: L_pxl forward + backward, fast against reference, at the paper student's anchor count (its crop's
  14-pixel grid x Table 2's batch of 8);
- ``stages``: every stage of the pipeline (teacher_init, teacher finetune, pseudo-labels, self-training,
  pseudo-labels, knowledge transfer, refinement) for 2 iterations, evaluated on 2 images, into a temporary
  runs_dir.

Without CUDA (or with ``--tiny``) the paper-size parts are skipped with the reason recorded and the same parts run
on the smoke profile's sizes (tiny models, 128 x 256 images): what ``make test`` runs (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import signal
import statistics
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from castlib.config import REPO_ROOT, Config, load_config
from castlib.io import write_json_atomic

PAPER_FPS = {"student": 13.0, "teacher": 2.85}  # main-paper Fig. 2 (student 76.9 ms per image)
PAPER_IMAGE = (1024, 2048)  # a Cityscapes image
BUDGET_S = {"data": 60, "student_step": 60, "teacher_step": 100, "inference": 90, "contrastive": 60, "stages": 180}
TINY_BUDGET_S = dict.fromkeys(BUDGET_S, 300)  # a bound on a hang only: a shared 2-core CPU can be slow


class PartTimeout(Exception):
    """A part ran past its time budget."""


@contextlib.contextmanager
def time_budget(seconds: float):
    """Raise :class:`PartTimeout` in the block after ``seconds`` (SIGALRM; the main thread only)."""
    def expire(signum, frame):
        raise PartTimeout(f"over its budget of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_config(root: Path, tiny: bool) -> Config:
    """The paper profile (smoke with ``tiny``) on a synthetic Cityscapes-format set under ``root`` (8 train,
    2 validation images; 1024 x 2048, or 128 x 256 tiny), random weights, 2 iterations per stage, runs in
    ``root/runs``."""
    height, width = (128, 256) if tiny else PAPER_IMAGE
    overrides = {
        "data.data_dir": str(root / "data"), "data.splits_dir": str(root / "splits"), "runs_dir": str(root / "runs"),
        "data.synthetic.name": "gpu-check", "data.synthetic.cityscapes": {"train": 8, "val": 2, "height": height,
                                                                          "width": width},
        "data.label_fraction": 0.5, "data.label_fractions": [0.5], "data.num_workers": 0, "seeds": [0],
        "model.pretrained": False, "model.stand_in": False,
        "train.teacher.finetune_iterations": 2, "train.teacher.self_training_iterations": 2,
        "train.student.iterations": 2, "train.refinement.iterations": 2, "train.checkpoint_every": 2,
        "train.log_every": 1,
    }
    cfg = load_config("smoke" if tiny else "paper", overrides)
    if "source" in cfg.data:  # the paper profile reads real data unless told otherwise
        cfg.data.source = "synthetic"
    return cfg


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def training_step(cfg: Config, key: str, device: torch.device, steps: int = 3) -> dict:
    """Step time (median of ``steps`` after 1 untimed) and peak memory of a training step of ``key`` (bf16
    autocast, then fp32)."""
    from castlib import distributed as D
    from castlib.report.costs import stage_training, timed_steps

    ctx = D.init(cfg.device)
    out = {}
    for precision in ("bf16", "fp32"):
        _reset_peak(device)
        _, model, _, parts = stage_training(cfg, key, ctx, steps + 1)
        fp32 = mock.patch.object(D, "autocast", lambda ctx: contextlib.nullcontext())
        with fp32 if precision == "fp32" else contextlib.nullcontext():
            seconds = timed_steps(parts, steps, ctx)
        section = cfg.train.teacher if key.startswith("teacher") else cfg.train.student
        out[precision] = {"step_s": statistics.median(seconds), "steps_s": seconds, "peak_memory_mb": _peak_mb(device),
                          "images_per_step": section.batch_size, "crop": list(cfg.augment.crop),
                          "autocast": precision == "bf16" and device.type == "cuda"}
        del model, parts
    return out


def inference(cfg: Config, device: torch.device, repeats: int = 5) -> dict:
    """Student and teacher FPS at a full Cityscapes image (fp32 and bf16), beside main-paper Fig. 2."""
    from castlib.data.classes import CLASS_LISTS
    from castlib.eval.efficiency import measure_efficiency
    from castlib.models import build_model

    size = (cfg.data.synthetic.cityscapes.height, cfg.data.synthetic.cityscapes.width)
    out = {}
    for which in ("student", "teacher"):
        model = build_model(cfg, which, len(CLASS_LISTS["cityscapes"]), pretrained=False).to(device)
        for dtype in ("float32", "bfloat16"):
            _reset_peak(device)
            record = measure_efficiency(model, size, dtype=dtype, warmup=1, repeats=repeats, name=which)
            out[f"{which}/{dtype}"] = {"fps": record.fps, "latency_ms": record.latency_ms, "gflops": record.flops / 1e9,
                                       "params_m": record.params / 1e6, "peak_memory_mb": record.peak_memory_mb,
                                       "paper_fps": PAPER_FPS[which], "input_size": list(size)}
        del model
    return out


def contrastive(cfg: Config, device: torch.device) -> dict:
    """L_pxl forward + backward, fast against reference, at the student's anchor count (crop grid x batch)."""
    from benchmarks.bench_contrastive import best_times, peak_bytes, step
    from tests.contrastive_fixtures import instance_predictions

    height, width = (side // 14 for side in cfg.augment.crop)
    images = cfg.train.student.batch_size
    g = torch.Generator().manual_seed(0)
    preds = instance_predictions(images, height, width, 100, 8, generator=g)
    unit = lambda: torch.nn.functional.normalize(torch.randn(images, height * width, 128, generator=g), dim=-1)
    tensors = tuple(t.to(device).requires_grad_() for t in (unit(), unit())) + (
        preds.mask_logits.to(device), preds.class_logits.to(device))
    device_name = device.type
    times = best_times({impl: (lambda impl=impl: step(tensors, impl=impl)) for impl in ("fast", "reference")}, 2,
                       device_name)
    peaks = {impl: peak_bytes(lambda impl=impl: step(tensors, impl=impl), device_name) / 2**20
             for impl in ("fast", "reference")}
    return {"anchors": images * height * width, "seconds": times, "peak_added_mb": peaks,
            "speedup": times["reference"] / times["fast"]}


def stage_pass(cfg: Config) -> dict:
    """Every stage for 2 iterations (``stages.cast``), with each run's wall time and maskAP."""
    from castlib.engine import stages

    started = time.perf_counter()
    runs = stages.cast(cfg)
    return {"seconds": time.perf_counter() - started, "runs": {
        name: {"id": run.id, "stage": run.stage, "ap": run.metrics.get("ap")} for name, run in runs.items()}}


def _commit() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    return None


def run(out_dir: str | Path, tiny: bool | None = None) -> dict:
    """Run every part; returns the record written to ``out_dir/gpu_check.json``."""
    from castlib.data.loaders import make_splits, prepare_data
    from castlib.eval.efficiency import device_name

    cuda = torch.cuda.is_available()
    tiny = not cuda if tiny is None else tiny
    device = torch.device("cuda" if cuda else "cpu")
    budgets = TINY_BUDGET_S if tiny else BUDGET_S
    record = {"device": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
              "python": platform.python_version(), "commit": _commit(), "tiny": tiny,
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "parts": {}}
    if tiny:
        record["paper_size"] = ("skipped: " + ("no CUDA device" if not cuda else "--tiny") +
                                "; the parts ran on the smoke profile's sizes (tiny models, 128 x 256 images)")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        cfg = check_config(Path(tmp), tiny)
        parts: dict[str, Callable[[], dict]] = {
            "data": lambda: {"root": str(prepare_data(cfg)), "splits": [str(p) for p in make_splits(cfg)]},
            "student_step": lambda: training_step(cfg, f"knowledge_transfer/{cfg.model.student_backbone}", device,
                                                  1 if tiny else 3),
            "teacher_step": lambda: training_step(cfg, "teacher_finetune", device, 1 if tiny else 3),
            "inference": lambda: inference(cfg, device, 2 if tiny else 5),
            "contrastive": lambda: contrastive(cfg, device),
            "stages": lambda: stage_pass(cfg),
        }
        for name, part in parts.items():
            started = time.perf_counter()
            print(f"== {name} (budget {budgets[name]} s)", flush=True)
            try:
                with time_budget(budgets[name]):
                    entry = {"status": "ok", "result": part()}
            except Exception as e:  # noqa: BLE001 - one part failing must not lose the others' results
                entry = {"status": "timeout" if isinstance(e, PartTimeout) else "error",
                         "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=8)}
            entry["seconds"] = time.perf_counter() - started
            record["parts"][name] = entry
            print(f"   {entry['status']} in {entry['seconds']:.1f} s", flush=True)
            if cuda:
                torch.cuda.empty_cache()
    record["seconds"] = sum(p["seconds"] for p in record["parts"].values())
    out = Path(out_dir) / "gpu_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, record)
    print(f"-> {out}")
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/benchmarks", help="folder for gpu_check.json")
    parser.add_argument("--tiny", action="store_true", help="smoke sizes even on a GPU (the CPU always uses them)")
    args = parser.parse_args(argv)
    record = run(args.out, tiny=True if args.tiny else None)
    return 0 if all(p["status"] == "ok" for p in record["parts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
