"""The memory bank of the ``memory_bank`` sampling scope (supplementary Table 7, section E.4).

A FIFO of the newest ``size`` (z, y~) pixel pairs from past batches: their weak embeddings and
pseudo-probability embeddings, detached. With ``scope="memory_bank"`` the bank's entries join the
batch's pixels as candidate negatives; :func:`castlib.losses.pixel_contrastive_loss` pushes the
batch's pixels after computing the loss, so a batch never meets itself in the bank.
"""

from __future__ import annotations

import torch


class MemoryBank:
    """A ring buffer of ``size`` (z ``[D]``, y~ ``[E]``) pairs; the oldest entries are overwritten first.

    Entries are indexed by their slot ``0 .. len(bank) - 1``; in the loss's ``negatives`` the bank
    entry in slot ``j`` is candidate ``B * N + j``. Storage is allocated on the first :meth:`push`,
    on the device and in the dtype of the pushed embeddings. ``size``: ``loss.contrastive.bank_size``.
    """

    def __init__(self, size: int):
        if size < 1:
            raise ValueError(f"memory bank size must be at least 1, got {size}")
        self.size = size
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
    def push(self, z: torch.Tensor, y: torch.Tensor) -> None:
        """Add ``z [n, D]`` and ``y [n, E]`` (row i the same pixel); keep only the newest ``size`` entries."""
        if z.dim() != 2 or y.dim() != 2 or z.shape[0] != y.shape[0]:
            raise ValueError(f"expected z [n, D] and y [n, E] with the same n, "
                             f"got {tuple(z.shape)} and {tuple(y.shape)}")
        if self._z is None:
            self._z = z.new_zeros(self.size, z.shape[1])
            self._y = y.new_zeros(self.size, y.shape[1])
        elif z.shape[1] != self._z.shape[1] or y.shape[1] != self._y.shape[1]:
            raise ValueError(f"the bank holds z of dim {self._z.shape[1]} and y of dim {self._y.shape[1]}, "
                             f"got {z.shape[1]} and {y.shape[1]} (was the embedding variant changed?)")
        skipped = max(0, z.shape[0] - self.size)  # older than the newest `size` of this very push
        z, y = z[skipped:], y[skipped:]
        slots = (self._next + skipped + torch.arange(z.shape[0], device=self._z.device)) % self.size
        self._z[slots] = z.to(self._z)
        self._y[slots] = y.to(self._y)
        self._next = (self._next + skipped + z.shape[0]) % self.size
        self._count = min(self._count + skipped + z.shape[0], self.size)

    def state_dict(self) -> dict:
        """Everything needed to resume training with the same bank."""
        return {"size": self.size, "z": self._z, "y": self._y, "next": self._next, "count": self._count}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size:
            raise ValueError(f"memory bank state holds {state['size']} entries, this bank {self.size}")
        self._z, self._y = state["z"], state["y"]
        self._next, self._count = int(state["next"]), int(state["count"])
