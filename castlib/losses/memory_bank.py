"""The memory bank of the ``memory_bank`` sampling scope (supplementary Table 7, section E.4).

A FIFO of ``size`` (z, y~) pixel pairs from past batches: their weak embeddings and
pseudo-probability embeddings, detached. E.4 means a bank of past pixel embeddings spanning many
batches, so each batch pushes a random subset of ``ceil(size / batches)`` of its pixels (drawn from
all its images alike) and the bank then holds the last ``batches`` batches; pushing every pixel
would fill it from the newest batch alone (21,608 pixels a step at the paper crop). With
``scope="memory_bank"`` the bank's entries join the batch's pixels as candidate negatives;
:func:`castlib.losses.pixel_contrastive_loss` pushes the batch's pixels after computing the loss,
so a batch never meets itself in the bank.
"""

from __future__ import annotations

import math

import torch


class MemoryBank:
    """A ring buffer of ``size`` (z ``[D]``, y~ ``[E]``) pairs; the oldest entries are overwritten first.

    Entries are indexed by their slot ``0 .. len(bank) - 1``; in the loss's ``negatives`` the bank
    entry in slot ``j`` is candidate ``B * N + j``. Storage is allocated on the first :meth:`push`,
    on the device and in the dtype of the pushed embeddings. ``size``: ``loss.contrastive.bank_size``;
    ``batches``: ``loss.contrastive.bank_push``, the number of past batches the bank spans.
    """

    def __init__(self, size: int, batches: int = 1):
        if size < 1:
            raise ValueError(f"memory bank size must be at least 1, got {size}")
        if not 1 <= batches <= size:
            raise ValueError(f"memory bank must span 1 to size={size} batches, got {batches}")
        self.size = size
        self.per_push = math.ceil(size / batches)
        self._z: torch.Tensor | None = None
        self._y: torch.Tensor | None = None
        self._next = 0  # the slot the next entry goes to
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def z(self) -> torch.Tensor | None:
        """Stored weak embeddings ``[len, D]`` by slot (None before the first push)."""
        return None if self._z is None else self._z[: self._count]

    @property
    def y(self) -> torch.Tensor | None:
        """Stored pseudo-probability embeddings ``[len, E]`` by slot (None before the first push)."""
        return None if self._y is None else self._y[: self._count]

    @torch.no_grad()
    def push(self, z: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Add a random subset of ``per_push`` rows of ``z [n, D]`` and ``y [n, E]`` (row i the same pixel;
        all rows when n is at most ``per_push``), drawn with ``generator``, over the oldest entries."""
        if z.dim() != 2 or y.dim() != 2 or z.shape[0] != y.shape[0]:
            raise ValueError(f"expected z [n, D] and y [n, E] with the same n, "
                             f"got {tuple(z.shape)} and {tuple(y.shape)}")
        if self._z is None:
            self._z = z.new_zeros(self.size, z.shape[1])
            self._y = y.new_zeros(self.size, y.shape[1])
        elif z.shape[1] != self._z.shape[1] or y.shape[1] != self._y.shape[1]:
            raise ValueError(f"the bank holds z of dim {self._z.shape[1]} and y of dim {self._y.shape[1]}, "
                             f"got {z.shape[1]} and {y.shape[1]} (was the embedding variant changed?)")
        if z.shape[0] > self.per_push:
            rows = torch.randperm(z.shape[0], generator=generator, device=z.device)[: self.per_push]
            z, y = z[rows], y[rows]
        slots = (self._next + torch.arange(z.shape[0], device=self._z.device)) % self.size
        self._z[slots] = z.to(self._z)
        self._y[slots] = y.to(self._y)
        self._next = (self._next + z.shape[0]) % self.size
        self._count = min(self._count + z.shape[0], self.size)

    def state_dict(self) -> dict:
        """Everything needed to resume training with the same bank."""
        return {"size": self.size, "z": self._z, "y": self._y, "next": self._next, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"memory bank state holds {state['size']} entries, this bank {self.size}")
        self._z, self._y = state["z"], state["y"]
        self._next, self._count = int(state["next"]), int(state["count"])
