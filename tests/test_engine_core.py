"""The engine's machinery on a toy model: run ids, schedules, clipping, batch streams, checkpoints, resume."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from torchvision import tv_tensors

from castlib.config import load_config
from castlib.data.sample import InstanceSample
from castlib.distributed import Context
from castlib.engine.batches import IterationBatches, batch_stream
from castlib.engine.checkpoint import load_checkpoint
from castlib.engine.logs import wall_seconds
from castlib.engine.loop import train
from castlib.engine.optim import build_optimizer, build_scheduler, clip_gradients
from castlib.engine.runs import Run, RunError, claim, create_run, release, run_id

CPU = Context(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


class NoisyImages(Dataset):
    """Item i: a constant image of value i plus noise drawn from torch's RNG (to see the seeding)."""

    def __len__(self):
        return 7

    def __getitem__(self, i):
        image = torch.full((3, 4, 4), float(i)) + 0.01 * torch.rand(3, 4, 4)
        return InstanceSample(tv_tensors.Image(image), tv_tensors.Mask(torch.zeros(0, 4, 4, dtype=torch.bool)),
                              torch.zeros(0, dtype=torch.long), f"img{i}", f"img{i}.png")


def test_run_ids_depend_on_what_is_computed_not_on_how():
    cfg = load_config("smoke").to_dict()
    base = run_id("stage", cfg, {"teacher": "abc"}, 0)
    assert base == run_id("stage", cfg, {"teacher": "abc"}, 0)
    assert run_id("stage", {**cfg, "device": "cuda"}, {"teacher": "abc"}, 0) == base
    assert run_id("stage", {**cfg, "data": {**cfg["data"], "num_workers": 4}}, {"teacher": "abc"}, 0) == base
    assert run_id("stage", {**cfg, "augment": {**cfg["augment"], "hflip": 0.0}}, {"teacher": "abc"}, 0) != base
    assert run_id("stage", cfg, {"teacher": "abd"}, 0) != base
    assert run_id("stage", cfg, {"teacher": "abc"}, 1) != base
    assert run_id("other", cfg, {"teacher": "abc"}, 0) != base


def test_a_missing_or_incomplete_upstream_run_is_named(tmp_path):
    cfg = load_config("smoke", [f"runs_dir={tmp_path}"])
    upstream = create_run(cfg, "teacher", {"x": 1}, {}, seed=0)
    assert (upstream.dir / "run.json").is_file() and (upstream.dir / "config.yaml").is_file()
    with pytest.raises(RunError, match="is not complete") as err:
        create_run(cfg, "student", {"x": 1}, {"teacher": upstream}, seed=0)
    assert err.value.path == upstream.dir
    ghost = type(upstream)("0123456789ab", tmp_path / "0123456789ab")
    with pytest.raises(RunError, match="does not exist"):
        create_run(cfg, "student", {"x": 1}, {"teacher": ghost}, seed=0)
    upstream.mark_complete()
    child = create_run(cfg, "student", {"x": 1}, {"teacher": upstream}, seed=0)
    assert child.info["inputs"] == {"teacher": upstream.id}


def test_a_run_that_completes_within_a_second_has_a_positive_wall_time(tmp_path):
    # run.json's created and complete.json's finished to the microsecond: at whole seconds, a smoke pseudo-labelling
    # pass that finished in the second it started showed 0 s spent in the plan
    cfg = load_config("smoke", [f"runs_dir={tmp_path}"])
    run = create_run(cfg, "pseudo_labels", {"x": 1}, {}, seed=0)
    run.mark_complete()
    assert 0 < wall_seconds(run) < 60


def _toy_optimizer(lr=1.0):
    model = nn.Linear(3, 2)
    return model, build_optimizer(model, {"all": (model.parameters(), lr)}, weight_decay=0.01)


_HOLD_THEN = """
import sys, time
from pathlib import Path
from castlib.engine.runs import Run, claim
run = Run("r", Path(sys.argv[1]))
assert claim(run)
print("held", flush=True)
sys.stdin.readline()
if sys.argv[2] == "complete":
    run.mark_complete()
"""


def _holder(tmp_path, then: str):
    import subprocess
    import sys

    (tmp_path / "r").mkdir()
    child = subprocess.Popen([sys.executable, "-c", _HOLD_THEN, str(tmp_path / "r"), then], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


@pytest.mark.parametrize("then", ["complete", "die"])
def test_a_run_another_process_trains_is_waited_for_then_reused_or_taken_over(tmp_path, capfd, then):
    """Two processes on one runs folder never train a run at once: the second waits on the run's lock; it
    reuses the run when the first completes it, and takes it over when the first ends without completing."""
    import threading

    child = _holder(tmp_path, then)
    run = Run("r", tmp_path / "r")
    got = []
    waiter = threading.Thread(target=lambda: got.append(claim(run)))
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and not got  # blocked while the child holds the lock
    child.communicate("go\n", timeout=60)
    waiter.join(timeout=30)
    assert got == [then == "die"] and run.complete == (then == "complete")
    assert "another process is training it" in capfd.readouterr().err
    release(run)


@pytest.mark.parametrize("t", [0, 1, 89, 90, 94, 95, 99])
def test_multistep_schedule_decays_at_0_9_and_0_95_of_the_run(t):
    _, opt = _toy_optimizer(5e-5)
    sched = build_scheduler(opt, "multistep", iterations=100)
    for _ in range(t):
        opt.step()
        sched.step()
    expected = 5e-5 * 0.1 ** ((t >= 90) + (t >= 95))
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("t", [0, 1, 37, 500, 999])
def test_poly_schedule_is_base_times_one_minus_t_over_T_to_the_0_9(t):
    _, opt = _toy_optimizer(5e-5)
    sched = build_scheduler(opt, "poly", iterations=1000, power=0.9)
    for _ in range(t):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-5 * (1 - t / 1000) ** 0.9, rel=1e-6)


@pytest.mark.parametrize("kind", ["poly", "multistep", "constant"])
@pytest.mark.parametrize("t", [0, 1, 49, 99, 100, 500, 999])
def test_warmup_scales_the_rate_linearly_from_1_over_w_to_1_on_top_of_the_schedule(kind, t):
    _, opt = _toy_optimizer(1e-3)
    plain = build_scheduler(_toy_optimizer(1e-3)[1], kind, iterations=1000)
    sched = build_scheduler(opt, kind, iterations=1000, warmup=100)
    for _ in range(t):
        opt.step()
        sched.step()
        plain.step()
    factor = (1 + 99 * min(t, 100) / 100) / 100
    assert opt.param_groups[0]["lr"] == pytest.approx(plain.get_last_lr()[0] * factor, rel=1e-6)


def test_weight_decay_spares_biases():
    model, opt = _toy_optimizer()
    decays = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decays == {"all": 0.01, "all_no_decay": 0.0}


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.position_embeddings = nn.Parameter(torch.zeros(1, 5, 8))
        self.level_embed = nn.Embedding(3, 8)
        self.norm = nn.LayerNorm(8)
        self.attention = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 4)


def test_weight_decay_spares_embeddings_tokens_and_norms_by_type_and_name():
    model = _Tokens()
    opt = build_optimizer(model, {"all": (model.parameters(), 1.0)}, weight_decay=0.05)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {"attention.in_proj_weight", "attention.out_proj.weight", "head.weight"}


def test_gradient_clipping_caps_the_l2_norm_at_0_1_and_keeps_the_direction():
    model = nn.Linear(10, 10)
    model(torch.randn(4, 10)).pow(2).sum().mul(100).backward()
    before = torch.cat([p.grad.flatten() for p in model.parameters()]).clone()
    norm = clip_gradients(model.parameters(), 0.1)
    after = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(norm) > 0.1
    assert after.norm().item() == pytest.approx(0.1, rel=1e-4)
    assert torch.allclose(after / after.norm(), before / before.norm(), atol=1e-6)


def _stream_images(start, n, **kw):
    stream = batch_stream(NoisyImages(), batch_size=4, seed=3, start=start, **kw)
    return [next(stream).images for _ in range(n)]


def test_the_batch_of_iteration_t_is_the_same_whatever_the_resume_point_and_worker_count():
    full = _stream_images(0, 5)
    assert all(torch.equal(a, b) for a, b in zip(full[2:], _stream_images(2, 3), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(full, _stream_images(0, 5, num_workers=2), strict=True))
    assert not torch.equal(full[0], full[1])


def test_an_epoch_visits_every_sample_once_and_ranks_split_the_global_batch():
    sampler = IterationBatches(size=7, batch_size=4, seed=0)
    first_epoch = [i for t in range(7) for i, _ in sampler.indices(t)][:7]
    assert sorted(first_epoch) == list(range(7))
    ranks = [IterationBatches(7, 4, 0, rank=r, world=2) for r in range(2)]
    parts = [next(iter(s)) for s in ranks]
    assert parts[0] + parts[1] == sampler.indices(0)


def _toy_training(run, iterations, fail_at=None, warmup=0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(48, 16), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = build_optimizer(model, {"all": (model.parameters(), 1e-2)}, weight_decay=0.01)
    sched = build_scheduler(opt, "poly", iterations, warmup=warmup)

    def factory(start):
        stream = batch_stream(NoisyImages(), batch_size=2, seed=0, start=start)

        def step(it):
            if it == fail_at:
                raise KeyboardInterrupt
            x = next(stream).images.flatten(1)
            return {"loss": model(x).pow(2).mean(), "aux_term": torch.tensor(float(it))}

        return step

    values = train(run, CPU, model, opt, sched, iterations, factory, grad_clip=1.0, checkpoint_every=3, log_every=1)
    return model, values


@pytest.mark.parametrize("warmup", [0, 8])  # 8: the checkpoint falls inside the warm-up
def test_an_interrupted_run_resumes_from_its_checkpoint_to_the_same_weights_and_log(tmp_path, warmup):
    cfg = load_config("smoke", [f"runs_dir={tmp_path}"])
    straight = create_run(cfg, "toy", {"a": 1}, {}, 0)
    model_a, values_a = _toy_training(straight, 10, warmup=warmup)
    broken = create_run(cfg, "toy", {"a": 2}, {}, 0)
    with pytest.raises(KeyboardInterrupt):
        _toy_training(broken, 10, fail_at=7, warmup=warmup)
    assert load_checkpoint(broken.checkpoint)["iteration"] == 6
    model_b, values_b = _toy_training(broken, 10, warmup=warmup)
    assert all(torch.equal(a, b) for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(),
                                                 strict=True))
    assert values_a == values_b
    assert (straight.dir / "log.csv").read_text() == (broken.dir / "log.csv").read_text()
    assert math.isfinite(values_a["loss"]) and "lr/all" in values_a and "grad_norm" in values_a


def test_a_corrupt_checkpoint_is_named_and_kept(tmp_path):
    cfg = load_config("smoke", [f"runs_dir={tmp_path}"])
    run = create_run(cfg, "toy", {}, {}, 0)
    run.checkpoint.parent.mkdir(parents=True)
    run.checkpoint.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(RunError, match="corrupt checkpoint") as err:
        _toy_training(run, 4)
    assert err.value.path == run.checkpoint and run.checkpoint.read_bytes().startswith(b"PK")
