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


def device_name(device: torch.device) -> str:
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
        device=device_name(device),
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
# Main-paper Fig. 2 as a table: the paper's numbers, the paper-size architectures counted here, a profile's models.

# Fig. 2's rows: label -> the key of :data:`castlib.paper.FIG2_EFFICIENCY` (and of the measured values).
FIG2_ROWS = {"params (M)": "params_M", "GFLOPs": "GFLOPs", "latency (ms)": "latency_ms",
             "peak memory (GB)": "peak_memory_GB", "FPS": "fps", "maskAP": "ap"}
FIG2_DIGITS = {"params_M": 3, "GFLOPs": 3, "latency_ms": 2, "peak_memory_GB": 4, "fps": 2, "ap": 2}
NOT_MEASURED = "not measured"
PAPER_SIZE_PROFILE = "paper"


@dataclass
class ArchitectureCount:
    """A model's parameters and forward FLOPs counted from its architecture (random weights, never run)."""

    model: str
    params: int
    flops: int | None  # one forward pass of one image at ``input_size``; None where not counted
    input_size: tuple[int, int]
    seconds: float  # to build and count
    resizes: str = ""  # what the model resizes its input to by itself, where it does


def paper_size_counts(dataset: str = "cityscapes", input_size: Sequence[int] | None = None, flops: bool = True,
                      models: Sequence[str] = ("teacher", "student"), profile: str = PAPER_SIZE_PROFILE,
                      ) -> dict[str, ArchitectureCount]:
    """The paper-size teacher's and student's parameters and FLOPs (``configs/paper.yaml``'s architectures:
    MM-Grounding-DINO Swin-L + SAM2.1 Hiera-L, DINOv2-S + the Mask2Former decoder), counted on this machine's CPU:
    each model built on the meta device (:func:`shape_only`: random weights never materialised), its parameters
    counted, and the FLOPs of one forward pass of one ``input_size`` image (default: the paper profile's
    ``eval.efficiency.input_size`` for ``dataset``) counted on fake tensors (:func:`count_flops`). Computed on
    every call, nothing cached: about 15 s on one core, most of it the teacher's FLOPs. The teacher resizes its
    input itself (``resizes``: Grounding DINO to its processor's size, SAM2 to its square input), so its FLOPs
    follow the aspect ratio of ``input_size`` only (1022x2044: 5.57 TFLOPs, 644x644: 5.13); the student's follow
    its size."""
    from castlib.config import load_config
    from castlib.data.classes import CLASS_LISTS
    from castlib.models import build_model

    cfg = load_config(profile, [f"data.dataset={dataset}"])
    size = tuple(int(v) for v in (input_size or cfg.eval.efficiency.input_size))
    detector, segmenter = cfg.model.teacher.detector, cfg.model.teacher.segmenter
    resizes = {"teacher": f"Grounding DINO to a shorter side of {detector.short_side} (longer at most "
                          f"{detector.max_size}), SAM2 to {segmenter.image_size}x{segmenter.image_size}", "student": ""}
    out = {}
    for which in models:
        started = time.perf_counter()
        model = shape_only(lambda which=which: build_model(cfg, which, len(CLASS_LISTS[dataset]), pretrained=False))
        counted = count_flops(model, size, backward=False, encode=False).forward if flops else None
        out[which] = ArchitectureCount(which, parameter_counts(model)["params"], counted, size,
                                       time.perf_counter() - started, resizes[which])
        del model
    return out


def _change(teacher, student) -> str:
    """The student's change relative to the teacher, as Fig. 2 prints it (``-90.8%``), or ``-``."""
    if not all(isinstance(v, int | float) for v in (teacher, student)) or not teacher:
        return "-"
    return f"{100 * (student / teacher - 1):+.1f}%"


def fig2_table(cfg, teacher_dir: str | Path | None = None, student_dir: str | Path | None = None,
               device: str | torch.device = "cpu", ap: Mapping[str, float] | None = None,
               runs: Mapping[str, str] | None = None, paper_size: Mapping[str, ArchitectureCount] | None = None,
               ) -> pd.DataFrame:
    """Main-paper Fig. 2 for a config, one row per metric (:data:`FIG2_ROWS`) and three teacher / student / change
    column groups: ``paper`` (:data:`castlib.paper.FIG2_EFFICIENCY`, as printed), ``paper-size`` (the paper's
    architectures counted on this CPU, :func:`paper_size_counts`: parameters and FLOPs only, latency, memory and
    FPS not measured) and ``measured`` (the config's own models timed by :func:`teacher_vs_student` on
    ``device``: trained ones from ``teacher_dir`` / ``student_dir``, else random weights; their maskAP from
    ``ap`` where given, e.g. the runs' ``metrics.json``; ``runs`` names them).

    The caption, notes (what each column is, the measuring setting, what the profile's models are) and provenance
    (data, profile, commit, machine, torch) travel in ``table.attrs``; :func:`write_fig2_table` writes them.
    ``paper_size`` passes counts made before (else they are computed here)."""
    from castlib import paper
    from castlib.data.loaders import SMOKE_AP_NOTE, describe_data
    from castlib.machine import git_commit, hardware

    measured = teacher_vs_student(cfg, teacher_dir, student_dir, device)
    counts = paper_size if paper_size is not None else paper_size_counts(cfg.data.dataset)
    values: dict[str, dict[str, dict]] = {"paper": paper.FIG2_EFFICIENCY, "paper-size": {}, "measured": {}}
    for which in ("teacher", "student"):
        row, count = measured.loc[which], counts[which]
        memory = row["peak_memory_mb"]
        values["measured"][which] = {
            "params_M": row["params_M"], "GFLOPs": row["GFLOPs"], "latency_ms": row["latency_ms"],
            "peak_memory_GB": NOT_MEASURED if memory is None or pd.isna(memory) else memory / 1024,
            "fps": row["fps"], "ap": (ap or {}).get(which, "-")}
        values["paper-size"][which] = {
            "params_M": count.params / 1e6, "GFLOPs": "-" if count.flops is None else count.flops / 1e9,
            "latency_ms": NOT_MEASURED, "peak_memory_GB": NOT_MEASURED, "fps": NOT_MEASURED, "ap": "-"}
    rows = []
    for label, key in FIG2_ROWS.items():
        row = {"metric": label}
        for group, models in values.items():
            cells = [models[m][key] for m in ("teacher", "student")]
            cells = [round(float(v), FIG2_DIGITS[key]) if isinstance(v, int | float) else v for v in cells]
            row |= {f"{group} teacher": cells[0], f"{group} student": cells[1],
                    f"{group} change": _change(*cells)}
        rows.append(row)
    table = pd.DataFrame(rows)

    data, setting = describe_data(cfg), cfg.eval.efficiency
    teacher, student = measured.loc["teacher"], measured.loc["student"]
    size = counts["teacher"].input_size
    trained = (f"the trained runs {runs['teacher']} (teacher) and {runs['student']} (student)" if runs else
               "trained models" if teacher_dir or student_dir else "built from the config with random weights")
    notes = [
        "paper: main-paper Fig. 2 as printed (castlib.paper.FIG2_EFFICIENCY; spec section 11); the paper states no "
        "hardware, input size, precision or FLOP convention (spec section 10); its maskAP is Cityscapes val "
        "(the adapted teacher theta_T'' and the refined student theta_s+, main Table 1).",
        f"paper-size: configs/{PAPER_SIZE_PROFILE}.yaml's teacher (MM-Grounding-DINO Swin-L + SAM2.1 Hiera-L) and "
        f"student (DINOv2-S + Mask2Former decoder) built on the meta device with random weights (never "
        f"materialised), parameters counted and the FLOPs of one forward pass of one {size[0]}x{size[1]} image "
        f"(the {PAPER_SIZE_PROFILE} profile's eval.efficiency.input_size) counted by torch's FlopCounterMode on "
        f"fake tensors, on this machine's CPU in {counts['teacher'].seconds + counts['student'].seconds:.0f} s "
        "(matrix products and convolutions, a multiply-add as 2 FLOPs; element-wise operators, interpolation and "
        f"grid_sample not counted). The teacher resizes its input itself ({counts['teacher'].resizes}), so its "
        "FLOPs depend only on the input's aspect ratio; the student's grow with its size, and the "
        "paper's input size is not stated. Latency, memory and FPS are not "
        "measured here (no paper-size model runs on this machine), nor AP (random weights).",
        f"measured: the `{cfg.profile}` profile's own teacher and student, {trained}, timed on {teacher['device']} "
        f"({teacher['threads']} threads), {teacher['dtype']}, input {setting.input_size[0]}x{setting.input_size[1]}, "
        f"batch {teacher['batch_size']}: latency the median of {teacher['repeats']} forward passes after "
        f"{teacher['warmup']} warm-up ones (interquartile range teacher {teacher['latency_iqr_ms']} ms, student "
        f"{student['latency_iqr_ms']} ms), FPS = batch / latency; peak memory: {teacher['memory_method']}.",
    ]
    if cfg.profile != PAPER_SIZE_PROFILE:
        notes.append(f"The `{cfg.profile}` models are tiny stand-ins sized for a CPU (teacher "
                     f"{teacher['params_M']}M, student {student['params_M']}M parameters), so their student / "
                     "teacher ratios are not the paper's: compare the paper column with the paper-size one.")
    if cfg.profile == "smoke":
        notes.append(f"{SMOKE_AP_NOTE[0].upper()}{SMOKE_AP_NOTE[1:]}.")
    table.attrs.update({
        "caption": (f"Teacher vs student efficiency (main-paper Fig. 2) on the {data}, profile `{cfg.profile}`: the "
                    "paper's numbers, the paper-size architectures counted on this CPU, and the profile's own "
                    "models measured"),
        "notes": notes,
        "provenance": {"data": data, "profile": cfg.profile, "dataset": cfg.data.dataset, "commit": git_commit(),
                       "machine": hardware(), "torch": torch.__version__, **({"runs": " ".join(runs.values())}
                                                                              if runs else {})},
        "profile": cfg.profile, "data": data, "measured_on": teacher["device"],
    })
    return table


def write_fig2_table(table: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """``stem.csv`` (caption, notes and provenance as leading ``# `` lines: ``pandas.read_csv(path, comment="#")``)
    and ``stem.md`` (caption, table, notes, provenance) of :func:`fig2_table`, both atomic."""
    from castlib.io import write_text_atomic

    stem, attrs = Path(stem), table.attrs
    facts = [f"{key}: {value}" for key, value in attrs["provenance"].items()]
    header = "".join(f"# {line}\n" for line in [attrs["caption"], *attrs["notes"], *facts])
    csv = write_text_atomic(stem.with_suffix(".csv"), header + table.to_csv(index=False))
    lines = [f"## {attrs['caption']}", "", table.to_markdown(index=False), "", "Notes:", "",
             *(f"- {note}" for note in attrs["notes"]), "", "Provenance:", "", *(f"- {fact}" for fact in facts)]
    return csv, write_text_atomic(stem.with_suffix(".md"), "\n".join(lines) + "\n")


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
