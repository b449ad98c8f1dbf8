"""Training the paper tables' runs with several worker processes (``python -m castlib table 3 6 7 --jobs 2``).

The tables (:mod:`castlib.report.paper_tables`) are cut into (table, seed) units; each worker process trains the
runs one unit still needs, on a GPU of its own or a share of the CPU's threads, and the registry's locks keep a run
from being trained twice. The tables are then built from the runs as with ``--jobs 1``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from castlib.config import Config
from castlib.engine.lifecycle import check_data
from castlib.engine.plan import planning
from castlib.errors import CastError
from castlib.report.paper_tables import build_table, table_config


def _one_seed(cfg: Config, seed: int) -> Config:
    return cfg.with_changes({"seeds": [seed]})


def table_units(cfg: Config, numbers: Sequence[int]) -> list[tuple[int, int]]:
    """The (table, seed) pairs whose runs make Tables ``numbers``, seed by seed (each table over the seeds
    :func:`table_config` gives it)."""
    seeds = {number: table_config(cfg, number).seeds for number in numbers}
    return [(number, seed) for seed in sorted({s for chosen in seeds.values() for s in chosen})
            for number in numbers if seed in seeds[number]]


def missing_runs(cfg: Config, number: int, seed: int) -> set[str]:
    """Ids of the runs Table ``number`` still needs for ``seed`` (planning mode: nothing is trained)."""
    with planning() as plan:
        build_table(_one_seed(cfg, seed), number, train=False)
    return {run_id for run_id, planned in plan.runs.items() if not planned.complete}


def _train_unit(cfg: Config, number: int, seed: int, threads: int) -> tuple[int, int]:
    """A worker process: train what Table ``number`` needs for ``seed`` with ``threads`` CPU threads."""
    import torch

    torch.set_num_threads(threads)
    try:
        build_table(_one_seed(cfg, seed), number, train=True)
    except CastError as e:  # its subclasses' own arguments do not survive the pickling back to the parent
        raise CastError(f"{e} (Table {number}, seed {seed})") from None
    return number, seed


def _init_worker(parent_pid: int, gpus, poll_s: float = 1.0) -> None:
    """A worker's initializer: take a GPU of its own from the queue ``gpus`` (``CUDA_VISIBLE_DEVICES``, set
    before torch touches CUDA; None on the CPU), and end the worker when its parent is gone. A parent killed by
    SIGTERM or SIGKILL (``kill``, ``timeout``, a scheduler) runs no clean-up, and its spawned workers would keep
    training their (table, seed) pair to the end, unseen; this watches the parent from a daemon thread and ends
    the worker within ``poll_s``. The run it was training resumes from its last checkpoint, its lock gone with it."""
    import threading

    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get()

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()][:torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpus(cfg: Config, jobs: int) -> list[str] | None:
    """One GPU per worker when the config trains on CUDA (``device`` cuda, or auto with CUDA present), else None
    (the CPU: the workers share its threads). More workers than visible GPUs is an error."""
    device = str(cfg.device)
    gpus = visible_gpus() if device in ("auto", "cuda") or device.startswith("cuda") else []
    if not gpus:
        return None
    if jobs > len(gpus):
        raise CastError(f"--jobs {jobs}: only {len(gpus)} GPU(s) are visible ({', '.join(gpus)}); each worker "
                        f"trains on a GPU of its own, so give at most --jobs {len(gpus)}, or train one run on "
                        "several GPUs with torchrun (README)")
    return gpus[:jobs]


def worker_pool(jobs: int, gpus: Sequence[str] | None = None):
    """``jobs`` spawned worker processes, each on its own GPU of ``gpus`` (None: the CPU), that end with the
    process that made them (:func:`_init_worker`)."""
    import concurrent.futures as cf
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = None
    if gpus is not None:
        queue = context.Queue()
        for gpu in gpus:
            queue.put(gpu)
    return cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(os.getpid(), queue))


def train_tables(cfg: Config, numbers: Sequence[int], jobs: int) -> None:
    """Train every run Tables ``numbers`` need with ``jobs`` worker processes, each on a GPU of its own
    (:func:`worker_gpus`) or, on the CPU, given an equal share of its threads. A worker takes one (table, seed)
    pair (:func:`table_units`) at a time, and only a pair none of whose missing runs another worker is training,
    so no worker waits on another's run; the registry's locks
    (:func:`castlib.engine.runs.claim`) keep a run from being trained twice all the same. A worker's error
    ends the command once the other workers' current pairs finish (their runs are kept); the command killed, its
    workers end with it (:func:`worker_pool`) and a rerun resumes their runs."""
    import concurrent.futures as cf

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise CastError(f"--jobs {jobs} under torchrun: give the GPUs either to the runs (torchrun, --jobs 1) or to "
                        "the workers (--jobs J without torchrun), not both")
    gpus = worker_gpus(cfg, jobs)
    check_data(cfg, "knowledge_transfer")  # the data ready before planning reads its digests
    pending, running = table_units(cfg, numbers), {}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with worker_pool(jobs, gpus) as pool:
        while pending or running:
            busy = set().union(*running.values())
            for unit in list(pending):
                if len(running) >= jobs:
                    break
                needs = missing_runs(cfg, *unit)
                if not needs:
                    pending.remove(unit)
                elif not needs & busy:
                    pending.remove(unit)
                    busy |= needs
                    print(f"Table {unit[0]} seed {unit[1]}: training {len(needs)} runs", flush=True)
                    running[pool.submit(_train_unit, cfg, *unit, threads)] = needs
            if running:
                finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for future in finished:
                    del running[future]
                    number, seed = future.result()
                    print(f"Table {number} seed {seed}: its runs are complete", flush=True)
