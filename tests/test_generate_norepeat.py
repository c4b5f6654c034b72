"""gptlib.generate.no_repeat_ngram_mask: n-gram blocking, against a brute-force reference."""

import pytest
import torch

from gptlib.generate import no_repeat_ngram_mask
from gptlib.model import GPT, GPTConfig


def banned_by_hand(ids: list[int], n: int) -> set[int]:
    """Tokens t such that ids[-(n-1):] + [t] already occurs as n consecutive tokens."""
    tail = ids[len(ids) - n + 1 :] if n > 1 else []
    return {ids[i + n - 1] for i in range(len(ids) - n + 1) if ids[i : i + n - 1] == tail}


def test_hand_example():
    """'the cat sat on the' with n=2: the bigram (the, cat) exists, so 'cat' is banned."""
    the, cat, sat, on = 0, 1, 2, 3
    out = no_repeat_ngram_mask(torch.zeros(1, 5), torch.tensor([[the, cat, sat, on, the]]), 2)
    assert out[0].isinf().nonzero().flatten().tolist() == [cat]
    out3 = no_repeat_ngram_mask(torch.zeros(1, 5), torch.tensor([[the, cat, sat, on, the]]), 3)
    assert not out3.isinf().any()  # (on, the) never occurred before: nothing to ban


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_matches_brute_force_on_random_rows(n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 4, (16, 12), generator=g)  # a small vocabulary repeats a lot
    logits = torch.randn(16, 4, generator=g)
    out = no_repeat_ngram_mask(logits, ids, n)
    for row in range(16):
        expected = banned_by_hand(ids[row].tolist(), n)
        got = set(out[row].isinf().nonzero().flatten().tolist())
        assert got == expected, (row, ids[row].tolist())
        keep = [t for t in range(4) if t not in expected]
        assert torch.equal(out[row, keep], logits[row, keep])  # the others untouched


def test_short_history_and_bad_n():
    logits = torch.randn(2, 7)
    assert torch.equal(no_repeat_ngram_mask(logits, torch.tensor([[1, 2], [3, 4]]), 3), logits)
    for bad in (0, -1, 2.0):
        with pytest.raises(ValueError, match="positive integer"):
            no_repeat_ngram_mask(logits, torch.tensor([[1, 2]]), bad)


def test_greedy_loop_never_repeats_an_ngram():
    """A greedy tiny model repeats itself; with 3-gram blocking no 3-gram occurs twice."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny")).eval()
    seq = torch.tensor([[1, 2, 3]])
    plain = seq
    with torch.no_grad():
        for _ in range(40):
            logits = model(seq)[0][:, -1, :]
            seq = torch.cat([seq, no_repeat_ngram_mask(logits, seq, 3).argmax(-1, keepdim=True)], 1)
            nxt = model(plain)[0][:, -1, :].argmax(-1, keepdim=True)
            plain = torch.cat([plain, nxt], 1)
    grams = [tuple(seq[0, i : i + 3].tolist()) for i in range(seq.size(1) - 2)]
    assert len(grams) == len(set(grams))
    plain_grams = [tuple(plain[0, i : i + 3].tolist()) for i in range(plain.size(1) - 2)]
    assert len(plain_grams) > len(set(plain_grams))  # without the mask it does repeat
