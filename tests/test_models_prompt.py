"""The detector's class prompt under a word-piece tokenizer (issue 30, item 7).

The paper's Grounding DINO reads at most 256 text tokens (``max_text_len`` of the checkpoint). ADE20K's 100 class
names joined as "bed . windowpane . ..." take 214 tokens when every word is one token (the kit's local word-level
vocabulary), but bert-base-uncased splits rarer words into word pieces ("windowpane" -> "window ##pane"), so the
real count is larger and can pass 256. The bound here is the worst case of word pieces: a vocabulary of single
letters, where every letter of every name is a token. Even then the prompt is cut into chunks of whole names that
each fit, every class sits in exactly one chunk, and each phrase's tokens are exactly its name's pieces; the
detector runs once per chunk and the chunks' scores are pooled (``test_ade20k_teacher_pools_the_queries_...``).
"""

from __future__ import annotations

import string

import pytest

from castlib.data.classes import ADE20K, CITYSCAPES
from castlib.models.grounding import Prompt, local_tokenizer, prompt_chunks

PAPER_MAX_TEXT_LEN = 256  # mm_grounding_dino_large_all's config (max_text_len)


def letter_piece_tokenizer():
    """A BERT word-piece tokenizer with bert-base-uncased's special ids whose only pieces are single letters:
    the most tokens any word-piece vocabulary can give a lower-case name."""
    return local_tokenizer([*string.ascii_lowercase, *(f"##{c}" for c in string.ascii_lowercase)])


def test_the_letter_vocabulary_splits_every_word_into_its_letters():
    tokenizer = letter_piece_tokenizer()
    assert tokenizer.tokenize("pool table") == ["p", "##o", "##o", "##l", "t", "##a", "##b", "##l", "##e"]
    assert tokenizer.unk_token not in tokenizer.tokenize(" ".join(ADE20K.names))


def test_ade20k_prompt_overflows_256_tokens_under_word_pieces():
    """Why chunking is needed: in one piece, the worst-case word-piece prompt is far over the text encoder's length,
    while the word-level one (one token a word) fits."""
    text = " . ".join(ADE20K.names) + " ."
    assert len(local_tokenizer()(text)["input_ids"]) <= PAPER_MAX_TEXT_LEN
    assert len(letter_piece_tokenizer()(text)["input_ids"]) > PAPER_MAX_TEXT_LEN


@pytest.mark.parametrize("classes", [CITYSCAPES, ADE20K], ids=["cityscapes", "ade20k"])
def test_word_piece_prompt_chunks_fit_and_each_phrase_is_its_names_pieces(classes):
    tokenizer = letter_piece_tokenizer()
    chunks = prompt_chunks(tokenizer, classes.names, PAPER_MAX_TEXT_LEN)
    assert sorted(sum(chunks, [])) == list(range(len(classes)))
    for chunk in chunks:
        prompt = Prompt(tokenizer, classes.names, chunk, PAPER_MAX_TEXT_LEN)
        ids = prompt.input_ids.tolist()
        assert len(ids) <= PAPER_MAX_TEXT_LEN
        assert prompt.label_map.shape[0] == len(chunk)
        for row, c in zip(prompt.label_map, chunk, strict=True):
            tokens = [ids[i] for i in row.nonzero().flatten().tolist()]
            assert tokenizer.decode(tokens) == classes.names[c]
    if classes is ADE20K:
        assert len(chunks) > 1
