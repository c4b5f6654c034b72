"""gptlib.data: train/validation splits, next-token batches, token files and the token cache.

Every input is synthetic and fixed (``torch.arange`` makes each token name its own position, so
a window's contents say where it was cut from); files live under ``tmp_path``.
"""

import json

import numpy as np
import pytest
import torch

from gptlib import data
from gptlib.tokenizer import CharTokenizer

# -- splits --------------------------------------------------------------------------------


def test_train_val_split_is_contiguous():
    train, val = data.train_val_split(torch.arange(100), val_fraction=0.1)
    assert len(train) == 90 and len(val) == 10
    assert torch.equal(torch.cat([train, val]), torch.arange(100))


def test_train_val_split_cuts_text_by_characters():
    """The command line splits the text before fitting a tokenizer: 20 characters -> 18 + 2."""
    assert data.train_val_split("abcdefghij" * 2, 0.1) == ("abcdefghijabcdefgh", "ij")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(torch.arange(100), val_fraction=fraction)


def test_train_val_split_too_short_names_sizes():
    with pytest.raises(ValueError, match="9 train / 1 validation"):
        data.train_val_split(torch.arange(10))
    with pytest.raises(ValueError, match="at least 9"):
        data.train_val_split(torch.arange(100), block_size=8, val_fraction=0.05)


# -- batches -------------------------------------------------------------------------------


def test_get_batch_rows_are_windows_and_targets_are_shifted():
    """With tokens = 100, 101, ..., row b must read s_b, s_b+1, ... and y = x + 1 everywhere."""
    tokens = torch.arange(100, 1100)
    x, y = data.get_batch(tokens, batch_size=4, block_size=8)
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.long
    starts = x[:, :1]  # (B, 1)
    assert torch.equal(x, starts + torch.arange(8)) and torch.equal(y, x + 1)
    assert bool(((starts >= 100) & (starts <= 1100 - 9)).all())


def test_get_batch_reaches_every_window():
    """N = T + 3 tokens hold exactly three windows (starts 0, 1, 2): all of them get drawn."""
    x, _ = data.get_batch(
        torch.arange(11), batch_size=200, block_size=8, generator=torch.Generator().manual_seed(0)
    )
    assert sorted(set(x[:, 0].tolist())) == [0, 1, 2]


def test_get_batch_generator_reproducible():
    tokens = torch.arange(500)
    a = data.get_batch(tokens, 3, 5, generator=torch.Generator().manual_seed(7))
    b = data.get_batch(tokens, 3, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_get_batch_uses_the_last_window():
    """With N = T + 1 there is exactly one window: the whole sequence."""
    x, y = data.get_batch(torch.arange(9), batch_size=2, block_size=8)
    assert torch.equal(x[0], torch.arange(8)) and torch.equal(y[1], torch.arange(1, 9))


@pytest.mark.parametrize("n", [0, 5, 8])
def test_get_batch_too_short_corpus(n):
    with pytest.raises(ValueError, match=f"block_size=8 tokens .* got {n}"):
        data.get_batch(torch.arange(n), batch_size=2, block_size=8)


def test_get_batch_rejects_2d_tokens_and_accepts_lists():
    with pytest.raises(ValueError, match="1-D"):
        data.get_batch(torch.zeros(4, 20, dtype=torch.long), 2, 4)
    x, y = data.get_batch(list(range(5)), 2, 4)
    assert x.tolist() == [[0, 1, 2, 3]] * 2 and y.tolist() == [[1, 2, 3, 4]] * 2


def test_get_batch_device_argument():
    x, y = data.get_batch(torch.arange(50), 2, 4, device="cpu")
    assert x.device.type == y.device.type == "cpu"


# -- token files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "top, dtype", [(65535, np.uint16), (65536, np.uint32), (2**32 - 1, np.uint32)]
)
def test_token_file_is_a_standard_npy(tmp_path, top, dtype):
    """uint16 while every id fits in 16 bits, else uint32; NumPy itself reads the file back."""
    ids = [0, 1, 2, top, 7, 3]
    path = data.write_token_file(ids, tmp_path / "ids.npy")
    stored = np.load(path)  # the oracle: plain NumPy, no memory map, no gptlib
    assert stored.dtype == dtype and stored.tolist() == ids
    tf = data.TokenFile(path)
    assert len(tf) == 6 and tf[1:4].tolist() == [1, 2, top] and tf[3].item() == top
    assert tf.to_tensor().dtype == torch.long and tf.to_tensor().tolist() == ids


def test_token_file_accepts_lists_tensors_and_empty(tmp_path):
    data.write_token_file([5, 6, 7], tmp_path / "a.npy")
    data.write_token_file(torch.tensor([5, 6, 7]), tmp_path / "b.npy")
    data.write_token_file([], tmp_path / "c.npy")
    assert data.TokenFile(tmp_path / "a.npy")[:].tolist() == [5, 6, 7]
    assert data.TokenFile(tmp_path / "b.npy")[:].tolist() == [5, 6, 7]
    assert len(data.TokenFile(tmp_path / "c.npy")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy", "c.npy"]  # no temps


def test_token_file_reads_any_1d_integer_npy(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([3, 1, 4, 1, 5], dtype=np.int64))
    assert data.TokenFile(tmp_path / "ids.npy")[:].tolist() == [3, 1, 4, 1, 5]


def test_token_file_rejects_bad_ids(tmp_path):
    with pytest.raises(ValueError, match="token ids must lie"):
        data.write_token_file([1, -2], tmp_path / "x.npy")
    with pytest.raises(ValueError, match="token ids must lie"):
        data.write_token_file([2**32], tmp_path / "x.npy")
    with pytest.raises(TypeError, match="integers"):
        data.write_token_file([1.5], tmp_path / "x.npy")
    assert list(tmp_path.iterdir()) == []


def test_get_batch_on_token_file_matches_tensor(tmp_path):
    ids = torch.randint(70000, (300,), generator=torch.Generator().manual_seed(0))
    tf = data.TokenFile(data.write_token_file(ids, tmp_path / "ids.npy"))
    a = data.get_batch(tf, 4, 16, generator=torch.Generator().manual_seed(3))
    b = data.get_batch(ids, 4, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    train, val = data.train_val_split(tf, 0.1)
    assert torch.equal(torch.cat([train, val]), ids)


def _cut(path, keep):
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: _cut(p, -3), "truncated"),  # the header promises 100 ids, fewer bytes follow
        (lambda p: _cut(p, 20), "truncated"),  # the header itself is cut
        (lambda p: _cut(p, 0), "truncated"),
        (lambda p: p.write_bytes(b"hello world" * 10), "not a token file"),
        (lambda p: np.save(p, np.zeros((2, 50), np.uint16)), "1-D array of integer ids"),
        (lambda p: np.save(p, np.zeros(100, np.float32)), "1-D array of integer ids"),
    ],
    ids=["data-cut", "header-cut", "empty", "foreign", "2-D", "float"],
)
def test_wrong_or_truncated_token_file(tmp_path, damage, message):
    path = data.write_token_file(list(range(100)), tmp_path / "ids.npy")
    damage(path)
    with pytest.raises(ValueError, match=message):
        data.TokenFile(path)


def test_missing_token_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no token file"):
        data.TokenFile(tmp_path / "nope.npy")


# -- the token cache -----------------------------------------------------------------------


@pytest.fixture
def encodes(monkeypatch):
    """The texts CharTokenizer.encode is called with, in order."""
    seen = []
    original = CharTokenizer.encode

    def spy(self, text):
        seen.append(text)
        return original(self, text)

    monkeypatch.setattr(CharTokenizer, "encode", spy)
    return seen


def test_cached_tokens_encodes_once(tmp_path, encodes):
    tok = CharTokenizer().train("abc")
    first = data.cached_tokens("abcabc", tok, tmp_path / "train.npy")
    assert first[:].tolist() == [0, 1, 2, 0, 1, 2] and encodes == ["abcabc"]
    again = data.cached_tokens("abcabc", tok, tmp_path / "train.npy")
    assert again[:].tolist() == [0, 1, 2, 0, 1, 2] and encodes == ["abcabc"]  # no second encode
    meta = json.loads((tmp_path / "train.json").read_text())
    assert (meta["tokens"], meta["chars"]) == (6, 6)


def test_cached_tokens_follow_the_text_and_the_tokenizer(tmp_path, encodes):
    path = tmp_path / "val.npy"
    data.cached_tokens("abc", CharTokenizer().train("abc"), path)
    assert data.cached_tokens("cab", CharTokenizer().train("abc"), path)[:].tolist() == [2, 0, 1]
    # a retrained tokenizer (one more character) encodes afresh, even where the ids agree
    assert data.cached_tokens("cab", CharTokenizer().train("abcd"), path)[:].tolist() == [2, 0, 1]
    assert data.cached_tokens("cb", CharTokenizer().train("bc"), path)[:].tolist() == [1, 0]
    assert encodes == ["abc", "cab", "cab", "cb"]


def test_cached_tokens_rebuild_a_damaged_file(tmp_path, encodes):
    tok, path = CharTokenizer().train("ab"), tmp_path / "train.npy"
    data.cached_tokens("abba" * 10, tok, path)
    path.write_bytes(path.read_bytes()[:-5])
    assert data.cached_tokens("abba" * 10, tok, path)[:4].tolist() == [0, 1, 1, 0]
    assert len(encodes) == 2


def test_cached_tokens_survive_a_crash_between_the_two_files(tmp_path, monkeypatch):
    """New ids written, key not yet: the old key must not vouch for the new file afterwards."""
    tok, path = CharTokenizer().train("ab"), tmp_path / "train.npy"
    data.cached_tokens("aaaa", tok, path)

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(data.json, "dump", disk_full)
        with pytest.raises(OSError, match="disk full"):
            data.cached_tokens("bbbb", tok, path)
    assert np.load(path).tolist() == [1, 1, 1, 1]  # the crash left the new ids behind
    assert data.cached_tokens("aaaa", tok, path)[:].tolist() == [0, 0, 0, 0]


# -- documents joined by a separator -------------------------------------------------------


def test_encode_documents_puts_the_separator_after_each_document():
    tok = CharTokenizer().train("abc")
    assert data.encode_documents(["ab", "", "ca"], tok, separator_id=2) == [0, 1, 2, 2, 2, 0, 2]
    assert data.encode_documents([], tok, separator_id=0) == []


def test_encode_documents_never_merges_across_a_boundary():
    """Joined text "ab" + "ba" gives "abba", whose BPE could merge the "bb" across the boundary;
    encoded document by document it cannot, and the special id sits between the two."""
    from gptlib.bpe import BPETokenizer

    eot = "<|endoftext|>"
    tok = BPETokenizer().train("abba abba abba abba", vocab_size=259, special_tokens=[eot])
    sep = tok.special_tokens[eot]
    ids = data.encode_documents(["ab", "ba"], tok, separator_id=sep)
    assert ids == tok.encode("ab") + [sep] + tok.encode("ba") + [sep]
    assert tok.decode(ids) == f"ab{eot}ba{eot}"
    assert ids.index(sep) == len(tok.encode("ab"))


@pytest.mark.parametrize("bad", [-1, 3])
def test_encode_documents_rejects_an_id_outside_the_vocabulary(bad):
    tok = CharTokenizer().train("abc")
    with pytest.raises(ValueError, match="not an id of this tokenizer"):
        data.encode_documents(["a"], tok, separator_id=bad)
