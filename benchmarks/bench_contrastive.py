"""L_pxl: the fast implementation against the reference, and the cost of the Table 4 / Table 7 variants.

One forward + backward of :func:`castlib.losses.pixel_contrastive_loss` with R = 200 negatives,
D = 128, K = 100 queries, C = 8 classes, on predictions shaped like a trained model's
(:mod:`tests.contrastive_fixtures`; the speed-up on untrained, standard-normal logits is reported
beside it). Times are the best of interleaved repeats (10 at 4096 anchors, 2 at 32768), so ratios compare runs
under the same load.
Peak memory is what one step adds to the memory in use: on CPU the growth of the resident set
(high-water mark reset first) in a fresh process whose freed blocks go back to the system; on
CUDA ``max_memory_allocated``.

Checks: fast >= 5x faster and >= 10x lower peak memory than the reference at 4096 anchors; at
32768 anchors the fast one's measured peak fits this machine's memory, while the reference's,
extrapolated from its measured growth at 1024-4096 anchors, should exceed it (the reference is not
run there: on the kit's 24 GiB CPU machine its extrapolated ~10 GiB would fit, so that check fails);
the memory bank (10k entries) costs <= 1.3x the in-batch loss time at 32768 anchors (supplementary
E.4 reports 2.2x longer training); the hinge <= 1.05x InfoNCE (E.2 reports 1.6x).
``python -m benchmarks.bench_contrastive --device cuda`` measures the same on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from castlib.losses import MemoryBank, pixel_contrastive_loss, pseudo_probability_embedding
from tests.contrastive_fixtures import instance_predictions

SIDE, R, D, K, C, BANK = 32, 200, 128, 100, 8, 10_000  # each image: a 32 x 32 embedding map
SPEED_IMAGES, LARGE_IMAGES = 4, 32  # 4096 and 32768 anchors
REFERENCE_FIT_IMAGES = (1, 2, 4)


def inputs(images: int, device: str, trained: bool = True, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """``(z_weak, z_strong, mask_logits, class_logits)``; untrained = standard normal logits."""
    g = torch.Generator().manual_seed(seed)
    if trained:
        preds = instance_predictions(images, SIDE, SIDE, K, C, generator=g)
        mask_logits, class_logits = preds.mask_logits, preds.class_logits
    else:
        mask_logits = torch.randn(images, K, SIDE * SIDE, generator=g)
        class_logits = torch.randn(images, K, C + 1, generator=g)
    unit = lambda: F.normalize(torch.randn(images, SIDE * SIDE, D, generator=g), dim=-1)
    z_weak, z_strong = (unit().to(device).requires_grad_() for _ in range(2))
    return z_weak, z_strong, mask_logits.to(device), class_logits.to(device)


def full_bank(device: str) -> MemoryBank:
    z, _, mask_logits, class_logits = inputs(BANK // (SIDE * SIDE) + 1, device, seed=1)
    bank = MemoryBank(BANK)
    bank.push(z.detach().flatten(0, 1), pseudo_probability_embedding(mask_logits, class_logits))
    return bank


def step(tensors: tuple[torch.Tensor, ...], **options) -> None:
    """One forward and backward pass; every call draws the same negatives, so variants that differ only
    in the loss (InfoNCE vs hinge) do the same sampling work."""
    generator = torch.Generator(tensors[0].device).manual_seed(1)
    pixel_contrastive_loss(*tensors, num_negatives=R, generator=generator, **options).loss.backward()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_times(variants: dict[str, Callable[[], None]], repeats: int, device: str) -> dict[str, float]:
    """Best wall time of each variant over ``repeats`` interleaved rounds, after one warm-up round."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeats + 1):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def _status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (its peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_bytes(fn: Callable[[], None], device: str) -> int:
    """What ``fn`` adds to the memory in use at its peak."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident size to the current one (Linux >= 4.0)
    before = _status_bytes("VmRSS")
    fn()
    return _status_bytes("VmHWM") - before


def step_peak(impl: str, images: int, device: str) -> int:
    """Peak memory one step adds, on fresh inputs of ``images`` embedding maps."""
    tensors = inputs(images, device)
    return peak_bytes(lambda: step(tensors, impl=impl), device)


def memory_and_scale(device: str) -> dict:
    """Peak memory of one step per implementation and size; 32768-anchor step times without and with the bank."""
    out = {
        "fast_peak": step_peak("fast", SPEED_IMAGES, device),
        "reference_peaks": [step_peak("reference", images, device) for images in REFERENCE_FIT_IMAGES],
    }
    large, bank = inputs(LARGE_IMAGES, device), full_bank(device)
    variants = {"fast_large": lambda: step(large, impl="fast"),
                "fast_large_memory_bank": lambda: step(large, impl="fast", scope="memory_bank", bank=bank)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(2):  # interleaved; each step is long enough to need no warm-up round
        for name, fn in variants.items():
            start = time.perf_counter()
            if name == "fast_large":
                out["fast_large_peak"] = peak_bytes(fn, device)
            else:
                fn()
                _sync(device)
            times[name].append(time.perf_counter() - start)
    return out | {f"{name}_s": min(t) for name, t in times.items()}


def extrapolate(anchors: list[int], peaks: list[int], at: int) -> float:
    """Least-squares ``a n^2 + b n`` through the measured peaks (the reference holds ``[A, M]``
    weights and ``[A, R, D]`` gathered embeddings), evaluated at ``n = at``."""
    n = np.asarray(anchors, dtype=float)
    (a, b), *_ = np.linalg.lstsq(np.stack([n**2, n], axis=1), np.asarray(peaks, dtype=float), rcond=None)
    return float(a * at**2 + b * at)


def machine_memory(device: str) -> int:
    if device == "cuda":
        return torch.cuda.get_device_properties(0).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check(name: str, value: float, target: str, passed: bool) -> dict:
    return {"name": name, "value": float(value), "target": target, "passed": bool(passed)}


def run(device: str = "cpu") -> dict:
    torch.manual_seed(0)
    small, untrained = inputs(SPEED_IMAGES, device), inputs(SPEED_IMAGES, device, trained=False)
    speed = best_times({
        "fast": lambda: step(small, impl="fast"),
        "reference": lambda: step(small, impl="reference"),
        "fast_hinge": lambda: step(small, impl="fast", loss="hinge"),
        "fast_untrained": lambda: step(untrained, impl="fast"),
        "reference_untrained": lambda: step(untrained, impl="reference"),
    }, repeats=10, device=device)
    if device == "cuda":
        scale = memory_and_scale(device)
    else:
        command = [sys.executable, "-m", "benchmarks.bench_contrastive", "--memory-and-scale"]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # freed large blocks leave the resident set
        scale = json.loads(subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout)
    anchors = [n * SIDE * SIDE for n in REFERENCE_FIT_IMAGES]
    large_anchors = LARGE_IMAGES * SIDE * SIDE
    reference_large_peak = extrapolate(anchors, scale["reference_peaks"], large_anchors)
    machine = machine_memory(device)
    speedup = speed["reference"] / speed["fast"]
    memory_ratio = scale["reference_peaks"][-1] / scale["fast_peak"]
    bank_ratio = scale["fast_large_memory_bank_s"] / scale["fast_large_s"]
    hinge_ratio = speed["fast_hinge"] / speed["fast"]
    return {
        "profile": "none: benchmark inputs of synthetic trained-like predictions on 32 x 32 embedding maps",
        "device": device,
        "anchors": SPEED_IMAGES * SIDE * SIDE,
        "anchors_large": large_anchors,
        "negatives": R, "embedding_dim": D, "queries": K, "classes": C, "bank_size": BANK,
        "fast_s": speed["fast"],
        "reference_s": speed["reference"],
        "fast_speedup": speedup,
        "fast_speedup_untrained_logits": speed["reference_untrained"] / speed["fast_untrained"],
        "fast_peak_bytes": scale["fast_peak"],
        "reference_peak_bytes": scale["reference_peaks"][-1],
        "reference_peak_bytes_by_anchors": dict(zip(map(str, anchors), scale["reference_peaks"], strict=True)),
        "fast_memory_ratio": memory_ratio,
        "fast_large_s": scale["fast_large_s"],
        "fast_large_memory_bank_s": scale["fast_large_memory_bank_s"],
        "fast_large_peak_bytes": scale["fast_large_peak"],
        "reference_large_peak_bytes_extrapolated": reference_large_peak,
        "machine_memory_bytes": machine,
        "memory_bank_time_ratio": bank_ratio,
        "hinge_time_ratio": hinge_ratio,
        "checks": [
            check("fast vs reference speed-up, 4096 anchors", speedup, ">= 5", speedup >= 5),
            check("fast vs reference peak-memory ratio, 4096 anchors", memory_ratio, ">= 10", memory_ratio >= 10),
            check("fast peak GiB, 32768 anchors", scale["fast_large_peak"] / 2**30,
                  f"<= {machine / 2**30:.1f} (this machine's memory)", scale["fast_large_peak"] <= machine),
            check("reference peak GiB, 32768 anchors (extrapolated, not run)", reference_large_peak / 2**30,
                  f"> {machine / 2**30:.1f} (this machine's memory: the reference cannot run)",
                  reference_large_peak > machine),
            check("memory bank / in-batch time, 32768 anchors", bank_ratio, "<= 1.3", bank_ratio <= 1.3),
            check("hinge / InfoNCE time, 4096 anchors", hinge_ratio, "<= 1.05", hinge_ratio <= 1.05),
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_contrastive")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--memory-and-scale", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_and_scale:  # the CPU subprocess of run()
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        print(json.dumps(memory_and_scale("cpu")))
        return 0
    from benchmarks.__main__ import machine
    from castlib.io import write_json_atomic

    result = run(args.device)
    result["machine"] = machine()
    write_json_atomic(Path(args.out) / f"bench_contrastive_{args.device}.json", result)
    for item in result["checks"]:
        print(f"[{'ok' if item['passed'] else 'FAILED'}] {item['name']}: {item['value']:.3g} (target {item['target']})")
    return 0 if all(c["passed"] for c in result["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
