"""Planning mode: which runs a set of tables needs, before any compute (``python -m castlib plan``).

Inside ``with planning() as plan:`` the stage functions of :mod:`castlib.engine.stages` compute their run
ids (a hash of config, input ids and seed, known without training), record them in ``plan`` and return
the run, complete or not, without preparing data or training anything. The table builders call the same
stage functions in both modes, so the plan of a table is the table's own wiring, never a copy of it. What the
runs cost: :mod:`castlib.report.costs`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

from castlib.config import Config
from castlib.engine.declarations import Stage, declared
from castlib.engine.runs import Run


def timing_key(cfg: Config, stage: str) -> str:
    """What a step time of ``stage`` is kept under (:meth:`castlib.engine.declarations.Stage.timing_key`);
    ``cfg`` is the stage's own config (a run's ``config.yaml``)."""
    return declared(stage).timing_key(cfg)


@dataclass
class PlannedRun:
    """One run a plan needs: its handle, stage, seed, training iterations, the key of its step time
    (:func:`timing_key`), who asked for it, and the config and options it was asked with (what it costs)."""

    run: Run
    stage: str
    seed: int
    iterations: int
    timing: str
    needed_by: list[str] = field(default_factory=list)
    config: Config | None = None
    options: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.run.complete

    @property
    def shared(self) -> bool:
        return len(self.needed_by) > 1


@dataclass
class Plan:
    """The runs requested while planning, in the order first requested; ``label`` names the requester."""

    runs: dict[str, PlannedRun] = field(default_factory=dict)
    label: str = ""

    def record(self, cfg: Config, run: Run, stage: Stage, seed: int, options: dict | None = None) -> None:
        """Record ``run`` of the declared ``stage`` (its iterations and step-time key from ``cfg``)."""
        planned = self.runs.get(run.id)
        if planned is None:
            planned = self.runs[run.id] = PlannedRun(run, stage.name, seed, stage.iterations(cfg),
                                                     stage.timing_key(cfg), config=copy.deepcopy(cfg),
                                                     options=dict(options or {}))
        if self.label and self.label not in planned.needed_by:
            planned.needed_by.append(self.label)

    @contextlib.contextmanager
    def requested_by(self, label: str) -> Iterator[Plan]:
        """Attribute the runs recorded inside the block to ``label`` (e.g. ``"Table 3"``)."""
        previous, self.label = self.label, label
        try:
            yield self
        finally:
            self.label = previous


_ACTIVE: contextvars.ContextVar[Plan | None] = contextvars.ContextVar("castlib_plan", default=None)


def current_plan() -> Plan | None:
    """The plan being recorded, or ``None`` when the stages train for real."""
    return _ACTIVE.get()


@contextlib.contextmanager
def planning() -> Iterator[Plan]:
    """Planning mode for the block; nested blocks share the outer plan."""
    outer = _ACTIVE.get()
    if outer is not None:
        yield outer
        return
    token = _ACTIVE.set(Plan())
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)
