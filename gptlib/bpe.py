"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2.

BPE (Sennrich et al., 2016) starts from a base alphabet and repeatedly merges the most frequent
pair of adjacent symbols into a new symbol; encoding replays the learned merges in the order they
were learned. GPT-2 (Radford et al., 2019, Sec. 2.2) runs BPE on the UTF-8 *bytes* of the text:
the 256 byte values are the base vocabulary, so every string can be encoded and no "unknown"
token is needed. Text is first cut into chunks (a word with its leading space, a number, a run of
punctuation, whitespace) by ``GPT2_SPLIT_PATTERN``, and merges never cross a chunk boundary.

Here: ``BPETokenizer`` (train, encode, decode, special tokens such as "<|endoftext|>", readable
JSON save/load), ``learn_merges``, ``merge_pair``; ``gptlib.pretrained.bpe_from_gpt2_files`` reads
the vocab.json + merges.txt of GPT-2 and Hugging Face ``tokenizers``. Unlike
``gptlib.tokenizer.CharTokenizer``, the vocabulary size is a choice, not a property of the text;
any text can be encoded; and a token covers several characters of English, so sequences are
shorter and a context reaches further.

Training is incremental: each distinct chunk is stored once with its count, pair counts live in a
dict beside an index pair -> chunks that hold it, and a merge rewrites only those chunks, so the
work per merge follows the number of symbols it changes, not the size of the corpus. The most
frequent pair comes off a heap; ties go to the pair with the smallest ids (first id, then second).
The plain algorithm, recounting every pair before each merge, is ``naive_merges`` in
``tests/test_bpe.py``, which checks that both learn the same merges.

Left out on purpose: BPE-dropout, normalisation, later models' split patterns (``pattern=`` takes
one) and compiled speed (``benchmarks/bench_bpe.py`` compares with Rust ``tokenizers``).

References:
    Sennrich, Haddow and Birch (2016). Neural Machine Translation of Rare Words with Subword
    Units. ACL. Sec. 3.2 and Algorithm 1.
    Radford, Wu, Child, Luan, Amodei and Sutskever (2019). Language Models are Unsupervised
    Multitask Learners. OpenAI. Sec. 2.2, Input Representation.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import regex

from gptlib.tokenizer import Tokenizer, as_token_ids

# The split rule of Radford et al. (2019, Sec. 2.2), as written in GPT-2's released encoder: no
# merges across character categories (letters, digits, other symbols), except that a word keeps
# one leading space; English contractions are chunks of their own; "\s+(?!\S)" leaves the last
# space of a run of spaces to the word that follows it.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)

Pair = tuple[int, int]
_CACHE_LIMIT = 100_000  # chunks whose encoding is remembered


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids`` by ``new_id``, left to right, no overlaps.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)
    [256, 97, 98]
    """
    out = []
    i, n = 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def learn_merges(
    words: list[list[int]], freqs: list[int], n_merges: int, first_id: int = 256
) -> list[tuple[Pair, int]]:
    """Learn up to ``n_merges`` BPE merges (Sennrich et al. 2016, Algorithm 1), incrementally.

    Args:
        words: the distinct chunks of a text, each a list of token ids (left unchanged).
        freqs: how often each chunk occurs in the text.
        n_merges: how many merges to learn; fewer if the words run out of pairs.
        first_id: id of the first merged token; merge ``r`` creates ``first_id + r``.
    Returns:
        [(pair, count), ...] in merge order, count being how often the pair occurred when merged.

    >>> learn_merges([list(b"aaabdaaabac")], [1], 3)  # Z=aa, then Y=ab (tie: 97<256), X=ZY
    [((97, 97), 4), ((97, 98), 2), ((256, 257), 2)]
    """
    words = [list(word) for word in words]
    pair_counts: dict[Pair, int] = defaultdict(int)  # occurrences in the text, by pair
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> words that (may) hold it
    for w, word in enumerate(words):
        for pair in pairwise(word):
            pair_counts[pair] += freqs[w]
            where[pair].add(w)
    # Max-heap by count via negation; equal counts pop the smallest pair: the tie-break.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[Pair, int]] = []
    while len(merges) < n_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:
            # A pair's count only falls after it was pushed, so the entry overstates it:
            # queue the true count again (or drop the pair once it is gone).
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        new_id = first_id + len(merges)
        merges.append((pair, count))
        new_pairs = set()
        for w in where.pop(pair):
            word, freq = words[w], freqs[w]
            merged = merge_pair(word, pair, new_id)
            if len(merged) == len(word):  # stale index entry: an earlier merge took the pair
                continue
            # Take away the word's old pairs, add its new ones: only this word is recounted.
            for old in pairwise(word):
                pair_counts[old] -= freq
            for new in pairwise(merged):
                pair_counts[new] += freq
                where[new].add(w)
                if new_id in new:
                    new_pairs.add(new)
            words[w] = merged
        for new in new_pairs:  # the only pairs whose count went up
            heapq.heappush(heap, (-pair_counts[new], new))
    return merges


class BPETokenizer(Tokenizer):
    """Byte-level BPE as in GPT-2. Untrained, it encodes each UTF-8 byte as its own token.

    >>> tok = BPETokenizer().train("aaabdaaabac", vocab_size=259)
    >>> tok.merges, tok.encode("aaabdaaabac"), tok.vocab[258]
    ([(97, 97), (97, 98), (256, 257)], [258, 100, 258, 97, 99], b'aaab')

    Attributes:
        merges: the merged pairs in rank order; ``merges[r]`` joins two token ids into one.
        vocab: token id -> the bytes it stands for (special tokens excluded).
        special_tokens: special token string -> id, e.g. {"<|endoftext|>": 4095}.
    """

    type_name = "bpe"

    def __init__(self, pattern: str = GPT2_SPLIT_PATTERN) -> None:
        self.pattern = pattern
        try:
            self._split = regex.compile(pattern)
        except regex.error as err:
            raise ValueError(f"the split pattern {pattern!r} is not a valid regex: {err}") from None
        self._set_state(list(range(256)), [], {})

    def _set_state(
        self,
        byte_ids: list[int],
        merges: list[tuple[int, int, int]],
        special_tokens: dict[str, int],
    ) -> None:
        """Install the id of each byte value, merges (a, b, new_id) by rank, special tokens."""
        if len(byte_ids) != 256 or len(set(byte_ids)) != 256:
            raise ValueError("byte_ids must give 256 distinct ids, one per byte value")
        vocab = {i: bytes([byte]) for byte, i in enumerate(byte_ids)}
        merged: dict[Pair, int] = {}  # pair -> id of the token it merges into
        for rank, (a, b, new_id) in enumerate(merges):
            if a not in vocab or b not in vocab or (a, b) in merged:
                raise ValueError(
                    f"merge {rank} ({a}, {b}) repeats a merge or uses an id that "
                    "no byte or earlier merge defines"
                )
            if vocab.setdefault(new_id, vocab[a] + vocab[b]) != vocab[a] + vocab[b]:
                raise ValueError(f"merge {rank} gives id {new_id}, which already means other bytes")
            if merged and new_id <= merges[rank - 1][2]:  # _encode_chunk relies on the order
                raise ValueError(
                    f"merge {rank} gives id {new_id}, not more than the merge before "
                    "it: merged ids must grow with the merge order"
                )
            merged[(a, b)] = new_id
        all_ids = [*vocab, *special_tokens.values()]
        if sorted(all_ids) != list(range(len(all_ids))):
            raise ValueError("token ids must be 0, 1, ..., vocab_size - 1, each used once")
        self._byte_ids, self._merged = list(byte_ids), merged
        self.merges: list[Pair] = [(a, b) for a, b, _ in merges]
        self.vocab = vocab
        self.special_tokens = dict(special_tokens)
        self._id_to_bytes = {**vocab, **{i: t.encode() for t, i in special_tokens.items()}}
        self._special_split = _alternation(special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self._id_to_bytes)

    def _chunks(self, text: str) -> list[str]:
        chunks = self._split.findall(text)
        if sum(map(len, chunks)) != len(text):
            raise ValueError(
                f"the split pattern {self.pattern!r} skips some characters of the "
                "text; a pattern must match every character (GPT-2's does)"
            )
        return chunks

    def train(
        self,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] | None = None,
        verbose: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        Args:
            text: training text; special tokens in it are cut out, never learned from.
            vocab_size: total vocabulary: 256 bytes + merges + special tokens (ids last).
            special_tokens: strings such as "<|endoftext|>", each given its own id.
            verbose: print about twenty of the merges, with their counts.
        Returns:
            self. Warns if the text runs out of pairs before reaching ``vocab_size``.
        """
        special_tokens = list(dict.fromkeys(special_tokens or []))
        if not all(isinstance(token, str) and token for token in special_tokens):
            raise ValueError(f"special tokens must be non-empty strings, got {special_tokens}")
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the 256 byte tokens and "
                f"{len(special_tokens)} special tokens need {-n_merges} more"
            )
        if not text:
            raise ValueError("cannot train a tokenizer on empty text")
        splitter = _alternation(special_tokens)
        parts = splitter.split(text) if splitter else [text]
        chunk_counts = Counter(chunk for part in parts for chunk in self._chunks(part))
        learned = learn_merges(
            [list(chunk.encode("utf-8")) for chunk in chunk_counts],
            list(chunk_counts.values()),
            n_merges,
        )
        if len(learned) < n_merges:
            warnings.warn(
                f"the text only allows {len(learned)} merges, so the vocabulary has "
                f"{256 + len(learned) + len(special_tokens)} tokens, not {vocab_size}",
                stacklevel=2,
            )
        merges = [(a, b, 256 + rank) for rank, ((a, b), _) in enumerate(learned)]
        first_special = 256 + len(merges)
        self._set_state(
            list(range(256)),
            merges,
            {token: first_special + k for k, token in enumerate(special_tokens)},
        )
        for rank, (pair, count) in enumerate(learned if verbose else []):
            if rank % max(1, len(learned) // 20) == 0 or rank == len(learned) - 1:
                print(
                    f"merge {rank + 1}/{len(learned)}: {pair} -> {256 + rank} "
                    f"{readable_bytes(self.vocab[256 + rank])!r} ({count} occurrences)"
                )
        return self

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none") -> list[int]:
        """Text -> token ids.

        Args:
            text: any string of Unicode characters.
            allowed_special: what to do with special-token strings found in ``text``:
                "none" raises ValueError (a user's text must not inject "<|endoftext|>"),
                "all" or a set of names encodes those as their special ids (others still raise),
                "plain" encodes them as ordinary text, like any other characters.
        """
        allowed = self._allowed(allowed_special)
        ids: list[int] = []
        start = 0
        if self._special_split is not None and allowed_special != "plain":
            for match in self._special_split.finditer(text):
                token = match.group()
                if token not in allowed:
                    raise ValueError(
                        f"the text holds the special token {token!r} at position {match.start()}"
                        f"; pass allowed_special='all' (or a set holding it) to encode it as id "
                        f"{self.special_tokens[token]}, or allowed_special='plain' to encode it "
                        "as ordinary text"
                    )
                self._encode_ordinary(text[start : match.start()], ids)
                ids.append(self.special_tokens[token])
                start = match.end()
        self._encode_ordinary(text[start:], ids)
        return ids

    def _allowed(self, allowed_special: str | Iterable[str]) -> set[str]:
        if allowed_special in ("none", "plain"):
            return set()
        if allowed_special == "all":
            return set(self.special_tokens)
        if isinstance(allowed_special, str) or set(allowed_special) - set(self.special_tokens):
            raise ValueError(
                f"allowed_special must be 'none', 'all', 'plain' or a set of this "
                f"tokenizer's special tokens {sorted(self.special_tokens)}, "
                f"got {allowed_special!r}"
            )
        return set(allowed_special)

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        for chunk in self._chunks(text):
            ids = self._cache.get(chunk)
            if ids is None:
                # A lone surrogate such as "\ud800" has no UTF-8 form: UnicodeEncodeError here.
                ids = self._encode_chunk(chunk.encode("utf-8"))
                if len(self._cache) < _CACHE_LIMIT:
                    self._cache[chunk] = ids
            out.extend(ids)

    def _encode_chunk(self, data: bytes) -> list[int]:
        ids = [self._byte_ids[byte] for byte in data]  # ids[i] == data[i] unless GPT-2's files
        merged = self._merged
        while len(ids) > 1:
            # Replay merges in the order they were learned (Sennrich et al. 2016, Sec. 3.2): the
            # adjacent pair merged earliest, whose new id is smallest, goes first.
            pair = min(pairwise(ids), key=lambda p: merged.get(p, math.inf))
            if pair not in merged:  # no adjacent pair was ever merged
                break
            ids = merge_pair(ids, pair, merged[pair])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text. Ids that stop inside a multi-byte character leave U+FFFD (the
        replacement character) in its place, as GPT-2 does; ``vocab[i]`` shows the raw bytes."""
        try:
            data = b"".join([self._id_to_bytes[i] for i in as_token_ids(ids)])
        except KeyError as err:
            raise ValueError(
                f"token id {err.args[0]} is not in the vocabulary (ids 0 to {self.vocab_size - 1})"
            ) from None
        return data.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {
            "pattern": self.pattern,
            "byte_ids": self._byte_ids,  # id of byte value 0, 1, ..., 255
            "merges": [[a, b, self._merged[(a, b)]] for a, b in self.merges],  # [a, b, new]
            "special_tokens": self.special_tokens,
            # For people reading the file; checked against the merges on load.
            "vocab": {str(i): readable_bytes(self.vocab[i]) for i in sorted(self.vocab)},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        tok = cls(data["pattern"])
        merges = [tuple(m) for m in data["merges"]]
        if any(len(m) != 3 or not all(isinstance(i, int) for i in m) for m in merges):
            raise ValueError('each entry of "merges" must be [id_a, id_b, merged_id]')
        tok._set_state(data["byte_ids"], merges, data["special_tokens"])
        for key, shown in data.get("vocab", {}).items():
            actual = tok.vocab.get(int(key))
            if actual is None or readable_bytes(actual) != shown:
                raise ValueError(
                    f'"vocab" says token {key} is {shown!r}, but the merges make it '
                    f"{None if actual is None else readable_bytes(actual)!r}"
                )
        return tok


def _alternation(tokens: Iterable[str]) -> regex.Pattern | None:
    """A regex matching any of ``tokens``, longest first so no token cuts a longer one short."""
    tokens = sorted(tokens, key=len, reverse=True)
    return regex.compile("|".join(map(regex.escape, tokens))) if tokens else None


def readable_bytes(data: bytes) -> str:
    """Show token bytes as text; bytes that are not complete UTF-8 characters appear as \\xNN.

    >>> readable_bytes(b" the"), readable_bytes("é".encode()[:1])
    (' the', '\\\\xc3')
    """
    return data.decode("utf-8", errors="backslashreplace")
