"""Grounding DINO as the teacher's detector (spec section 5.1): the class prompt, its tokenizer, phrase scores,
and the detection loss with two library pitfalls mended.

- Prompt: the class names joined by " . " ("person . rider . car ."). A prompt longer than the text encoder's
  ``max_text_len`` is cut into chunks of whole names (as MM-Grounding-DINO does for large vocabularies, e.g.
  ADE20K's 100 classes); the detector runs once per chunk and the chunks' queries are pooled.
- Tokenizer: the checkpoint's bert-base-uncased tokenizer; without one, a local vocabulary with the
  bert-base-uncased id layout (pitfalls G1, G2: the library hard-codes [CLS]=101, [SEP]=102, '.'=1012, '?'=1029
  and [PAD]=0 to split phrases).
- Phrase score of a box: the mean over the phrase's tokens of the sigmoid token scores (MM-Grounding-DINO's
  ``convert_grounding_to_cls_scores``). A box's score is its best phrase score, as in Grounding DINO's
  post-processing.
- Class distribution with a no-object term (spec section 5.1, open question 1), for the output contract:
  with phrase scores p_c and box score s = max_c p_c, P(c) = s * p_c / sum_c' p_c' and P(no object) = 1 - s.
  ``class_logits = log P``, so their softmax is exactly that distribution and the object mass is the box score.
- Loss (pitfalls G4, G5): ``transformers``' criterion, run per image so that no label-map offset can pick the
  wrong phrase rows (G5), and with the encoder-proposal ("_enc") term computed on the proposals *with* their
  gradient, as the original DINO does, so the two-stage proposal head trains (G4; the library detaches them).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_convert, masks_to_boxes
from transformers import AutoConfig, BertConfig, BertTokenizer, PreTrainedConfig, SwinConfig
from transformers.loss.loss_grounding_dino import GroundingDinoHungarianMatcher, GroundingDinoImageLoss
from transformers.models.grounding_dino.modeling_grounding_dino import build_label_maps, build_text_mask

from castlib.config import Config
from castlib.data.classes import CLASS_LISTS, ClassList
from castlib.global_batch import global_normaliser

# bert-base-uncased layout (pitfall G2): ids 0..103 and the ASCII symbols at 999.. are what the detector expects
_BERT_HEAD = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]",
              *(f"[unused{i}]" for i in range(99, 994))]
_BERT_SYMBOLS = [chr(c) for c in range(33, 127) if not "A" <= chr(c) <= "Z"]
BERT_SPECIAL_IDS = {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102, ".": 1012, "?": 1029}


def local_tokenizer(words: Sequence[str] | None = None) -> BertTokenizer:
    """A BERT word-level tokenizer with bert-base-uncased's special ids, whose vocabulary is the words of both
    benchmarks' class names (or ``words``); for random-weight teachers, which need no real tokenizer."""
    if words is None:
        words = sorted({w for classes in CLASS_LISTS.values() for name in classes.names for w in name.lower().split()})
    vocab = {token: i for i, token in enumerate([*_BERT_HEAD, *_BERT_SYMBOLS, *words])}
    if any(vocab[token] != i for token, i in BERT_SPECIAL_IDS.items()):
        raise AssertionError("the local vocabulary lost bert-base-uncased's special ids")
    return BertTokenizer(vocab=vocab, do_lower_case=True)


def detector_config(spec: Config, vocab_size: int) -> PreTrainedConfig:
    """A Grounding DINO (``spec.model_type``: ``mm-grounding-dino`` or ``grounding-dino``) from the
    ``model.teacher.detector`` sizes, for random weights: a Swin image backbone (its stages ``swin_out_indices``
    feed the encoder, plus extra strided levels up to ``num_feature_levels``), a BERT text encoder over
    ``text_vocab_size`` tokens (0: ``vocab_size``, the tokenizer's), and the deformable encoder/decoder with
    ``d_model`` channels (a multiple of 32, pitfall G3). The paper profile's sizes are MM-Grounding-DINO Swin-L's
    (``transformers``' conversion script for ``mm_grounding_dino_large_all``: Swin-L window 12 with all four
    stages out, five feature levels, BERT-base)."""
    backbone = SwinConfig(embed_dim=spec.swin_width, depths=list(spec.swin_depths),
                          num_heads=list(spec.swin_heads), window_size=spec.swin_window,
                          out_indices=list(spec.swin_out_indices))
    text = BertConfig(vocab_size=spec.text_vocab_size or vocab_size, hidden_size=spec.text_hidden,
                      num_hidden_layers=spec.text_layers, num_attention_heads=spec.text_heads,
                      intermediate_size=4 * spec.text_hidden, max_position_embeddings=max(512, spec.max_text_len))
    return AutoConfig.for_model(
        spec.model_type, backbone_config=backbone, text_config=text, d_model=spec.d_model,
        num_feature_levels=spec.num_feature_levels, encoder_layers=spec.encoder_layers,
        decoder_layers=spec.decoder_layers, encoder_ffn_dim=spec.ffn_dim, decoder_ffn_dim=spec.ffn_dim,
        encoder_attention_heads=spec.num_heads, decoder_attention_heads=spec.num_heads,
        num_queries=spec.num_queries, max_text_len=spec.max_text_len,
    )


def prompt_chunks(tokenizer, class_names: Sequence[str], max_text_len: int) -> list[list[int]]:
    """Class indices per prompt chunk: consecutive names, as many as fit ``max_text_len`` tokens with [CLS],
    [SEP] and one '.' per name."""
    chunks: list[list[int]] = [[]]
    used = 2
    for index, name in enumerate(class_names):
        cost = len(tokenizer(name, add_special_tokens=False)["input_ids"]) + 1
        if cost + 2 > max_text_len:
            raise ValueError(f"class name {name!r} alone needs {cost + 2} tokens, more than max_text_len "
                             f"{max_text_len}")
        if used + cost > max_text_len:
            chunks.append([])
            used = 2
        chunks[-1].append(index)
        used += cost
    return chunks


class Prompt:
    """One chunk of the class prompt: its token ids and, per phrase, which tokens it spans."""

    def __init__(self, tokenizer, class_names: Sequence[str], classes: list[int], max_text_len: int):
        names = tuple(class_names[c] for c in classes)
        self.classes = classes
        self.text = ClassList("prompt", names, tuple(classes)).prompt()
        self.input_ids = torch.tensor(tokenizer(self.text)["input_ids"], device="cpu")  # moved to the images' device
        label_map = build_label_maps(torch.zeros(1, 1, max_text_len, device="cpu"), self.input_ids[None])[0]
        if label_map.shape[0] != len(classes):
            raise ValueError(f"the prompt {self.text!r} splits into {label_map.shape[0]} phrases, not {len(classes)}; "
                             "class names must not contain '.' or '?'")
        self.label_map = label_map  # [P, max_text_len] 0/1

    def phrase_probs(self, token_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(p, 1 - p)`` ``[B, Q, P]``: mean over each phrase's tokens of sigmoid(logit) and of sigmoid(-logit)
        (computed separately so that neither loses precision near 0 or 1)."""
        weights = (self.label_map / self.label_map.sum(1, keepdim=True)).to(token_logits).T
        # padded tokens have -inf logits, hence sigmoid 0 or 1, and weight 0
        p = torch.sigmoid(token_logits) @ weights
        q = torch.sigmoid(-token_logits) @ weights
        return p, q


def class_distribution(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class_logits [..., C+1], score [...])`` from phrase scores ``p`` and ``q = 1 - p`` ``[..., C]`` (classes
    outside a box's prompt chunk have p = 0): P(c) = s p_c / sum p, P(no object) = 1 - s, s = max_c p_c."""
    tiny = torch.finfo(p.dtype).tiny
    score, best = p.max(-1)
    log_class = torch.log(score.clamp_min(tiny))[..., None] + torch.log(p.clamp_min(tiny)) \
        - torch.log(p.sum(-1, keepdim=True).clamp_min(tiny))
    log_no_object = torch.log(q.gather(-1, best[..., None]).clamp_min(tiny))
    return torch.cat([log_class, log_no_object], -1), score


def decoder_predictions(logits, labels, device, pred_boxes, config, label_maps, text_mask, outputs_class=None,
                        outputs_coord=None, **kwargs):
    """Stands in for the detector's ``loss_function``: instead of the library loss (pitfalls G4, G5) it returns
    every earlier decoder layer's predictions, which the library exposes only through this hook."""
    aux = [{"logits": c, "pred_boxes": b} for c, b in zip(outputs_class[:-1], outputs_coord[:-1], strict=True)]
    return None, None, aux


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Normalised (cx, cy, w, h) boxes ``[N, 4]`` enclosing non-empty boolean masks ``[N, H, W]`` (pixel extents:
    a one-pixel mask has a one-pixel box)."""
    height, width = masks.shape[-2:]
    xyxy = masks_to_boxes(masks) + masks.new_tensor([0, 0, 1, 1], dtype=torch.float32)
    return box_convert(xyxy / xyxy.new_tensor([width, height, width, height]), "xyxy", "cxcywh")


class DetectionLoss:
    """Grounding DINO's set loss (focal phrase loss x2, L1 box x5, GIoU x2; decoder layers and encoder proposals),
    computed per image (G5) with the proposals' gradient kept (G4); normalised by the global batch's box count."""

    def __init__(self, config):
        matcher = GroundingDinoHungarianMatcher(class_cost=config.class_cost, bbox_cost=config.bbox_cost,
                                                giou_cost=config.giou_cost)
        self.criterion = GroundingDinoImageLoss(matcher=matcher, focal_alpha=config.focal_alpha,
                                                losses=["labels", "boxes"])
        self.weights = {"loss_ce": 2.0, "loss_bbox": config.bbox_loss_coefficient,
                        "loss_giou": config.giou_loss_coefficient}
        self.num_queries = config.num_queries

    def _weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weights by term; "loss_ce_3" (decoder layer 3) and "loss_ce_enc" (proposals) weigh as "loss_ce"."""
        return sum(value * self.weights["_".join(key.split("_")[:2])] for key, value in losses.items())

    def __call__(self, out, prompt: Prompt, attention_mask: torch.Tensor, labels: list[dict]) -> torch.Tensor:
        """The loss of one detector pass ``out`` (run with :func:`decoder_predictions` as its loss hook) on the
        prompt chunk ``prompt``; ``labels``: per image ``class_labels`` (phrase index) and ``boxes`` (cx, cy, w, h)."""
        label_map = prompt.label_map.to(out.logits.device)
        text_mask = build_text_mask(out.logits, attention_mask)
        top = torch.topk(out.enc_outputs_class.max(-1).values, self.num_queries, dim=1).indices
        enc_logits = out.enc_outputs_class.gather(1, top[..., None].expand(-1, -1, out.enc_outputs_class.shape[-1]))
        enc_boxes = out.enc_outputs_coord_logits.gather(1, top[..., None].expand(-1, -1, 4)).sigmoid()
        # the global batch's box count (DESIGN 9: the same loss on any number of processes)
        total_boxes = global_normaliser(torch.tensor(float(sum(len(t["class_labels"]) for t in labels)),
                                                     device=out.logits.device))
        loss = out.logits.new_zeros(())
        for i, target in enumerate(labels):
            def one(logits, boxes, i=i):
                return {"logits": logits[i:i + 1], "pred_boxes": boxes[i:i + 1], "label_maps": (label_map,),
                        "text_mask": text_mask[i:i + 1]}
            outputs = one(out.logits, out.pred_boxes)
            outputs["auxiliary_outputs"] = [one(a["logits"], a["pred_boxes"]) for a in out.auxiliary_outputs]
            losses = self.criterion(outputs, [target])
            losses |= {f"{k}_enc": v for k, v in self.criterion(one(enc_logits, enc_boxes), [target]).items()}
            loss = loss + self._weighted(losses) * max(len(target["class_labels"]), 1) / total_boxes
        return loss
