"""Official files: looked up in the data folders (`pipeline.core.env.data_dirs()`: $GANLAB_DATA_DIRS,
data/raw/, /usr/share/datasets/), directly or in a per-source sub-folder, downloaded from their
official URL only when no copy exists (never with GANLAB_OFFLINE=1), and checked against the
official checksum of their decoded content where known (the decompressed bytes of a .gz, so
Debian's re-compressed Fashion-MNIST passes), of the published file otherwise. A mismatch is an
error naming the file and both hashes."""
from __future__ import annotations

import gzip
import hashlib
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from pipeline.core.env import DATA_DIRS_ENV, OFFLINE_ENV, RAW_DIR, data_dirs, offline
from pipeline.core.errors import DataError
from pipeline.core.layout import atomic_write


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it comes from and what it must contain."""

    name: str
    urls: tuple[str, ...]
    md5: str | None  # of the file as published
    content_md5: str | None = None  # of its decompressed bytes (.gz): survives re-compression

    def decode(self, raw: bytes) -> bytes:
        return gzip.decompress(raw) if self.name.endswith(".gz") else raw

    def check(self, path: Path) -> bytes:
        """The file's decoded bytes, or DataError naming the file and both hashes."""
        raw = path.read_bytes()
        try:
            content = self.decode(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: cannot be decompressed ({exc}); delete it or replace it with the file from {self.urls[0]}")
        if self.content_md5:
            kind, expected, actual = "decompressed content", self.content_md5, md5(content)
        else:
            kind, expected, actual = "file", self.md5, md5(raw)
        if expected and actual != expected:
            raise DataError(f"{path}: md5 of the {kind} is {actual}, expected {expected} (corrupt or a different file)")
        return content


def md5(blob: bytes) -> str:
    return hashlib.md5(blob).hexdigest()


def candidate_paths(folders: tuple[str, ...], name: str) -> list[Path]:
    """Every place a file may already be: each data folder, its per-source sub-folders first."""
    return [d / sub / name for d in data_dirs() for sub in (*folders, "")]


def fetch(file: RemoteFile, folders: tuple[str, ...], also: str = "") -> bytes:
    """Decoded, verified bytes of `file`: the first local copy that checks out, else a download.
    `also`: other ways to provide it, for the error message."""
    return _first_verified(file, folders, file.check, also)


def fetch_path(file: RemoteFile, folders: tuple[str, ...]) -> Path:
    """Path of a verified copy of `file`, hashed in chunks: for archives too large to hold in memory."""

    def check(path: Path) -> Path:
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 24):
                digest.update(chunk)
        if digest.hexdigest() != file.md5:
            raise DataError(f"{path}: md5 of the file is {digest.hexdigest()}, expected {file.md5} (corrupt or a different file)")
        return path

    return _first_verified(file, folders, check)


def _first_verified(file: RemoteFile, folders: tuple[str, ...], check: Callable, also: str = ""):
    failures = []
    tried = list(dict.fromkeys(candidate_paths(folders, file.name)))
    for path in tried:
        if path.is_file():
            try:
                verified = check(path)
            except DataError as exc:
                failures.append(str(exc))
                continue
            for failure in failures:  # the content used is the verified one, but say what was passed over
                print(f"ganlab: warning: skipped a bad copy, using {path} instead: {failure}", file=sys.stderr)
            return verified
    if failures:  # copies exist but none is right: say so rather than silently downloading over them
        raise DataError("\n".join(failures))
    looked = "\n".join(f"    {p}" for p in tried)
    get = (f"download {file.urls[0]} into {RAW_DIR / folders[0]}/ (or into a folder listed in ${DATA_DIRS_ENV})"
           f"{also}")
    if offline():
        raise DataError(f"{file.name} not found, and downloads are off ({OFFLINE_ENV}=1). Looked in:\n{looked}\n"
                        f"  To get it: {get}, or run without {OFFLINE_ENV}=1 to download it.")
    try:
        return check(download(file, RAW_DIR / folders[0]))
    except DataError as exc:
        raise DataError(f"{exc}\n  Not found locally either; looked in:\n{looked}\n  To get it: {get}.") from None


def _fetch(url: str, path: Path, name: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {name}") as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))


def download(file: RemoteFile, folder: Path) -> Path:
    """Download to folder/name (atomically), trying each mirror; returns the final path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / file.name
    errors = []
    for url in file.urls:
        try:
            atomic_write(target, lambda tmp: _fetch(url, tmp, file.name))
            return target
        except OSError as exc:
            errors.append(f"{url}: {exc}")
    raise DataError(f"could not download {file.name} (put it in {folder} by hand):\n  " + "\n  ".join(errors))


