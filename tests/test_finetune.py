"""Tests of gptlib.finetune: the chat format and its loss mask, vocabulary resizing, masked
SFT targets and padding, and the GPT-1 style classifier with its freezing modes.

The tokenizer is an untrained byte-level BPE (id = byte value, 256 ids), so expected ids can be
read off an ASCII table; the chat format's four special tokens get ids 256 to 259."""

import pytest
import torch
import torch.nn.functional as F

from gptlib.bpe import BPETokenizer
from gptlib.finetune import (
    IGNORE,
    ChatFormat,
    GPTClassifier,
    collate,
    freeze,
    resize_vocab,
    sft_targets,
)
from gptlib.model import GPT, GPTConfig

SYSTEM, USER, ASSISTANT, END = 256, 257, 258, 259
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny", **overrides)).eval()


def chat() -> ChatFormat:
    return ChatFormat(BPETokenizer())


# --- the chat format ------------------------------------------------------------------------


def test_a_conversation_encodes_to_hand_derived_ids_and_mask():
    """<|user|> H i <|end|> <|assistant|> Y o <|end|>, with "H" = 72, "i" = 105, "Y" = 89,
    "o" = 111. Only the assistant's content and its closing <|end|> are learned."""
    ids, mask = chat().encode_conversation(CHAT)
    assert ids == [USER, 72, 105, END, ASSISTANT, 89, 111, END]
    assert mask == [0, 0, 0, 0, 0, 1, 1, 1]


def test_system_turns_and_the_generation_prompt_are_never_learned():
    fmt = chat()
    ids, mask = fmt.encode_conversation(
        [{"role": "system", "content": "Be"}, *CHAT[:1]], add_generation_prompt=True
    )
    assert ids == [SYSTEM, 66, 101, END, USER, 72, 105, END, ASSISTANT]
    assert mask == [0] * len(ids)
    assert fmt.vocab_size == 260 and fmt.end_id == END


def test_render_encode_and_decode_agree():
    fmt = chat()
    ids, _ = fmt.encode_conversation(CHAT)
    text = fmt.render(CHAT)
    assert text == "<|user|>Hi<|end|><|assistant|>Yo<|end|>"
    assert fmt.encode(text) == ids  # splitting on the special strings finds the same ids
    assert fmt.decode(ids) == text
    assert fmt.encode("a<|end|><|end|>b") == [97, END, END, 98]  # adjacent specials, text around


def test_special_strings_typed_by_a_user_stay_ordinary_text():
    fmt = chat()
    ids, _ = fmt.encode_conversation([{"role": "user", "content": "a<|end|>"}])
    assert ids[1:-1] == list(b"a<|end|>")  # eight byte ids, no special id
    assert ids[-1] == END


def test_a_message_without_a_known_role_is_refused():
    with pytest.raises(ValueError, match="role"):
        chat().encode_conversation([{"role": "narrator", "content": "x"}])


# --- resizing the vocabulary ----------------------------------------------------------------


def test_resize_vocab_keeps_old_logits_and_starts_new_tokens_at_the_mean():
    """New rows of the tied matrix E are mean(E), so a new token's logit is h . mean(E), the
    mean of the old logits at that position."""
    old, x = tiny(), torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    new = resize_vocab(old, 260)
    assert new.config.vocab_size == 260 and old.config.vocab_size == 256
    assert new.lm_head.weight is new.wte.weight  # still tied
    before, _ = old(x)
    after, _ = new(x)
    assert after.shape == (2, 12, 260)
    assert torch.equal(after[..., :256], before)
    for j in range(256, 260):
        torch.testing.assert_close(after[..., j], before.mean(-1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="only adds tokens"):
        resize_vocab(old, 100)


# --- masked targets and padding -------------------------------------------------------------


def test_sft_targets_mask_the_prompt():
    x, y = sft_targets([USER, 72, END, ASSISTANT, 89, END], [0, 0, 0, 0, 1, 1])
    assert x.tolist() == [USER, 72, END, ASSISTANT, 89]
    assert y.tolist() == [IGNORE, IGNORE, IGNORE, 89, END]


def test_the_masked_loss_is_cross_entropy_over_unmasked_positions_only():
    """Hand computation: mean of -log softmax(logits[t])[y[t]] over the t with y[t] != -100."""
    model, fmt = resize_vocab(tiny(), 260), chat()
    ids, mask = fmt.encode_conversation(
        [{"role": "user", "content": "To be?"}, {"role": "assistant", "content": "Or not."}]
    )
    x, y = sft_targets(ids, mask)
    logits, loss = model(x[None], y[None])
    logp = torch.log_softmax(logits[0], dim=-1)  # (T, V)
    kept = [t for t in range(len(y)) if y[t] != IGNORE]
    assert len(kept) == len("Or not.") + 1  # the answer's bytes and its <|end|>
    by_hand = -torch.stack([logp[t, y[t]] for t in kept]).mean()
    torch.testing.assert_close(loss, by_hand)


def test_collate_pads_on_the_right_and_truncates_as_asked():
    a = (torch.tensor([1, 2, 3, 4, 5]), torch.tensor([2, 3, 4, 5, 6]))
    b = (torch.tensor([7, 8]), torch.tensor([IGNORE, 9]))
    X, Y = collate([a, b], block_size=4, pad_id=0)
    assert X.tolist() == [[2, 3, 4, 5], [7, 8, 0, 0]]
    assert Y.tolist() == [[3, 4, 5, 6], [IGNORE, 9, IGNORE, IGNORE]]
    X, Y = collate([a, b], block_size=4, truncate="right")
    assert X[0].tolist() == [1, 2, 3, 4] and Y[0].tolist() == [2, 3, 4, 5]
    X, _ = collate([b], block_size=8)
    assert X.shape == (1, 2)  # padded to the longest example, not to block_size


def test_a_padded_batch_has_the_loss_of_its_examples_token_by_token():
    """Right padding cannot change earlier positions (causal mask) and its targets are -100, so
    the batch loss is the sum of the examples' token losses over the number of targets."""
    model = tiny()
    g = torch.Generator().manual_seed(2)
    pairs = [
        sft_targets(torch.randint(0, 256, (n,), generator=g), [0] * 3 + [1] * (n - 3))
        for n in (6, 11)
    ]
    X, Y = collate(pairs, block_size=64)
    _, loss = model(X, Y)
    sums = [
        F.cross_entropy(model(x[None])[0][0], y, ignore_index=IGNORE, reduction="sum")
        for x, y in pairs
    ]
    count = sum(int((y != IGNORE).sum()) for _, y in pairs)
    torch.testing.assert_close(loss, sum(sums) / count)


# --- the classifier -------------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_padding_does_not_change_the_prediction(pool):
    clf = GPTClassifier(tiny(), n_classes=3, pool=pool).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    alone, _ = clf(ids)
    padded = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [1, 2, 0, 0, 0, 0, 0]])
    padded_other = padded.clone()
    padded_other[0, 5:] = 200  # different padding ids
    logits, _ = clf(padded, lengths=torch.tensor([5, 2]))
    other, _ = clf(padded_other, lengths=torch.tensor([5, 2]))
    assert logits.shape == (2, 3)
    torch.testing.assert_close(logits[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(other, logits)


def test_the_pooled_state_is_ln_f_of_the_last_hidden_state():
    gpt = tiny()
    ids = torch.tensor([[3, 4, 5, 6]])
    h = gpt.ln_f(gpt.hidden_states(ids)[-1])[0]  # (T, C)
    for pool, vec in (("last", h[2]), ("mean", h[:3].mean(0))):
        clf = GPTClassifier(gpt, n_classes=2, pool=pool)
        logits, loss = clf(ids, lengths=torch.tensor([3]), labels=torch.tensor([1]))
        torch.testing.assert_close(logits[0], clf.head(vec))
        torch.testing.assert_close(loss, F.cross_entropy(logits, torch.tensor([1])))


def test_freezing_modes_leave_exactly_the_expected_parameters_trainable():
    """Tiny preset, C = 64, two layers, 3 classes. Head: 64 * 3 + 3 = 195. One block:
    12 C^2 + 13 C = 49984; ln_f: 2 C = 128. Everything: the GPT's parameters plus the head."""
    clf = GPTClassifier(tiny(), n_classes=3)
    assert freeze(clf, "head") == 195
    assert {n for n, p in clf.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert freeze(clf, "last_k", k=1) == 195 + 49984 + 128
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert {n.split(".")[1] for n in trainable if n.startswith("gpt.")} == {"h", "ln_f"}
    assert all(n.startswith(("head.", "gpt.h.1.", "gpt.ln_f.")) for n in trainable)
    assert freeze(clf, "all") == clf.gpt.num_params() + 195
    with pytest.raises(ValueError, match="k must be between 1 and n_layer=2"):
        freeze(clf, "last_k", k=3)


def test_training_with_a_frozen_body_changes_only_the_head():
    clf = GPTClassifier(tiny(), n_classes=2)
    freeze(clf, "head")
    body = {k: v.clone() for k, v in clf.gpt.state_dict().items()}
    opt = torch.optim.AdamW([p for p in clf.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 256, (4, 8), generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 0, 1])
    first = None
    for _ in range(20):
        _, loss = clf(ids, labels=labels)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    assert all(torch.equal(v, clf.gpt.state_dict()[k]) for k, v in body.items())
