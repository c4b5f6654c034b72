"""gptlib.ablations: each ablation removes exactly its component, and nothing else changes.

The oracles are independent of the ablation code: the bag-of-tokens property that a model
without positions must have (chapter 5.4.2, eq-5-4-2-bag), and forward passes composed by hand
from a deep copy of the original model's sub-layers.
"""

import copy
import dataclasses

import torch

from gptlib import ablations
from gptlib.ablations import BlockWithoutResidual, char_task, without_positions, without_residuals
from gptlib.kv_cache import KVCache
from gptlib.model import GPT, GPTConfig, set_attention
from gptlib.train import TrainConfig, configure_optimizer

CONFIG = GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)
IDX = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]])  # (1, 10)


def _model(n_layer: int = 2, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(dataclasses.replace(CONFIG, n_layer=n_layer))


def _last_logits_gap(model: GPT) -> float:
    """Largest change of the last position's logits when the tokens before it are permuted.

    In float64, so that rounding (about 1e-16) is far below any real change (at initialisation,
    with weights of standard deviation 0.02, a real change is about 1e-4 to 1e-3).
    """
    model = model.double()
    order = torch.tensor([6, 2, 8, 0, 4, 7, 1, 3, 5])  # a fixed permutation of positions 0..8
    shuffled = torch.cat([IDX[:, :-1][:, order], IDX[:, -1:]], dim=1)  # same last token
    with torch.no_grad():
        return (model(IDX)[0][0, -1] - model(shuffled)[0][0, -1]).abs().max().item()


def test_without_positions_one_layer_sees_its_context_as_a_bag():
    """Without P, the last position's attention output is sum_s a_ts W_V x_s over the prefix,
    each term a function of the token at s alone: permuting the prefix permutes the terms and
    changes nothing. With positions, or with a second layer (whose inputs each summarise their own
    prefix, so the causal mask leaks order), the logits do change."""
    assert _last_logits_gap(without_positions(_model(n_layer=1))) < 1e-12
    assert _last_logits_gap(_model(n_layer=1)) > 1e-5
    assert _last_logits_gap(without_positions(_model(n_layer=2))) > 1e-5


def test_without_positions_the_embedding_is_the_token_embedding_alone():
    model = without_positions(_model())
    with torch.no_grad():
        first = model.hidden_states(IDX)[0]  # wte(idx) + wpe(pos), before any block
        torch.testing.assert_close(first, model.wte(IDX), rtol=0, atol=0)


def test_without_positions_stays_zero_through_an_optimizer_step():
    model = without_positions(_model())
    before = copy.deepcopy(model.state_dict())
    opt = configure_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.1))
    _, loss = model(IDX[:, :-1], IDX[:, 1:])
    loss.backward()
    opt.step()
    assert model.wpe.weight.grad is None
    assert torch.count_nonzero(model.wpe.weight) == 0
    assert not torch.equal(model.wte.weight, before["wte.weight"])  # the rest did train


def _no_residual_by_hand(block, x):
    """The two sub-layers of a pre-LN block, composed with no skip connection."""
    return block.mlp(block.ln_2(block.attn(block.ln_1(x))))


def test_block_without_residual_is_its_sublayers_composed():
    original = _model()
    reference = copy.deepcopy(original)  # untouched copy of the sub-layers
    ablated = without_residuals(original)
    x = torch.randn(2, 7, CONFIG.n_embd, generator=torch.Generator().manual_seed(1))  # (B, T, C)
    with torch.no_grad():
        for block, ref in zip(ablated.h, reference.h, strict=True):
            assert isinstance(block, BlockWithoutResidual)
            torch.testing.assert_close(block(x), _no_residual_by_hand(ref, x))
            assert not torch.allclose(block(x), ref(x))  # the residual really is gone


def test_without_residuals_whole_model_by_hand():
    reference = _model()
    ablated = without_residuals(copy.deepcopy(reference))
    with torch.no_grad():
        h = reference.wte(IDX) + reference.wpe(torch.arange(IDX.size(1)))  # (1, T, C)
        for block in reference.h:
            h = _no_residual_by_hand(block, h)
        expected = reference.ln_f(h) @ reference.wte.weight.T  # (1, T, V), tied output layer
        torch.testing.assert_close(ablated(IDX)[0], expected)


def test_without_residuals_keeps_weights_names_dtype_mode_path_and_random_stream():
    model = set_attention(_model().double().eval(), "explicit")
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(123)
    without_residuals(model)
    drawn_after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(drawn_after, torch.rand(3))  # building the new blocks drew nothing
    after = model.state_dict()
    assert list(after) == list(before)
    for name, value in before.items():
        assert torch.equal(after[name], value), name
        assert after[name].dtype == torch.float64, name
    assert not any(block.training for block in model.h)
    assert [block.attn.attention for block in model.h] == ["explicit", "explicit"]
    assert [block.attn.layer_idx for block in model.h] == [0, 1]


def test_without_residuals_with_a_kv_cache_matches_the_full_forward():
    model = without_residuals(_model()).eval()
    with torch.no_grad():
        full = model(IDX)[0]  # (1, T, V)
        cache = KVCache.for_model(model, batch_size=1)
        steps = [model(IDX[:, :6], kv_cache=cache)[0]]  # a prompt, then one token at a time
        steps += [model(IDX[:, t : t + 1], kv_cache=cache)[0] for t in range(6, IDX.size(1))]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


TEXT = "It was the best of times, it was the worst of times; zany quips vex."


def test_char_task_cuts_tokenizes_and_splits_in_order():
    tok, train_ids, val_ids = char_task(50, val_fraction=0.2, text=TEXT)
    assert tok.decode(train_ids.tolist()) == TEXT[:40]  # int(50 * 0.8) characters
    assert tok.decode(val_ids.tolist()) == TEXT[40:50]
    assert tok.chars == sorted(set(TEXT[:50]))  # 'z' occurs only in validation, still has an id
    assert train_ids.dtype == val_ids.dtype == torch.long
    assert train_ids.dim() == val_ids.dim() == 1


def test_char_task_reads_the_first_million_characters_of_the_corpus(monkeypatch):
    corpus = "ab\n" * 400_000  # 1.2 M characters
    monkeypatch.setattr(ablations, "shakespeare_text", lambda: corpus)
    task = char_task()
    assert (len(task.train_ids), len(task.val_ids)) == (900_000, 100_000)
    assert task.tokenizer.chars == ["\n", "a", "b"]
