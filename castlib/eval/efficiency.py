"""Efficiency as main-paper Fig. 2 reports it (teacher vs student): parameters, FLOPs, latency, FPS and
peak memory, for any ``nn.Module`` that takes images ``[B, 3, H, W]`` in ``[0, 1]``.

- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass of the batch. It counts
  a multiply-add as 2 FLOPs and covers the operators it has formulas for (matmul, convolution,
  attention ...); element-wise operators, interpolation and ``grid_sample`` are not counted.
- Latency: median wall time of ``repeats`` forward passes after ``warmup`` untimed ones, under
  ``torch.inference_mode`` (``torch.cuda.synchronize`` around each pass on CUDA); FPS = batch / latency.
- Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the timed passes (weights, input
  and activations); on CPU, the resident weights and input plus the growth of the process' peak
  resident set during the timed passes (Linux ``/proc``: glibc's free pages are handed back first,
  then the peak is reset through ``clear_refs``); elsewhere on CPU it is not measured (``None``).

Each record names the device, dtype, input size, batch size and thread count it was measured with.
The paper states none of these for Fig. 2 (spec section 10); ``eval.efficiency`` in the config sets them.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from castlib.eval.inference import model_device

MB = 2**20


@dataclass
class EfficiencyRecord:
    """One model's efficiency, with the setting it was measured in."""

    model: str
    params: int
    flops: int  # per forward pass of the whole batch
    latency_ms: float  # median over the timed passes
    latency_iqr_ms: float  # interquartile range of the timed passes
    fps: float  # images per second: batch_size / latency
    peak_memory_mb: float | None  # None where the platform offers no measurement
    weights_mb: float
    device: str
    dtype: str
    input_size: tuple[int, int]
    batch_size: int
    threads: int
    warmup: int
    repeats: int
    memory_method: str


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{_cpu_name()}"


def _resident_bytes(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process from ``/proc/self/status``, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that what a forward pass
    allocates shows as resident-set growth instead of reusing pages freed earlier."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _PeakMemory:
    """Peak memory over a block of code, by the best means the device offers."""

    def __init__(self, device: torch.device, resident_bytes: int):
        self.device, self.resident_bytes = device, resident_bytes
        self.peak: int | None = None
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "unavailable"

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _release_free_heap()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
            self.rss_before = _resident_bytes("VmRSS")
            self.method = "weights + input + growth of peak RSS (/proc VmHWM)"
        except OSError:
            self.rss_before = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.rss_before is not None:
            self.peak = self.resident_bytes + max(0, _resident_bytes("VmHWM") - self.rss_before)


def measure_efficiency(
    model: nn.Module,
    input_size: Sequence[int] = (112, 224),
    batch_size: int = 1,
    dtype: str | torch.dtype = "float32",
    warmup: int = 2,
    repeats: int = 5,
    name: str | None = None,
    seed: int = 0,
) -> EfficiencyRecord:
    """Parameters, FLOPs, latency, FPS and peak memory of ``model`` on its own device (see the module doc).

    ``dtype`` other than float32 runs the forward passes under ``torch.autocast`` with that dtype.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    device = model_device(model)
    height, width = (int(v) for v in input_size)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, height, width, generator=generator).to(device)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())

    def forward() -> None:
        with torch.inference_mode(), autocast:
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with counter:
            forward()
        for _ in range(warmup):
            forward()
        weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        times = []
        with _PeakMemory(device, weights + images.numel() * images.element_size()) as memory:
            for _ in range(repeats):
                start = time.perf_counter()
                forward()
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    latency = statistics.median(times)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [latency, latency, latency]
    return EfficiencyRecord(
        model=name or type(model).__name__,
        params=sum(p.numel() for p in model.parameters()),
        flops=int(counter.get_total_flops()),
        latency_ms=1000 * latency,
        latency_iqr_ms=1000 * (quartiles[2] - quartiles[0]),
        fps=batch_size / latency,
        peak_memory_mb=None if memory.peak is None else memory.peak / MB,
        weights_mb=weights / MB,
        device=_device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        input_size=(height, width),
        batch_size=batch_size,
        threads=torch.get_num_threads(),
        warmup=warmup,
        repeats=repeats,
        memory_method=memory.method,
    )


def efficiency_table(records: Sequence[EfficiencyRecord]) -> pd.DataFrame:
    """One row per model in Fig. 2's units (params in M, GFLOPs, ms, FPS, MB) with its setting;
    ``.T`` puts the models side by side as columns."""
    settings = [f.name for f in fields(EfficiencyRecord) if f.name not in ("model", "params", "flops")]
    rows = [{"model": r.model, "params_M": r.params / 1e6, "GFLOPs": r.flops / 1e9,
             **{name: getattr(r, name) for name in settings}} for r in records]
    return pd.DataFrame(rows, columns=["model", "params_M", "GFLOPs", *settings]).set_index("model")


def compare_efficiency(models: Mapping[str, nn.Module], **settings) -> pd.DataFrame:
    """Measure each model (e.g. ``{"teacher": ..., "student": ...}``) in the same setting (the
    keyword arguments of :func:`measure_efficiency`, e.g. ``**cfg.eval.efficiency``) and tabulate."""
    return efficiency_table([measure_efficiency(model, name=name, **settings) for name, model in models.items()])


def teacher_vs_student(cfg, teacher_dir: str | Path | None = None, student_dir: str | Path | None = None,
                       device: str | torch.device = "cpu") -> pd.DataFrame:
    """Main-paper Fig. 2 for a config: the teacher beside the student in ``cfg.eval.efficiency``'s setting.

    The models are the trained ones when their ``save_pretrained`` folders are given (a run's ``model/``),
    else built from the config (paper: the pretrained weights; smoke/mini: random weights, same sizes).
    A last row gives the student's change relative to the teacher, as Fig. 2 does.
    """
    from castlib.data.classes import CLASS_LISTS
    from castlib.models import build_model

    num_classes = len(CLASS_LISTS[cfg.data.dataset])
    models = {name: build_model(cfg, name, num_classes, pretrained=folder).to(device)
              for name, folder in (("teacher", teacher_dir), ("student", student_dir))}
    digits = {"params_M": 3, "GFLOPs": 3, "latency_ms": 2, "latency_iqr_ms": 2, "fps": 2, "peak_memory_mb": 1,
              "weights_mb": 1}
    table = compare_efficiency(models, **cfg.eval.efficiency).round(digits)
    change = {column: f"{100 * (table.loc['student', column] / table.loc['teacher', column] - 1):+.1f}%"
              for column in ("params_M", "GFLOPs", "latency_ms", "fps", "peak_memory_mb")
              if table.loc["teacher", column] and table.loc["student", column] is not None}
    return pd.concat([table.astype(object), pd.DataFrame([change], index=["student vs teacher"])])


# ---------------------------------------------------------------------------------------------------------------
# FLOPs and parameters without running the model (``python -m castlib plan``'s estimates).

def _skip_tensor_checks() -> contextlib.ExitStack:
    """transformers' ``torch_compilable_check`` reads tensor values (e.g. Grounding DINO's deformable attention
    checks its level shapes); on shape-only tensors there are none, so the checks are skipped while counting."""
    import sys

    stack = contextlib.ExitStack()
    for name, module in list(sys.modules.items()):
        if name.startswith("transformers.") and hasattr(module, "torch_compilable_check"):
            original = module.torch_compilable_check
            module.torch_compilable_check = lambda *args, **kwargs: None
            stack.callback(setattr, module, "torch_compilable_check", original)
    return stack


def shape_only(build) -> nn.Module:
    """The model ``build()`` makes, with parameters that hold no values: built on the meta device (no
    initialisation), then given uninitialised CPU storage, in eval mode. Good for shapes and FLOPs only.

    ``Module.to_empty`` gives each module's parameters new storage one module at a time, so a parameter two
    modules share (tied weights: Grounding DINO's box heads) would come back as two, 1.46M parameters too many on
    the paper teacher; they are tied again here."""
    with torch.device("meta"):
        model = build()
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                owners.setdefault(id(param), []).append((module, name))
    model.to_empty(device="cpu")
    for (first, first_name), *others in owners.values():
        for module, name in others:
            module._parameters[name] = first._parameters[first_name]
    return model.eval()


@dataclass
class StepFlops:
    """FLOPs of one image through a model: ``forward``, the ``backward`` of its trainable parameters (and what
    leads to them), and ``encode`` (the encoder pass alone: L_pxl's strong view, no gradient)."""

    forward: int
    backward: int
    encode: int

    def training(self, contrastive: bool) -> int:
        """One training image: forward + backward (+ the strong view's encoder pass with L_pxl)."""
        return self.forward + self.backward + (self.encode if contrastive else 0)


def count_flops(model: nn.Module, input_size: Sequence[int], backward: bool = True, encode: bool = True,
                batch_size: int = 1) -> StepFlops:
    """FLOPs (a multiply-add is 2) of ``model`` on a ``batch_size`` of ``input_size`` images, counted by
    ``FlopCounterMode`` on fake tensors (shapes only: a 560M model at 1024x2048 in seconds, no memory for
    activations; attention through its math kernel so that it is counted). The backward pass differentiates the
    sum of the outputs with respect to the trainable parameters, so frozen encoders cost no backward. Counted
    per image (divided by ``batch_size``). Element-wise operators, interpolation and ``grid_sample`` are not
    counted, nor any loss (matching, point sampling, L_pxl): matrix products and convolutions only."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.nn.attention import SDPBackend, sdpa_kernel

    height, width = (int(v) for v in input_size)
    trainable = [p for p in model.parameters() if p.requires_grad]
    with _skip_tensor_checks(), FakeTensorMode(allow_non_fake_inputs=True), sdpa_kernel(SDPBackend.MATH):
        images = torch.rand(batch_size, 3, height, width)
        forward, backward, encoded = (FlopCounterMode(display=False) for _ in range(3))
        with forward:
            output = model(images)
        if backward and trainable:
            parts = [t for t in (output.class_logits, output.mask_logits, output.features)
                     if t is not None and t.requires_grad]
            with backward:
                torch.autograd.grad(sum(t.float().sum() for t in parts), trainable, allow_unused=True)
        if encode and hasattr(model, "encode"):
            with encoded, torch.no_grad():
                model.encode(images)
    return StepFlops(*(int(c.get_total_flops()) // batch_size for c in (forward, backward, encoded)))


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters (all, trainable) and persistent buffers of ``model``, counted (works on the meta device)."""
    params = dict(model.named_parameters())  # a tied parameter once
    shared = {id(p) for p in params.values()}
    buffers = {id(t): t for t in model.state_dict(keep_vars=True).values() if id(t) not in shared}
    return {"params": sum(p.numel() for p in params.values()),
            "trainable": sum(p.numel() for p in params.values() if p.requires_grad),
            "buffers": sum(t.numel() for t in buffers.values())}
