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

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert
from transformers import AutoConfig, AutoModelForZeroShotObjectDetection, AutoTokenizer, Sam2Config, Sam2Model

from castlib.config import Config
from castlib.engine.distributed import global_normaliser
from castlib.errors import ConfigError
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
DETECTOR_TYPES = ("grounding-dino", "mm-grounding-dino")


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

    def _detect(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Phrase scores ``p``, ``1 - p`` ``[B, N, C]`` and boxes ``[B, N, 4]`` of every query of every prompt chunk
        (a query scores 0 on classes outside its chunk)."""
        pixel_values = self._detector_input(x)
        ps, qs, boxes = [], [], []
        for prompt in self.prompts:
            out, _ = self._run_detector(pixel_values, prompt)
            p_chunk, q_chunk = prompt.phrase_probs(out.logits)
            p = p_chunk.new_zeros(*p_chunk.shape[:2], self.num_classes)
            q = p_chunk.new_ones(*p_chunk.shape[:2], self.num_classes)
            p[..., prompt.classes], q[..., prompt.classes] = p_chunk, q_chunk
            ps.append(p), qs.append(q), boxes.append(out.pred_boxes)
        return torch.cat(ps, 1), torch.cat(qs, 1), torch.cat(boxes, 1)

    def _segment(self, x: torch.Tensor, boxes: torch.Tensor):
        """SAM2 on the S x S image with normalised (cx, cy, w, h) ``boxes`` ``[B, N, 4]`` as prompts."""
        prompts = box_convert(boxes, "cxcywh", "xyxy").clamp(0, 1) * self.image_size
        return self.segmenter(pixel_values=squash(x, self.image_size), input_boxes=prompts.detach(),
                              multimask_output=False)

    def masks_for_boxes(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """SAM2's mask logits ``[B, N, S/4, S/4]`` (covering the image extent) for given normalised (cx, cy, w, h)
        ``boxes`` ``[B, N, 4]`` on ``images`` in ``[0, 1]``: the chain with the detector's boxes replaced
        (:func:`castlib.eval.ceiling.prompted_ceiling` prompts with the ground truth's)."""
        return self._segment(normalize(images), boxes).pred_masks[:, :, 0]

    def forward(self, images: torch.Tensor) -> SegmentationOutput:
        x = normalize(images)
        p, q, boxes = self._detect(x)
        class_logits, scores = class_distribution(p, q)
        scores, top = scores.topk(self.top_k, dim=1)
        class_logits = class_logits.gather(1, top[..., None].expand(-1, -1, class_logits.shape[-1]))
        boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
        out = self._segment(x, boxes)
        return SegmentationOutput(
            class_logits=class_logits,
            mask_logits=out.pred_masks[:, :, 0],
            features=out.image_embeddings[-1],
            extras={"boxes": boxes, "scores": scores, "iou_scores": out.iou_scores[..., 0],
                    "object_score_logits": out.object_score_logits[..., 0]},
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """SAM2's image-encoder features ``[B, C, S/16, S/16]`` alone (what ``forward`` returns as ``features``)."""
        maps = self.segmenter.vision_encoder(squash(normalize(images), self.image_size)).fpn_hidden_states
        return maps[-1] + self.segmenter.no_memory_embedding.view(1, -1, 1, 1)

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
    def supervised_loss(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """L_sup of teacher adaptation: Grounding DINO's detection loss with ground-truth boxes taken from the masks,
        plus SAM2's mask loss with those boxes as prompts (BCE and dice weighted 5 as supplementary Table 2's mask
        weight; IoU-prediction MSE and object score 1; at most ``loss.max_instances`` random instances per image).
        ``targets``: per image ``masks`` Bool[N, H, W] and ``labels`` Long[N]. Returns the terms and ``loss``."""
        x = normalize(images)
        targets = [{"masks": t["masks"][keep], "labels": t["labels"][keep]}
                   for t in targets for keep in [t["masks"].flatten(1).any(-1)]]
        boxes = [mask_boxes(t["masks"]) for t in targets]
        losses = {"loss_detection": self._detection_loss(x, targets, boxes)}
        losses |= self._mask_loss(x, targets, boxes)
        w = self.loss_options
        losses["loss"] = (losses["loss_detection"] + w.mask_bce * losses["loss_mask_bce"]
                          + w.mask_dice * losses["loss_mask_dice"] + w.iou * losses["loss_iou"]
                          + w.object_score * losses["loss_object"])
        return losses

    def _detection_loss(self, x: torch.Tensor, targets: list[dict], boxes: list[torch.Tensor]) -> torch.Tensor:
        pixel_values = self._detector_input(x)
        total = x.new_zeros(())
        for prompt in self.prompts:
            position = torch.full((self.num_classes,), -1, dtype=torch.long, device=x.device)
            position[prompt.classes] = torch.arange(len(prompt.classes), device=x.device)
            labels = [{"class_labels": position[t["labels"]][position[t["labels"]] >= 0],
                       "boxes": b[position[t["labels"]] >= 0]} for t, b in zip(targets, boxes, strict=True)]
            out, mask = self._run_detector(pixel_values, prompt, labels)
            total = total + self.detection_loss(out, prompt, mask, labels)
        return total

    def _mask_loss(self, x: torch.Tensor, targets: list[dict], boxes: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        cap = self.loss_options.max_instances
        chosen = [torch.randperm(len(b), device=b.device)[:cap].sort().values for b in boxes]
        count = max(len(c) for c in chosen)
        if count == 0:
            global_normaliser(x.new_zeros(()))  # the count mask_loss takes on the other processes: 0 from here
            zero = x.new_zeros(())
            return {"loss_mask_bce": zero, "loss_mask_dice": zero, "loss_iou": zero, "loss_object": zero}
        prompts = x.new_tensor([0.5, 0.5, 1.0, 1.0]).repeat(len(x), count, 1)  # padding: whole-image boxes
        valid = torch.zeros(len(x), count, dtype=torch.bool, device=x.device)
        for i, (b, c) in enumerate(zip(boxes, chosen, strict=True)):
            prompts[i, :len(c)], valid[i, :len(c)] = b[c], True
        out = self._segment(x, prompts)
        size = out.pred_masks.shape[-2:]
        gt = torch.cat([F.interpolate(t["masks"][c][None].float(), size=size, mode="bilinear", align_corners=False,
                                      antialias=True)[0] > 0.5
                        for t, c in zip(targets, chosen, strict=True) if len(c)])  # an image may have none
        return mask_loss(out.pred_masks[:, :, 0][valid], out.iou_scores[..., 0][valid],
                         out.object_score_logits[..., 0][valid], gt)
