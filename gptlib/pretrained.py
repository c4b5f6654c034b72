"""Conversion between gptlib's GPT and Hugging Face `transformers` GPT-2 models.

Because gptlib uses GPT-2's parameter names, a conversion is a short loop: strip or add the
"transformer." prefix, and transpose four weight matrices. Those four (attn.c_attn, attn.c_proj,
mlp.c_fc, mlp.c_proj) are stored by OpenAI's GPT-2 code, and so by Hugging Face, as a "Conv1D"
whose weight is (in_features, out_features), the transpose of `nn.Linear`'s (out, in).

`transformers` is not a dependency of gptlib: the state-dict functions need only torch, and the
model functions import `transformers` when they are called. Nothing here downloads weights; to
use released GPT-2 weights, load them with `transformers` yourself, then call `from_hf_model`.
``bpe_from_gpt2_files`` reads a tokenizer saved in GPT-2's vocab.json + merges.txt format (as
Hugging Face tokenizers also writes it) into a ``gptlib.bpe.BPETokenizer``.
Left out: other architectures (GPT-Neo, LLaMA).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from gptlib.bpe import GPT2_SPLIT_PATTERN, BPETokenizer
from gptlib.model import GPT, GPTConfig
from gptlib.tokenizer import TokenizerFileError

# weights that are Conv1D (in, out) in Hugging Face GPT-2 and nn.Linear (out, in) in gptlib
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# buffers that some transformers versions keep in the state dict; they hold no learned values
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_LAYER_NORM_EPS = 1e-5  # torch's nn.LayerNorm default, used by gptlib and by GPT-2


def hf_to_gptlib(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and transpose a Hugging Face GPT2LMHeadModel (or GPT2Model) state dict."""
    out = {}
    for key, value in state_dict.items():
        name = key.removeprefix("transformer.")
        if name.endswith(_BUFFERS):
            continue
        out[name] = value.t() if name.endswith(_TRANSPOSED) else value  # (in, out) -> (out, in)
    out.setdefault("lm_head.weight", out["wte.weight"])  # tied (Press & Wolf 2017)
    return out


def gptlib_to_hf(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `hf_to_gptlib`: keys and layouts of Hugging Face GPT2LMHeadModel."""
    out = {}
    for name, value in state_dict.items():
        key = name if name.startswith("lm_head.") else "transformer." + name
        out[key] = value.t() if name.endswith(_TRANSPOSED) else value  # (out, in) -> (in, out)
    return out


def config_from_hf(hf_config: Any) -> GPTConfig:
    """The GPTConfig of a `transformers.GPT2Config`; raises ValueError on features gptlib lacks."""
    act = hf_config.activation_function
    problems = []
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={act!r} (gptlib uses the tanh GELU, 'gelu_new')")
    if abs(hf_config.layer_norm_epsilon - _LAYER_NORM_EPS) > 1e-12:
        problems.append(f"layer_norm_epsilon={hf_config.layer_norm_epsilon} (gptlib uses 1e-5)")
    if hf_config.n_inner not in (None, 4 * hf_config.n_embd):
        problems.append(f"n_inner={hf_config.n_inner} (gptlib uses 4 * n_embd)")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False (gptlib ties lm_head to wte)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if getattr(hf_config, flag, False):
            problems.append(f"{flag}=True")
    if not getattr(hf_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False (gptlib divides by sqrt(head size))")
    if problems:
        raise ValueError(
            "this GPT-2 config uses features gptlib does not have: " + "; ".join(problems)
        )
    return GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=hf_config.resid_pdrop,  # gptlib has one dropout rate for all places
        bias=True,
    )


def from_hf_model(hf_model: Any) -> GPT:
    """A gptlib GPT with the weights of a `transformers` GPT2LMHeadModel, on the same device."""
    p = next(hf_model.parameters())
    model = GPT(config_from_hf(hf_model.config)).to(device=p.device, dtype=p.dtype)
    model.load_state_dict(hf_to_gptlib(hf_model.state_dict()))
    return model.train(hf_model.training)


def to_hf_model(model: GPT) -> Any:
    """A `transformers` GPT2LMHeadModel with the weights of a gptlib GPT (needs transformers)."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError as e:
        raise ImportError(
            "to_hf_model needs the `transformers` package, which gptlib does not install: "
            "pip install transformers"
        ) from e
    c = model.config
    if not c.bias:
        raise ValueError("Hugging Face GPT-2 has biases; a GPT with bias=False cannot be converted")
    hf_config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=_LAYER_NORM_EPS,
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    p = next(model.parameters())
    hf_model = GPT2LMHeadModel(hf_config).to(device=p.device, dtype=p.dtype)
    missing, unexpected = hf_model.load_state_dict(gptlib_to_hf(model.state_dict()), strict=False)
    missing = [k for k in missing if not k.endswith(_BUFFERS)]
    if missing or unexpected:
        raise ValueError(f"state dicts do not match: missing {missing}, unexpected {unexpected}")
    return hf_model.train(model.training)


def gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2's table from byte values to printable characters, used to spell tokens in files.

    Bytes that are printable Latin-1 characters stand for themselves; the 68 others (control
    characters, space, and a few more) take the code points 256, 257, ... in byte order.

    >>> table = gpt2_byte_to_unicode()
    >>> table[ord("a")], table[ord(" ")], table[ord("\\n")]
    ('a', 'Ġ', 'Ċ')
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + k) for k, byte in enumerate(others)})
    return dict(sorted(table.items()))


def bpe_from_gpt2_files(
    vocab_json_path: str | os.PathLike,
    merges_txt_path: str | os.PathLike,
    pattern: str = GPT2_SPLIT_PATTERN,
) -> BPETokenizer:
    """Load a tokenizer saved in GPT-2's format, as also written by Hugging Face tokenizers.

    vocab.json maps token strings to ids (in any order); merges.txt lists one merge per line,
    "left right", in rank order. Token strings spell bytes through ``gpt2_byte_to_unicode``.
    Entries of vocab.json that are neither a byte nor the result of a merge (such as GPT-2's
    "<|endoftext|>") become special tokens.

    Raises:
        TokenizerFileError: the files are not a consistent GPT-2 vocabulary and merge list.
    """
    try:
        vocab = json.loads(Path(vocab_json_path).read_text(encoding="utf-8"))
        byte_ids = [vocab[char] for char in gpt2_byte_to_unicode().values()]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise TokenizerFileError(
            f"{vocab_json_path} is not a GPT-2 vocab.json mapping all "
            f"256 byte characters to ids ({err!r})"
        ) from None
    merges = []
    lines = Path(merges_txt_path).read_text(encoding="utf-8").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line or line.startswith("#version"):
            continue
        left, _, right = line.partition(" ")
        if left not in vocab or right not in vocab or left + right not in vocab:
            raise TokenizerFileError(
                f"{merges_txt_path}, line {line_no}: {line!r} is not a "
                "merge of two tokens of vocab.json into a third"
            )
        merges.append([vocab[left], vocab[right], vocab[left + right]])
    regular = set(byte_ids) | {new_id for _, _, new_id in merges}
    special = {token: i for token, i in vocab.items() if i not in regular}
    state = {"pattern": pattern, "byte_ids": byte_ids, "merges": merges, "special_tokens": special}
    try:
        return BPETokenizer.from_dict(state)
    except ValueError as err:
        raise TokenizerFileError(f"{vocab_json_path} and {merges_txt_path}: {err}") from None
