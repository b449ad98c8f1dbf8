"""The teacher (spec section 5; DESIGN 4): Grounding DINO prompted with the class names, chained into SAM2 with
its boxes as prompts, as one module with the student's output contract.

``forward(images)``: the detector scores its queries against every phrase of the prompt; the K best boxes
(K = ``model.teacher.top_k``, 100) by box score become the teacher's "queries", with a class distribution
(phrase scores plus a no-object term, see :mod:`castlib.models.grounding`) as ``class_logits [B, K, C+1]`` and
SAM2's mask for each box as ``mask_logits [B, K, S/4, S/4]`` (SAM2 sees the image resized to S x S, so the
masks cover exactly the image extent). ``features`` are SAM2's image-encoder output ``[B, 256, S/16, S/16]``,
where the L_pxl projection heads sit. The paper's teacher is Grounding-DINO-L (MM-Grounding-DINO Swin-L, the
prototype's checkpoint) + SAM2.1-L, about 568M parameters.

Which parts train during adaptation is ``model.teacher.trainable`` (default: the detector's decoder and heads,
SAM2's mask decoder and SAM2's feature neck; the image backbones and the text encoder stay frozen). SAM2's three
extra mask heads, which serve ``multimask_output=True`` only, form a part of their own
(``segmenter.multimask_heads``): with one mask per box (pitfall S3) they never receive a gradient. L_pxl reaches
the teacher through SAM2's image-encoder features: the neck (``segmenter.neck``, the FPN that makes the features
both the projection heads and the mask decoder read) trains by default, so the contrastive loss calibrates what
the masks are decoded from; list ``segmenter.image_encoder`` to adapt the Hiera backbone too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torchvision.ops import box_convert
from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoTokenizer, Sam2Config, Sam2Model

from castlib.config import Config
from castlib.errors import ConfigError
from castlib.global_batch import global_normaliser
from castlib.models.base import SegmentationModel
from castlib.models.geometry import normalize
from castlib.models.grounding import (
    DetectionLoss,
    Prompt,
    class_distribution,
    decoder_predictions,
    detector_config,
    local_tokenizer,
    mask_boxes,
    prompt_chunks,
)
from castlib.models.hub import load_pretrained
from castlib.models.output import SegmentationOutput
from castlib.models.projection import ProjectionHeads
from castlib.models.segmenter import mask_loss, sam2_config, squash

TOKENIZER_DIR = "tokenizer"
MASK_CHUNK = 16  # box prompts SAM2's mask decoder takes at a time where it keeps no activations
DETECTOR_TYPES = ("grounding-dino", "mm-grounding-dino")


def detector_rows(out, rows: slice) -> SimpleNamespace:
    """The images ``rows`` of a detector pass: the outputs :class:`DetectionLoss` reads (final and earlier decoder
    layers' predictions, encoder proposals)."""
    return SimpleNamespace(
        logits=out.logits[rows], pred_boxes=out.pred_boxes[rows], enc_outputs_class=out.enc_outputs_class[rows],
        enc_outputs_coord_logits=out.enc_outputs_coord_logits[rows],
        auxiliary_outputs=[{k: v[rows] for k, v in layer.items()} for layer in out.auxiliary_outputs])


class Teacher(SegmentationModel):
    """Grounding DINO -> SAM2 with the output contract of the student (see the module docstring)."""

    parts = {
        "detector.backbone": ("detector.model.backbone.",),
        "detector.text_encoder": ("detector.model.text_backbone.", "detector.model.text_projection."),
        "detector.encoder": ("detector.model.input_proj_vision.", "detector.model.level_embed",
                             "detector.model.encoder."),
        "detector.decoder": ("detector.model.decoder.", "detector.model.query_position_embeddings."),
        "detector.heads": ("detector.bbox_embed.", "detector.class_embed.", "detector.model.enc_output.",
                           "detector.model.enc_output_norm.", "detector.model.encoder_output_bbox_embed.",
                           "detector.model.encoder_output_class_embed."),
        "segmenter.image_encoder": ("segmenter.vision_encoder.backbone.", "segmenter.no_memory_embedding"),
        "segmenter.neck": ("segmenter.vision_encoder.neck.",),
        "segmenter.prompt_encoder": ("segmenter.prompt_encoder.", "segmenter.shared_image_embedding."),
        "segmenter.multimask_heads": tuple(f"segmenter.mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3)),
        "segmenter.mask_decoder": ("segmenter.mask_decoder.",),
        "projection": ("projection.",),
    }
    encoder_parts = frozenset({"detector.backbone", "detector.text_encoder", "detector.encoder",
                               "segmenter.image_encoder", "segmenter.prompt_encoder"})

    def __init__(self, cfg: Config, num_classes: int, class_names: Sequence[str], pretrained: bool,
                 components: dict | None = None, checkpoint: Path | None = None):
        spec = cfg.model.teacher
        super().__init__("teacher", num_classes, cfg.model.to_dict(), class_names)
        self.tokenizer = self._tokenizer(spec, pretrained, checkpoint)
        self.detector = self._detector(spec, pretrained, components)
        self.detector.loss_function = decoder_predictions  # pitfalls G4/G5: DetectionLoss replaces the library loss
        self.segmenter = self._segmenter(spec, pretrained, components)
        config = self.detector.config
        if spec.top_k > config.num_queries:
            raise ConfigError(None, "model.teacher.top_k", f"{spec.top_k} is more than the detector's "
                                                          f"{config.num_queries} queries")
        self.top_k = spec.top_k
        self.activation_checkpointing = bool(spec.activation_checkpointing)
        self.prompts = [Prompt(self.tokenizer, self.class_names, chunk, config.max_text_len)
                        for chunk in prompt_chunks(self.tokenizer, self.class_names, config.max_text_len)]
        self.detection_loss = DetectionLoss(config)
        self.detector_resize = (spec.detector.short_side, spec.detector.max_size)
        self.loss_options = spec.loss
        self.image_size = self.segmenter.config.prompt_encoder_config.image_size
        self.projection = ProjectionHeads(self.segmenter.config.vision_config.fpn_hidden_size,
                                          cfg.model.projection.hidden_dim, cfg.model.projection.dim)
        self.set_trainable(spec.trainable, "model.teacher.trainable")

    # -- construction -----------------------------------------------------------------------------------------
    @staticmethod
    def _tokenizer(spec: Config, pretrained: bool, checkpoint: Path | None):
        if checkpoint is not None:
            return AutoTokenizer.from_pretrained(checkpoint / TOKENIZER_DIR)
        if pretrained:
            return load_pretrained(AutoTokenizer.from_pretrained, spec.detector.weights,
                                   what="teacher's tokenizer", key="model.teacher.detector.weights")
        return local_tokenizer()

    def _detector(self, spec: Config, pretrained: bool, components: dict | None):
        if components is not None:
            detector = AutoModelForZeroShotObjectDetection.from_config(AutoConfig.for_model(**components["detector"]))
        elif pretrained:
            detector = load_pretrained(AutoModelForZeroShotObjectDetection.from_pretrained, spec.detector.weights,
                                       what="teacher's detector", key="model.teacher.detector.weights")
        else:
            detector = AutoModelForZeroShotObjectDetection.from_config(detector_config(spec.detector,
                                                                                       len(self.tokenizer)))
        if detector.config.model_type not in DETECTOR_TYPES:
            raise ConfigError(None, "model.teacher.detector", f"expected a Grounding DINO ({', '.join(DETECTOR_TYPES)})"
                                                              f", got {detector.config.model_type}")
        return detector

    @staticmethod
    def _segmenter(spec: Config, pretrained: bool, components: dict | None) -> Sam2Model:
        if components is not None:
            segmenter = Sam2Model(Sam2Config.from_dict(components["segmenter"]))
        elif not pretrained:
            segmenter = Sam2Model(sam2_config(spec.segmenter))
        else:
            segmenter = load_pretrained(Sam2Model.from_pretrained, spec.segmenter.weights,
                                        what="teacher's segmenter", key="model.teacher.segmenter.weights")
            size = segmenter.config.prompt_encoder_config.image_size
            if size != spec.segmenter.image_size:
                raise ConfigError(None, "model.teacher.segmenter.image_size",
                                  f"the weights '{spec.segmenter.weights}' take {size} x {size} images, "
                                  f"the config says {spec.segmenter.image_size}")
        # Pitfall S3: in eval mode SAM2 swaps an unstable single mask for the best of its three multimask heads,
        # which adaptation never trains; the kit's one mask per box is the single-mask token's unless asked.
        dynamic = bool(spec.segmenter.dynamic_multimask)
        segmenter.mask_decoder.dynamic_multimask_via_stability = dynamic
        segmenter.config.mask_decoder_config.dynamic_multimask_via_stability = dynamic
        return segmenter

    def component_configs(self) -> dict[str, dict]:
        return {"detector": self.detector.config.to_dict(), "segmenter": self.segmenter.config.to_dict()}

    def save_extra(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(directory / TOKENIZER_DIR)

    # -- forward ----------------------------------------------------------------------------------------------
    def _detector_input(self, x: torch.Tensor) -> torch.Tensor:
        """Resize for the detector (``short_side`` / ``max_size``, as Grounding DINO's processor); boxes are
        predicted in normalised coordinates, so they need no mapping back."""
        short_side, max_size = self.detector_resize
        height, width = x.shape[-2:]
        scale = short_side / min(height, width) if short_side else 1.0
        if max_size:
            scale = min(scale, max_size / max(height, width))
        if scale == 1.0:
            return x
        size = (round(height * scale), round(width * scale))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)

    def _run_detector(self, pixel_values: torch.Tensor, prompt: Prompt, labels: list[dict] | None = None):
        ids = prompt.input_ids.to(pixel_values.device)[None].expand(len(pixel_values), -1)
        mask = torch.ones_like(ids)
        return self.detector(pixel_values=pixel_values, input_ids=ids, attention_mask=mask, labels=labels), mask

    def _chunk_labels(self, prompt: Prompt, targets: list[dict], boxes: list[torch.Tensor],
                      device: torch.device) -> list[dict]:
        """The detector's labels on one prompt chunk: per image the phrase index (``class_labels``) and box of
        each instance whose class is in the chunk."""
        position = torch.full((self.num_classes,), -1, dtype=torch.long, device=device)
        position[prompt.classes] = torch.arange(len(prompt.classes), device=device)
        return [{"class_labels": position[t["labels"]][position[t["labels"]] >= 0],
                 "boxes": b[position[t["labels"]] >= 0]} for t, b in zip(targets, boxes, strict=True)]

    def _detect(self, x: torch.Tensor, targets: list[dict] | None = None, boxes: list[torch.Tensor] | None = None):
        """One detector pass per prompt chunk over the batch ``x``; with ``targets`` (and their ``boxes``) each pass
        also gets the chunk's labels, for :class:`DetectionLoss`. Returns phrase scores ``p``, ``1 - p`` ``[B, N, C]``
        and boxes ``[B, N, 4]`` of every query of every chunk (a query scores 0 on classes outside its chunk), and
        per chunk ``(prompt, output, attention mask, labels)``."""
        pixel_values = self._detector_input(x)
        ps, qs, pred_boxes, passes = [], [], [], []
        for prompt in self.prompts:
            labels = None if targets is None else self._chunk_labels(prompt, targets, boxes, x.device)
            out, mask = self._run_detector(pixel_values, prompt, labels)
            passes.append((prompt, out, mask, labels))
            p_chunk, q_chunk = prompt.phrase_probs(out.logits)
            p = p_chunk.new_zeros(*p_chunk.shape[:2], self.num_classes)
            q = p_chunk.new_ones(*p_chunk.shape[:2], self.num_classes)
            p[..., prompt.classes], q[..., prompt.classes] = p_chunk, q_chunk
            ps.append(p), qs.append(q), pred_boxes.append(out.pred_boxes)
        return torch.cat(ps, 1), torch.cat(qs, 1), torch.cat(pred_boxes, 1), passes

    def _top_k(self, p: torch.Tensor, q: torch.Tensor, boxes: torch.Tensor):
        """The K best queries by box score: ``class_logits [B, K, C+1]``, ``scores [B, K]`` (descending), ``boxes``."""
        class_logits, scores = class_distribution(p, q)
        scores, top = scores.topk(self.top_k, dim=1)
        class_logits = class_logits.gather(1, top[..., None].expand(-1, -1, class_logits.shape[-1]))
        return class_logits, scores, boxes.gather(1, top[..., None].expand(-1, -1, 4))

    def _image_embeddings(self, x: torch.Tensor) -> list[torch.Tensor]:
        """SAM2's image embeddings of the S x S image, made as ``Sam2Model.forward`` makes them from pixels (the
        first two FPN levels through the mask decoder's ``conv_s0`` / ``conv_s1``, the no-memory embedding added to
        the last, ``[B, C, S/16, S/16]``): one image-encoder pass that every box prompt's mask decoding reuses."""
        segmenter = self.segmenter
        maps = segmenter.get_image_features(squash(x, self.image_size), return_dict=True).fpn_hidden_states
        maps[-1] = maps[-1] + segmenter.no_memory_embedding
        return [m.permute(1, 2, 0).view(len(x), -1, *size) for m, size in zip(maps, segmenter.backbone_feature_sizes,
                                                                              strict=True)]

    def _decode_masks(self, embeddings: list[torch.Tensor], boxes: torch.Tensor):
        """SAM2's mask decoder on image ``embeddings`` with normalised (cx, cy, w, h) ``boxes`` ``[B, N, 4]`` as
        prompts, scaled per axis to the S x S image (pitfall S1), one mask per box (S3): ``pred_masks
        [B, N, 1, S/4, S/4]``, ``iou_scores`` and ``object_score_logits`` ``[B, N, 1]``.

        Each prompt is decoded on its own, so the prompts are split into chunks of ``MASK_CHUNK`` where no
        activations are kept: without gradient (the K predicted boxes, inference), and with
        ``model.teacher.activation_checkpointing``, where each chunk is recomputed in the backward pass
        (``torch.utils.checkpoint``): the peak holds one chunk's activations, not every prompt's."""
        prompts = (box_convert(boxes, "cxcywh", "xyxy").clamp(0, 1) * self.image_size).detach()
        grad = torch.is_grad_enabled()
        if grad and not self.activation_checkpointing:
            return self.segmenter(image_embeddings=embeddings, input_boxes=prompts, multimask_output=False)
        outs = [checkpoint(self.segmenter, image_embeddings=embeddings, input_boxes=chunk, multimask_output=False,
                           use_reentrant=False) if grad else
                self.segmenter(image_embeddings=embeddings, input_boxes=chunk, multimask_output=False)
                for chunk in prompts.split(MASK_CHUNK, dim=1)]
        return SimpleNamespace(**{key: torch.cat([getattr(o, key) for o in outs], 1)
                                  for key in ("pred_masks", "iou_scores", "object_score_logits")})

    def masks_for_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """SAM2's mask logits ``[B, N, S/4, S/4]`` (covering the image extent) for given normalised (cx, cy, w, h)
        ``boxes`` ``[B, N, 4]`` on ``images`` in ``[0, 1]``: the chain with the detector's boxes replaced
        (:func:`castlib.eval.ceiling.prompted_ceiling` prompts with the ground truth's)."""
        return self._decode_masks(self._image_embeddings(normalize(images)), boxes).pred_masks[:, :, 0]

    @staticmethod
    def _output(class_logits: torch.Tensor, scores: torch.Tensor, boxes: torch.Tensor, masks,
                embeddings: list[torch.Tensor]) -> SegmentationOutput:
        return SegmentationOutput(
            class_logits=class_logits,
            mask_logits=masks.pred_masks[:, :, 0],
            features=embeddings[-1],
            extras={"boxes": boxes, "scores": scores, "iou_scores": masks.iou_scores[..., 0],
                    "object_score_logits": masks.object_score_logits[..., 0]},
        )

    def forward(self, images: torch.Tensor) -> SegmentationOutput:
        x = normalize(images)
        p, q, boxes, _ = self._detect(x)
        class_logits, scores, boxes = self._top_k(p, q, boxes)
        embeddings = self._image_embeddings(x)
        return self._output(class_logits, scores, boxes, self._decode_masks(embeddings, boxes), embeddings)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """SAM2's image-encoder features ``[B, C, S/16, S/16]`` alone (what ``forward`` returns as ``features``)."""
        return self._image_embeddings(normalize(images))[-1]

    # -- pseudo-labels ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_pseudo_labels(self, images: torch.Tensor, threshold: float = 0.3,
                              max_instances: int = 100) -> list[dict[str, torch.Tensor]]:
        """Pseudo-labels (spec section 5.2; supplementary Table 2's threshold 0.3): per image, the boxes scoring
        above ``threshold`` (at most ``max_instances``, best first), each with its best class and SAM2's mask
        binarised at logit 0, painted in score order without overlap (a pixel belongs to the best-scoring mask
        that covers it; masks left empty are dropped). Returns per image ``masks`` Bool[N, H, W], ``labels``
        Long[N], ``scores`` Float[N] (descending) and ``boxes`` (cx, cy, w, h) normalised. Runs in eval mode."""
        was_training = self.training
        self.eval()
        try:
            out = self(images)
        finally:
            self.train(was_training)
        height, width = images.shape[-2:]
        results = []
        for b in range(len(images)):
            keep = out.extras["scores"][b] > threshold  # scores are sorted, so the cap keeps the best
            keep &= torch.arange(len(keep), device=keep.device) < max_instances
            logits = out.mask_logits[b, keep]
            masks = logits.new_zeros(0, height, width, dtype=torch.bool) if not len(logits) else F.interpolate(
                logits[None], size=(height, width), mode="bilinear", align_corners=False)[0] > 0
            claimed = masks.new_zeros(height, width)
            for k in range(len(masks)):
                masks[k] &= ~claimed
                claimed |= masks[k]
            nonempty = masks.flatten(1).any(-1)
            results.append({
                "masks": masks[nonempty],
                "labels": out.class_logits[b, keep, :-1].argmax(-1)[nonempty],
                "scores": out.extras["scores"][b, keep][nonempty],
                "boxes": out.extras["boxes"][b, keep][nonempty],
            })
        return results

    # -- adaptation loss --------------------------------------------------------------------------------------
    def training_step(self, images: torch.Tensor, targets_per_part: Sequence[list[dict[str, torch.Tensor]]],
                      predict: bool = True) -> tuple[list[dict[str, torch.Tensor]], SegmentationOutput | None]:
        """One adaptation step's teacher passes over the images of every part of a batch (``images`` are the parts'
        images concatenated; ``targets_per_part``: per part, per image ``masks`` Bool[N, H, W] and ``labels``
        Long[N]), each model run once (issue 30):

        - the detector once per prompt chunk with every image's labels: its output gives the detection loss and
          the predictions (phrase scores, boxes) whose K best become the teacher's queries;
        - SAM2's image encoder once: its embeddings feed the mask loss prompted with the ground-truth boxes (with
          gradient), the K predicted boxes' masks (without gradient: L_pxl's y is detached) and ``features``.

        Returns per part the terms of :meth:`supervised_loss` (each part normalised on its own: L_sup and
        L_semi), and with ``predict`` the :class:`SegmentationOutput` of :meth:`forward` with ``class_logits`` and
        ``mask_logits`` detached and ``features`` carrying their gradient (else None)."""
        x = normalize(images)
        parts = [[{"masks": t["masks"][keep], "labels": t["labels"][keep]}
                  for t in part for keep in [t["masks"].flatten(1).any(-1)]] for part in targets_per_part]
        targets = [t for part in parts for t in part]
        if len(targets) != len(x):
            raise ValueError(f"{len(targets)} targets for {len(x)} images")
        boxes = [mask_boxes(t["masks"]) for t in targets]
        p, q, pred_boxes, passes = self._detect(x, targets, boxes)
        embeddings = self._image_embeddings(x)
        losses, start = [], 0
        for part in parts:
            rows = slice(start, start + len(part))
            terms = {"loss_detection": sum((self.detection_loss(detector_rows(out, rows), prompt, mask[rows],
                                                                labels[rows])
                                            for prompt, out, mask, labels in passes), x.new_zeros(()))}
            terms |= self._mask_loss([e[rows] for e in embeddings], part, boxes[rows])
            w = self.loss_options
            terms["loss"] = (terms["loss_detection"] + w.mask_bce * terms["loss_mask_bce"]
                             + w.mask_dice * terms["loss_mask_dice"] + w.iou * terms["loss_iou"]
                             + w.object_score * terms["loss_object"])
            losses.append(terms)
            start = rows.stop
        if not predict:
            return losses, None
        with torch.no_grad():
            class_logits, scores, top_boxes = self._top_k(p, q, pred_boxes)
            masks = self._decode_masks(embeddings, top_boxes)
        return losses, self._output(class_logits, scores, top_boxes, masks, embeddings)

    def supervised_loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """L_sup of teacher adaptation: Grounding DINO's detection loss with ground-truth boxes taken from the masks,
        plus SAM2's mask loss with those boxes as prompts (BCE and dice weighted 5 as supplementary Table 2's mask
        weight; IoU-prediction MSE and object score 1; at most ``loss.max_instances`` random instances per image).
        ``targets``: per image ``masks`` Bool[N, H, W] and ``labels`` Long[N]. Returns the terms and ``loss``
        (:meth:`training_step` on one part, without predictions)."""
        return self.training_step(images, [targets], predict=False)[0][0]

    def _mask_loss(self, embeddings: list[torch.Tensor], targets: list[dict],
                   boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        cap = self.loss_options.max_instances
        chosen = [torch.randperm(len(b), device=b.device)[:cap].sort().values for b in boxes]
        count = max((len(c) for c in chosen), default=0)
        if count == 0:
            global_normaliser(embeddings[-1].new_zeros(()))  # the count mask_loss takes on the other processes
            zero = embeddings[-1].new_zeros((), dtype=torch.float32)
            return {"loss_mask_bce": zero, "loss_mask_dice": zero, "loss_iou": zero, "loss_object": zero}
        images, device = len(embeddings[-1]), embeddings[-1].device
        prompts = torch.tensor([0.5, 0.5, 1.0, 1.0], device=device).repeat(images, count, 1)  # padding: whole image
        valid = torch.zeros(images, count, dtype=torch.bool, device=device)
        for i, (b, c) in enumerate(zip(boxes, chosen, strict=True)):
            prompts[i, :len(c)], valid[i, :len(c)] = b[c], True
        out = self._decode_masks(embeddings, prompts)
        size = out.pred_masks.shape[-2:]
        gt = torch.cat([F.interpolate(t["masks"][c][None].float(), size=size, mode="bilinear", align_corners=False,
                                      antialias=True)[0] > 0.5
                        for t, c in zip(targets, chosen, strict=True) if len(c)])  # an image may have none
        return mask_loss(out.pred_masks[:, :, 0][valid], out.iou_scores[..., 0][valid],
                         out.object_score_logits[..., 0][valid], gt)
