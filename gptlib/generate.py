"""Text generation: turning next-token logits into tokens, one step at a time.

The pieces are small pure functions of a logits tensor (`top_k_mask`, `top_p_mask`,
`apply_repetition_penalty`, `no_repeat_ngram_mask`, `sample_next`); randomness comes only from
an explicit `torch.Generator`, so a seeded call gives the same tokens every time. `generate`,
`stream` and `stream_text` compose them with the model and a `KVCache`; `beam_search` keeps
several candidate continuations and returns the most probable one.

How to sample is one frozen `SamplingConfig` (temperature, top-k, top-p, repetition penalty,
stop tokens), not a list of keyword arguments: the four entry points (`generate`, `stream_batch`,
`stream`, `stream_text`) share it, so the options, their defaults and their checks are written
once, a misspelt option is a TypeError from the dataclass, a bad value fails when the config is
made rather than at the first step, and one config can be reused across calls. The generator
and `use_cache` stay separate arguments: a generator is state that advances as it is used,
and the cache changes speed, never the tokens.

Context length: the model sees at most block_size tokens. Without a cache, each step feeds the
last block_size tokens. With a cache, the prompt (cropped to block_size) is processed once, and
each step then feeds one token; once the cache holds block_size positions there is no room for
another, and generation falls back to recomputing the cropped window each step, exactly what
the uncached path does. So the two paths give the same tokens, at any length.

Left out on purpose: speculative decoding, batched prompts of different lengths (padding),
min-p and typical sampling. References: Holtzman et al. 2020 (nucleus sampling), Keskar et al.
2019 (CTRL repetition penalty), Fan et al. 2018 (top-k sampling), Paulus et al. 2018 (n-gram
blocking; `no_repeat_ngram_mask` is a helper for custom loops, not a `SamplingConfig` option).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from gptlib.kv_cache import KVCache
from gptlib.model import GPT, evaluating

if TYPE_CHECKING:
    from gptlib.tokenizer import Tokenizer


def top_k_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row; set the others to -inf (Fan et al. 2018).

    >>> top_k_mask(torch.tensor([[1.0, 3.0, 2.0, 0.0]]), k=2)
    tensor([[-inf, 3., 2., -inf]])
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    k = min(k, logits.size(-1))
    top = torch.topk(logits, k, dim=-1).indices  # (B, k); on ties exactly k are kept
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)  # (B, V)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_mask(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose mass is >= p.

    Holtzman et al. 2020, Sec. 3.1. A token is kept when the mass of the tokens more likely than
    it is still below p. With probabilities 0.5, 0.3, 0.15, 0.05 and p = 0.7, the masses before
    each token are 0, 0.5, 0.8, 0.95, so the first two are kept (0.5 + 0.3 = 0.8 >= 0.7):

    >>> probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    >>> top_p_mask(probs.log(), p=0.7).exp()
    tensor([[0.5000, 0.3000, 0.0000, 0.0000]])
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p!r}")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = F.softmax(sorted_logits, dim=-1)  # (B, V)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # (B, V), 0 for the most likely token
    keep_sorted = mass_before < p  # (B, V); the most likely token is always kept
    keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)  # back to vocab order
    return logits.masked_fill(~keep, float("-inf"))


def apply_repetition_penalty(
    logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make tokens that already occur less likely (Keskar et al. 2019, CTRL, Sec. 4.1).

    A positive logit of a seen token is divided by `penalty`, a negative one multiplied, so the
    token always loses probability when penalty > 1. penalty = 1 changes nothing.

    >>> apply_repetition_penalty(torch.tensor([[2.0, -1.0, 3.0]]), torch.tensor([[0, 1]]), 2.0)
    tensor([[ 1., -2.,  3.]])
    """
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be positive, got {penalty!r}")
    if penalty == 1.0:
        return logits
    seen = logits.gather(-1, previous_ids)  # (B, T) logits of the tokens already present
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)  # (B, T)
    return logits.scatter(-1, previous_ids, seen)  # (B, V)


def no_repeat_ngram_mask(logits: torch.Tensor, previous_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid every token that would complete an n-gram already present in previous_ids.

    The n-gram blocking of Paulus et al. (2018; trigrams, in summaries): if the last
    n - 1 tokens occurred before, followed by token t, then t gets -inf. With n = 2 and the
    tokens 5 3 5, the bigram (5, 3) exists, the text ends in 5, so 3 is banned:

    >>> no_repeat_ngram_mask(torch.zeros(1, 6), torch.tensor([[5, 3, 5]]), n=2)
    tensor([[0., 0., 0., -inf, 0., 0.]])

    Args:
        logits: (B, V); previous_ids: (B, T) the prompt and the tokens generated so far.
    Returns:
        (B, V) logits with the banned tokens at -inf (unchanged when T < n).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"no-repeat n-gram size must be a positive integer, got {n!r}")
    T = previous_ids.size(1)
    if n > 1 and T < n:  # no n-gram yet
        return logits
    if n == 1:  # every token already present is banned
        return logits.scatter(-1, previous_ids, float("-inf"))
    grams = previous_ids.unfold(1, n, 1)  # (B, T - n + 1, n): every n-gram so far
    tail = previous_ids[:, T - n + 1 :]  # (B, n - 1): what the next n-gram would start with
    hit = (grams[:, :, :-1] == tail[:, None, :]).all(dim=-1)  # (B, T - n + 1)
    banned = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
    rows, where = hit.nonzero(as_tuple=True)
    banned[rows, grams[rows, where, -1]] = True
    return logits.masked_fill(banned, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one next token per row from logits (B, V); returns a LongTensor (B,).

    temperature = 0 means greedy (argmax); otherwise the logits are divided by the temperature,
    filtered by top-k and then top-p, and one token is drawn with `generator`.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    logits = logits / temperature  # (B, V)
    if top_k is not None:
        logits = top_k_mask(logits, top_k)
    if top_p is not None:
        logits = top_p_mask(logits, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How each next token is chosen, and which tokens end a row.

    temperature, top_k, top_p: see `sample_next`; temperature=0 is greedy decoding.
    repetition_penalty: see `apply_repetition_penalty` (it looks at prompt and output).
    stop_tokens: a row is finished when it produces one of these; it then repeats that token
        as padding, and generation ends early once every row is finished.

    >>> SamplingConfig(temperature=0.8, top_k=50, stop_tokens=[0]).stop_tokens
    (0,)
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None, got {self.top_k!r}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p!r}")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be positive, got {self.repetition_penalty!r}"
            )
        # a list or tensor of ids becomes a tuple of ints, so the config stays immutable
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))


def _steps(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig,
    generator: torch.Generator | None,
    use_cache: bool,
) -> Iterator[torch.Tensor]:
    """Yield the next tokens (B,) one step at a time, the model in eval mode throughout."""
    block_size = model.config.block_size
    stops = torch.tensor(sampling.stop_tokens, dtype=torch.long, device=idx.device)
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)  # (B,)
    filler = torch.zeros_like(finished, dtype=torch.long)  # stop token each finished row ended on
    seq = idx  # (B, T + generated so far)
    with evaluating(model):
        cache = KVCache.for_model(model, idx.size(0)) if use_cache else None
        for _ in range(max_new_tokens):
            with torch.no_grad():  # per step, so the caller's code between yields keeps autograd
                if cache is None or cache.length >= block_size:  # no cache, or a full one
                    logits, _ = model(seq[:, -block_size:])  # (B, T', V)
                elif cache.length == 0:  # first step with a cache: the cropped prompt at once
                    logits, _ = model(seq[:, -block_size:], kv_cache=cache)  # (B, T', V)
                else:  # later steps: only the newest token goes through the network
                    logits, _ = model(seq[:, -1:], kv_cache=cache)  # (B, 1, V)
                logits = apply_repetition_penalty(
                    logits[:, -1, :].float(), seq, sampling.repetition_penalty
                )  # (B, V)
                nxt = sample_next(
                    logits, sampling.temperature, sampling.top_k, sampling.top_p, generator
                )  # (B,)
            nxt = torch.where(finished, filler, nxt)  # finished rows repeat their stop token
            hit = torch.isin(nxt, stops) & ~finished  # (B,)
            filler = torch.where(hit, nxt, filler)
            finished = finished | hit
            seq = torch.cat([seq, nxt[:, None]], dim=1)  # (B, T + 1)
            yield nxt
            if finished.all():
                return


def stream_batch(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Continue the prompts `idx` (B, T), yielding each step's new tokens (B,) as they are chosen.

    Args:
        model: a `gptlib.model.GPT`; it runs in eval mode and its mode is restored afterwards.
        idx: (B, T) prompt token ids; prompts longer than block_size are cropped on the left.
        max_new_tokens: the most steps; fewer when every row has reached a stop token.
        sampling: how to choose each token (`SamplingConfig`); the default samples at
            temperature 1 from the full distribution.
        generator: the `torch.Generator` that sampling draws from (None: torch's global one).
        use_cache: reuse keys and values with a `KVCache` (same tokens, much faster).
    Returns:
        an iterator of (B,) LongTensors, one per step.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    return _steps(model, idx, max_new_tokens, sampling, generator, use_cache)


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue the prompts `idx` (B, T) by up to max_new_tokens tokens.

    Args: as `stream_batch`.
    Returns:
        (B, T + n) LongTensor: the whole prompt followed by n <= max_new_tokens new tokens.

    >>> from gptlib.model import GPTConfig
    >>> model = GPT(GPTConfig.preset("tiny"))
    >>> generate(model, torch.tensor([[1, 2]]), 3, SamplingConfig(temperature=0)).shape
    torch.Size([1, 5])
    """
    steps = stream_batch(
        model, idx, max_new_tokens, sampling, generator=generator, use_cache=use_cache
    )
    new = list(steps)
    if not new:
        return idx
    return torch.cat([idx, torch.stack(new, dim=1)], dim=1)  # (B, T + n)


def stream(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[int]:
    """Yield new token ids one by one for a single prompt idx (1, T); arguments as `generate`.

    The tokens are those `generate` would return with the same arguments and generator state.
    """
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"stream() takes one prompt of shape (1, T), got {tuple(idx.shape)}")
    steps = stream_batch(
        model, idx, max_new_tokens, sampling, generator=generator, use_cache=use_cache
    )
    return (int(nxt.item()) for nxt in steps)


def decode_pieces(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Decode a stream of token ids into text pieces, never splitting a character.

    A byte-level token can end inside a multi-byte UTF-8 character ("é" is the bytes C3 A9), and
    decoding it gives the replacement character U+FFFD in its place. So a trailing U+FFFD is
    held back until the next tokens complete it; whatever is still held at the end is yielded
    as it is. For a tokenizer that decodes by joining its tokens' bytes (gptlib's BPE and
    character tokenizers) the pieces join to exactly ``tokenizer.decode(ids)``.

    >>> from gptlib.bpe import BPETokenizer  # untrained: one token per byte
    >>> list(decode_pieces(BPETokenizer(), "né€".encode()))
    ['n', 'é', '€']
    """
    held: list[int] = []  # the ids since the text last ended on a whole character
    shown = 0  # characters of tokenizer.decode(held) already yielded
    for token in ids:
        held.append(token)
        text = tokenizer.decode(held)
        whole = len(text.rstrip("\ufffd"))  # a trailing U+FFFD may be a character in transit
        if whole > shown:
            yield text[shown:whole]
            shown = whole
        if whole == len(text):
            held, shown = [], 0
    rest = tokenizer.decode(held)[shown:] if held else ""
    if rest:
        yield rest


def stream_text(
    model: GPT,
    tokenizer: Tokenizer,
    idx: torch.Tensor,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    *,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[str]:
    """Yield the text of the new tokens as they are sampled, for a single prompt idx (1, T).

    Args: as `generate`; `tokenizer` decodes the tokens (see `decode_pieces`).
    Returns:
        an iterator of str pieces; joined, they equal ``tokenizer.decode`` of the new tokens
        when the prompt ends on a character boundary (as ``tokenizer.encode(text)`` does).
    """
    tokens = stream(model, idx, max_new_tokens, sampling, generator=generator, use_cache=use_cache)
    return decode_pieces(tokenizer, tokens)


@torch.no_grad()
def sequence_log_prob(model: GPT, seq: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Sum of log p(token | tokens before it) over seq[:, prompt_len:]; seq (B, T) -> (B,)."""
    with evaluating(model):
        logits, _ = model(seq[:, :-1])  # (B, T-1, V): prediction for positions 1..T-1
    logp = F.log_softmax(logits.float(), dim=-1).gather(-1, seq[:, 1:, None])[..., 0]  # (B, T-1)
    return logp[:, prompt_len - 1 :].sum(dim=-1)  # (B,)


@torch.no_grad()
def beam_search(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    beam_size: int = 4,
    length_penalty: float = 1.0,
    stop_tokens: Sequence[int] = (),
) -> torch.Tensor:
    """The most probable continuation found by keeping `beam_size` candidates at every step.

    A candidate's score is its total log-probability; finished candidates (ending in a stop
    token, or reaching max_new_tokens) are compared by score / n ** length_penalty, n being the
    number of new tokens (Wu et al. 2016 use a similar normalisation), so length_penalty=0
    prefers short outputs and larger values longer ones. A candidate ending in a stop token is
    finished if it scores well enough to enter the beam (always, while the beam has room); the
    search ends when `beam_size` candidates are finished or after max_new_tokens steps.

    Args:
        idx: (1, T) one prompt; it is cropped on the left so that T + max_new_tokens fits in
            block_size (all steps use one KVCache, reordered as beams split and die).
    Returns:
        (1, T + n) LongTensor with the best candidate, n <= max_new_tokens.
    """
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"beam_search() takes one prompt of shape (1, T), got {tuple(idx.shape)}")
    if beam_size < 1 or max_new_tokens < 1:
        raise ValueError("beam_size and max_new_tokens must be at least 1")
    room = model.config.block_size - max_new_tokens  # prompt tokens the context can still hold
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for the prompt in "
            f"block_size={model.config.block_size}"
        )
    prompt = idx[:, -room:]  # (1, T')
    stops = torch.tensor(sorted(set(stop_tokens)), dtype=torch.long, device=idx.device)
    with evaluating(model):
        cache = KVCache.for_model(model, 1, max_len=prompt.size(1) + max_new_tokens)
        logits, _ = model(prompt, kv_cache=cache)  # (1, T', V)
        scores = torch.zeros(1, device=idx.device)  # (beams,) summed log-probs, one beam so far
        beams = idx.new_zeros(1, 0)  # (beams, n) new tokens of each beam
        finished: list[tuple[float, torch.Tensor]] = []  # (normalised score, new tokens)
        for step in range(max_new_tokens):
            cand = scores[:, None] + F.log_softmax(logits[:, -1, :].float(), dim=-1)  # (beams, V)
            alive = cand.index_fill(1, stops, float("-inf"))  # a stop token ends a beam instead
            top, flat = alive.view(-1).topk(min(beam_size, alive.numel()))  # (k,)
            keep = top.isfinite()  # a stop token (-inf) never continues a beam
            top, flat = top[keep], flat[keep]
            bar = top[-1] if top.numel() == beam_size else float("-inf")  # -inf: room left
            for b, s in (cand[:, stops] >= bar).nonzero().tolist():  # stop endings that enter
                score = cand[b, stops[s]].item() / (step + 1) ** length_penalty
                finished.append((score, torch.cat([beams[b], stops[s : s + 1]])))
            if len(finished) >= beam_size or top.numel() == 0:
                beams, scores = beams[:0], scores[:0]  # unfinished beams are not candidates
                break
            V = cand.size(-1)
            parent, token = flat // V, flat % V  # (k,) each
            beams = torch.cat([beams[parent], token[:, None]], dim=1)  # (k, n + 1)
            scores = top
            if step == max_new_tokens - 1:
                break  # the last tokens need no forward pass
            cache.reorder(parent)  # beam i continues the keys and values of its parent
            logits, _ = model(token[:, None], kv_cache=cache)  # (k, 1, V)
    n = beams.size(1)  # beams that reached max_new_tokens compete with the finished ones
    finished += [(s.item() / n**length_penalty, b) for s, b in zip(scores, beams, strict=True)]
    best = max(finished, key=lambda pair: pair[0])[1]  # (n,)
    return torch.cat([idx, best[None].to(idx)], dim=1)  # (1, T + n)
