"""Tokenizers: the interface every gptlib tokenizer follows, and the simplest tokenizer.

A tokenizer turns text into a list of integer ids (``encode``) and ids back into text
(``decode``); the model only ever sees the ids. This module holds:

- ``Tokenizer``: the abstract interface (train / encode / decode / save / load / vocab_size);
- ``CharTokenizer``: one token per character, the vocabulary being the sorted set of characters
  of the training text. Every id is easy to read and the vocabulary is tiny, but a text with a
  character never seen in training cannot be encoded, and sequences are as long as the text;
- ``load_tokenizer(path)``: opens any saved gptlib tokenizer, whatever its type;
- ``TokenizerFileError``: raised for a garbled, truncated or tampered tokenizer file.

``gptlib.bpe`` builds on this interface with the byte-level BPE tokenizer of GPT-2, which can
encode any text and needs fewer tokens for the same text (about a third as many on Shakespeare
with a 4,096-token vocabulary).

Left out on purpose: normalisation (lower-casing, Unicode NFC), an "unknown" token (it would hide
bad input; we raise an error that names the character instead), batching and padding.

Saved files are JSON meant to be read by people: a "type" field ("char", "bpe"), a format
"version", then the tokenizer's own fields, one vocabulary entry per line.
"""

from __future__ import annotations

import json
import operator
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gptlib.files import atomic_write

FORMAT_VERSION = 1


class TokenizerFileError(ValueError):
    """A tokenizer file that is not JSON, misses a field, or contradicts itself."""


def as_token_ids(ids: Iterable[int]) -> list[int]:
    """Return ``ids`` (a list, tuple, 1-D tensor or array of integers) as a list of ints.

    >>> as_token_ids((3, 1, 2))
    [3, 1, 2]
    """
    ids = list(ids.tolist() if hasattr(ids, "tolist") else ids)  # tensors, numpy arrays
    try:
        return [operator.index(i) for i in ids]
    except TypeError:
        bad = next(i for i in ids if not hasattr(i, "__index__"))
        raise TypeError(
            f"token ids must be integers (a list or a 1-D tensor of them), got {bad!r}"
        ) from None


def describe_char(char: str) -> str:
    """Show a character so that invisible ones can be told apart.

    >>> describe_char("é")
    "'é' (U+00E9)"
    """
    return f"{char!r} (U+{ord(char):04X})"


_TYPES: dict[str, type[Tokenizer]] = {}  # "type" field -> class, filled by subclassing


class Tokenizer(ABC):
    """Maps text to a list of token ids and back.

    Subclasses set ``type_name`` (the "type" field of their saved files) and implement
    ``train``, ``encode``, ``decode``, ``vocab_size``, ``to_dict`` and ``from_dict``; saving and
    loading files is shared.
    """

    type_name: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register each concrete tokenizer under its ``type_name`` for ``load_tokenizer``.

        A registry instead of an import: ``gptlib.bpe`` subclasses ``Tokenizer``, so this module
        must not import it back. Importing ``gptlib`` imports ``gptlib.bpe``, which registers it.
        """
        super().__init_subclass__(**kwargs)
        if cls.type_name:
            _TYPES[cls.type_name] = cls

    @abstractmethod
    def train(self, text: str, vocab_size: int | None = None) -> Tokenizer:
        """Learn the vocabulary from ``text``, replacing any earlier one; returns ``self``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> token ids; raises ValueError for text this tokenizer cannot represent."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; raises ValueError for an id outside the vocabulary."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids; ids run from 0 to vocab_size - 1."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The fields saved to JSON beside "type" and "version"."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        """Rebuild a tokenizer from ``to_dict()``'s fields; ValueError if they are inconsistent."""

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as readable JSON; the file is replaced atomically."""
        data = {"type": self.type_name, "version": FORMAT_VERSION, **self.to_dict()}
        text = _readable_json(data)
        with atomic_write(path, "w", encoding="utf-8") as f:  # never a half-written file
            f.write(text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        """Read a file written by ``save``. ``Tokenizer.load`` accepts any type of tokenizer."""
        if cls is Tokenizer:
            return load_tokenizer(path)
        data = _read_tokenizer_json(path)
        if data["type"] != cls.type_name:
            raise TokenizerFileError(
                f"{path} holds a {data['type']!r} tokenizer, not a {cls.type_name!r} one; "
                "load_tokenizer(path) opens either kind"
            )
        try:
            return cls.from_dict(data)
        except KeyError as err:
            raise TokenizerFileError(f"{path}: the field {err} is missing") from None
        except (AttributeError, TypeError, ValueError) as err:
            raise TokenizerFileError(f"{path} is not a valid tokenizer file: {err}") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character; the vocabulary is the sorted set of the training text's characters.

    >>> tok = CharTokenizer().train("hello")
    >>> tok.chars, tok.encode("hell"), tok.decode([3, 1])
    (['e', 'h', 'l', 'o'], [1, 0, 2, 2], 'oh')
    """

    type_name = "char"

    def __init__(self, chars: Iterable[str] = ()) -> None:
        self._set_chars(list(chars))

    def _set_chars(self, chars: list[str]) -> None:
        for char in chars:
            if not isinstance(char, str) or len(char) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {char!r}")
        self.chars = chars  # id -> character
        self._ids = {char: i for i, char in enumerate(chars)}  # character -> id
        if len(self._ids) != len(chars):
            raise ValueError("the vocabulary lists a character twice")

    def train(self, text: str, vocab_size: int | None = None) -> CharTokenizer:
        """Take every distinct character of ``text``, sorted by code point, as the vocabulary.

        Args:
            text: training text (not empty).
            vocab_size: leave as None; if given, it must equal the number of distinct characters,
                since a character vocabulary is fixed by the text, not chosen.
        """
        if not text:
            raise ValueError("cannot train a tokenizer on empty text")
        chars = sorted(set(text))
        if vocab_size is not None and vocab_size != len(chars):
            raise ValueError(
                f"the text has {len(chars)} distinct characters, so a character tokenizer has "
                f"{len(chars)} tokens, not vocab_size={vocab_size}; leave vocab_size as None"
            )
        self._set_chars(chars)
        return self

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[char] for char in text]
        except KeyError:
            pos = next(i for i, char in enumerate(text) if char not in self._ids)
            raise ValueError(
                f"character {describe_char(text[pos])} at position {pos} is not in the "
                f"vocabulary of {self.vocab_size} characters"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        ids = as_token_ids(ids)
        bad = next((i for i in ids if not 0 <= i < len(self.chars)), None)
        if bad is not None:
            raise ValueError(
                f"token id {bad} is not in the vocabulary (ids 0 to {len(self.chars) - 1})"
            )
        return "".join([self.chars[i] for i in ids])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def to_dict(self) -> dict[str, Any]:
        return {"chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CharTokenizer:
        if not isinstance(data["chars"], list):
            raise ValueError('"chars" must be a list of characters')
        return cls(data["chars"])


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Open a saved tokenizer of any type, choosing the class from the file's "type" field."""
    kind = _read_tokenizer_json(path)["type"]
    if kind not in _TYPES:
        raise TokenizerFileError(
            f"{path} has tokenizer type {kind!r}; gptlib knows {sorted(_TYPES)}"
        )
    return _TYPES[kind].load(path)


def _read_tokenizer_json(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer file at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TokenizerFileError(f"{path} is not UTF-8 text, so not a tokenizer file") from None
    except json.JSONDecodeError as err:
        raise TokenizerFileError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
            "was it truncated or edited by hand?"
        ) from None
    if not isinstance(data, dict) or "type" not in data:
        raise TokenizerFileError(f'{path} has no "type" field, so it is not a tokenizer file')
    if data.get("version") != FORMAT_VERSION:
        raise TokenizerFileError(
            f"{path} has format version {data.get('version')!r}; this gptlib reads version "
            f"{FORMAT_VERSION}"
        )
    return data


def _readable_json(data: dict[str, Any]) -> str:
    """JSON with one field per line and one entry per line inside lists of lists and dicts."""

    def compact(value: Any) -> str:
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate has no UTF-8 form: write it as \\udxxx
            text = json.dumps(value)
        return text

    fields = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"    {compact(k)}: {compact(v)}" for k, v in value.items())
            value_text = "{\n" + inner + "\n  }"
        elif isinstance(value, list) and value and isinstance(value[0], (list, str)):
            value_text = "[\n" + ",\n".join(f"    {compact(v)}" for v in value) + "\n  ]"
        else:
            value_text = compact(value)
        fields.append(f"  {compact(key)}: {value_text}")
    return "{\n" + ",\n".join(fields) + "\n}\n"
