"""The output contract every segmentation model of the kit honours (student, teacher, baselines).

Losses, the training engine and evaluation read only these fields, so any model that returns a
:class:`SegmentationOutput` can be trained, distilled from and evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SegmentationOutput:
    """Query-based instance predictions for a batch of ``B`` images.

    - ``class_logits`` ``[B, Q, C+1]``: per query, logits over the ``C`` classes and a last
      "no object" entry (for the teacher, Q = K boxes with their phrase scores).
    - ``mask_logits`` ``[B, Q, H', W']``: per query, mask logits covering exactly the input image
      extent ``[0, H) x [0, W)`` at a lower resolution (resize them to compare with targets).
    - ``features`` ``[B, D_enc, h, w]``: the encoder feature map the projection head reads (L_pxl).
    - ``aux``: earlier decoder layers' predictions for deep supervision, each a dict with
      ``class_logits`` and ``mask_logits`` shaped as above (empty when a model has none).
    - ``extras``: anything model-specific (e.g. the teacher's boxes and scores).
    """

    class_logits: torch.Tensor
    mask_logits: torch.Tensor
    features: torch.Tensor | None = None
    aux: list[dict[str, torch.Tensor]] = field(default_factory=list)
    extras: dict = field(default_factory=dict)

    @property
    def num_queries(self) -> int:
        return self.class_logits.shape[1]

    @property
    def num_classes(self) -> int:
        """C, the number of real classes (without "no object")."""
        return self.class_logits.shape[2] - 1
