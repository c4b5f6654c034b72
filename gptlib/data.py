"""From token ids to training examples: train/validation splits, batches and token files.

Batches follow the usual language-model recipe: pick random start offsets ``s`` and return
``x = tokens[s : s+T]`` and ``y = tokens[s+1 : s+T+1]``, the targets being the inputs shifted by
one (legend: B batch, T time).

Token ids are kept on disk as standard NumPy ``.npy`` files (``uint16`` when every id is below
65536, else ``uint32``): :func:`write_token_file` writes one, :class:`TokenFile` memory-maps it
read-only, so a corpus larger than memory trains as well as a small one; :func:`cached_tokens`
encodes a text once and reuses the file while the text and the tokenizer stay the same.

Documents can be joined into one stream with a separator token between them, as GPT-2 does with
``<|endoftext|>``: :func:`encode_documents` encodes each document on its own and puts the
separator's id after each, so no token spans two documents and the model sees where one ends.

Getting the text (the Shakespeare download, your own file) is :mod:`gptlib.corpus`'s job; fitting
a tokenizer is :mod:`gptlib.tokenizer`'s and :mod:`gptlib.bpe`'s.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from gptlib.files import atomic_write
from gptlib.tokenizer import Tokenizer


def train_val_split(tokens, val_fraction: float = 0.1, block_size: int | None = None):
    """Split a sequence into its first ``1 - val_fraction`` (train) and the rest (validation).

    The split is contiguous, not shuffled: random windows from one text would put nearly the same
    lines on both sides and make validation look better than it is. Works on anything with
    ``len`` and slicing: a string, a list, a tensor, a :class:`TokenFile`.

    >>> train, val = train_val_split(torch.arange(20))
    >>> len(train), val
    (18, tensor([18, 19]))

    Raises:
        ValueError: ``val_fraction`` not in (0, 1), or a part shorter than 2 tokens (or, when
            ``block_size`` is given, not longer than ``block_size``, so get_batch could not use it).
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n = len(tokens)
    n_train = int(n * (1.0 - val_fraction))
    need = 2 if block_size is None else block_size + 1
    if min(n_train, n - n_train) < need:
        raise ValueError(
            f"corpus too short to split: {n} tokens with val_fraction={val_fraction} gives "
            f"{n_train} train / {n - n_train} validation tokens, each part needs at least {need}"
        )
    return tokens[:n_train], tokens[n_train:]


def encode_documents(
    documents: Iterable[str], tokenizer: Tokenizer, separator_id: int
) -> list[int]:
    """Encode each document on its own and end each one with ``separator_id``.

    The stream GPT-2 trains on: doc 1, ``<|endoftext|>``, doc 2, ``<|endoftext|>``, ... Encoding
    the documents one by one (rather than the joined string) means no token can straddle two
    documents, and the separator needs no string form in the text, so a document that happens to
    contain the text "<|endoftext|>" cannot fake a boundary.

    >>> from gptlib.tokenizer import CharTokenizer
    >>> tok = CharTokenizer().train("ab|")  # ids: a 0, b 1, | 2
    >>> ids = encode_documents(["ab", "ba"], tok, separator_id=2)
    >>> ids, tok.decode(ids)
    ([0, 1, 2, 1, 0, 2], 'ab|ba|')

    Args:
        documents: the texts, in order.
        tokenizer: any gptlib tokenizer.
        separator_id: the id that ends every document, usually a special token's id (for a
            ``BPETokenizer``, ``tok.special_tokens["<|endoftext|>"]``).
    Returns:
        The ids of all documents, each followed by ``separator_id``.
    Raises:
        ValueError: ``separator_id`` outside ``[0, tokenizer.vocab_size)``.
    """
    if not 0 <= separator_id < tokenizer.vocab_size:
        raise ValueError(
            f"separator_id {separator_id} is not an id of this tokenizer "
            f"(ids 0 to {tokenizer.vocab_size - 1})"
        )
    ids: list[int] = []
    for doc in documents:
        ids.extend(tokenizer.encode(doc))
        ids.append(separator_id)
    return ids


class TokenFile:
    """Token ids in a ``.npy`` file, memory-mapped read-only.

    ``len(tf)`` is the number of tokens; ``tf[i]``, ``tf[a:b]`` and ``tf[index_array]`` return
    long tensors, so a TokenFile stands in for a token tensor in :func:`get_batch` and
    :func:`train_val_split` while only the rows a batch needs are read from disk.

    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "ids.npy"
    >>> tf = TokenFile(write_token_file([3, 1, 4, 1, 5], path))
    >>> len(tf), tf[1:3], tf.ids.dtype
    (5, tensor([1, 4]), dtype('uint16'))

    Args:
        path: a ``.npy`` file, as :func:`write_token_file` writes (any 1-D integer array works).
    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a ``.npy`` file, is truncated, or does not hold a 1-D array
            of integers.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no token file at {self.path}")
        try:
            self.ids = np.load(self.path, mmap_mode="r")  # reads the header; checks the length
        except (ValueError, EOFError, OSError) as err:
            raise ValueError(
                f"{self.path} is not a token file (.npy), or it is truncated: {err}"
            ) from None
        if self.ids.ndim != 1 or self.ids.dtype.kind not in "iu":
            raise ValueError(
                f"{self.path} holds a {self.ids.dtype} array of shape "
                f"{self.ids.shape}; a token file holds a 1-D array of integer ids"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        return torch.from_numpy(np.array(self.ids[index], dtype=np.int64))  # a copy in memory

    def to_tensor(self) -> torch.Tensor:
        """All tokens as one 1-D long tensor (loads the whole file into memory)."""
        return self[:]

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, tokens={len(self)}, dtype={self.ids.dtype.name})"


def get_batch(
    tokens: torch.Tensor | TokenFile,
    batch_size: int,
    block_size: int,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample a batch of next-token examples.

    Args:
        tokens: 1-D tensor (or list) of ids, or a :class:`TokenFile`, of length N > ``block_size``.
        batch_size: B.
        block_size: T.
        generator: a ``torch.Generator`` for reproducible start offsets (global RNG if None).
        device: where x and y go (default: where ``tokens`` are, CPU for a TokenFile).

    Returns:
        ``(x, y)``, both (B, T) long tensors, with ``y[b, t] == tokens[s_b + t + 1]``.
    """
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    if not isinstance(tokens, TokenFile):
        tokens = torch.as_tensor(tokens)  # a tensor stays as it is; a list or array works too
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    if len(tokens) <= block_size:
        raise ValueError(
            f"need more than block_size={block_size} tokens to make one example, "
            f"got {len(tokens)}; use a longer text or a smaller block_size"
        )
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)  # (B,)
    idx = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1)
    if isinstance(tokens, torch.Tensor):
        idx = idx.to(tokens.device)
    chunk = tokens[idx].long()  # (B, T+1)
    # contiguous copies, so that x.view(-1) and y.view(-1) work as a reader expects
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()  # (B, T) each
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def write_token_file(ids, path: str | Path) -> Path:
    """Save token ids as a ``.npy`` file that :class:`TokenFile` memory-maps.

    Ids are stored as ``uint16`` when every id is below 65536 (half the disk of ``uint32``), else
    as ``uint32``. The write is atomic: a crash leaves the old file or none, never half a file.

    Args:
        ids: a 1-D sequence of non-negative integer ids (list, array or tensor).
        path: the file to write; by convention it ends in ``.npy``.
    Returns:
        ``path``.
    Raises:
        TypeError: the ids are not integers.  ValueError: an id outside ``[0, 2**32)``.
    """
    arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**32):
        raise ValueError(f"token ids must lie in [0, 2**32), got [{arr.min()}, {arr.max()}]")
    dtype = np.uint16 if arr.size == 0 or arr.max() < 2**16 else np.uint32
    with atomic_write(path) as f:
        np.save(f, arr.astype(dtype))
    return Path(path)


def cached_tokens(text: str, tokenizer: Tokenizer, path: str | Path) -> TokenFile:
    """``tokenizer.encode(text)`` as a :class:`TokenFile` at ``path``, encoded only once.

    Beside ``path`` (``train.npy``, say) a ``train.json`` records a key: the SHA-256 of the text
    and of the tokenizer's saved form. While both stay the same the file is reused; a new text,
    a retrained tokenizer or an unreadable file makes it encode and write afresh.

    Args:
        text: the text to encode.
        tokenizer: any gptlib tokenizer.
        path: the token file (by convention ``.npy``); the key goes to ``path`` with ``.json``.
    Returns:
        A TokenFile of ``len(tokenizer.encode(text))`` ids.
    """
    path, meta_path = Path(path), Path(path).with_suffix(".json")
    saved = {"type": tokenizer.type_name, **tokenizer.to_dict()}
    key = hashlib.sha256(text.encode("utf-8"))
    key.update(json.dumps(saved, sort_keys=True).encode("utf-8"))
    try:
        if json.loads(meta_path.read_text(encoding="utf-8"))["key"] == key.hexdigest():
            return TokenFile(path)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or one we cannot trust: encode afresh
    meta_path.unlink(missing_ok=True)  # a crash below must not leave an old key on new tokens
    tokens = TokenFile(write_token_file(tokenizer.encode(text), path))
    with atomic_write(meta_path, "w", encoding="utf-8") as f:
        json.dump({"key": key.hexdigest(), "tokens": len(tokens), "chars": len(text)}, f)
        f.write("\n")
    return tokens
