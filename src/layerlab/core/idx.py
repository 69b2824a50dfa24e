"""MNIST-format IDX files: read them (gzipped or not) and download them checked by SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from layerlab.core.atomic import current_umask

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")

SOURCES: dict[str, dict[str, object]] = {
    "mnist": {
        "mirrors": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
                    "https://storage.googleapis.com/cvdf-datasets/mnist/"],
        "sha256": {
            "train-images-idx3-ubyte.gz":
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train-labels-idx1-ubyte.gz":
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "t10k-images-idx3-ubyte.gz":
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "t10k-labels-idx1-ubyte.gz":
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    },
    "fashion-mnist": {
        "mirrors": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                    "data/fashion/"],
        "sha256": {
            "train-images-idx3-ubyte.gz":
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            "train-labels-idx1-ubyte.gz":
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            "t10k-images-idx3-ubyte.gz":
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            "t10k-labels-idx1-ubyte.gz":
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        },
    },
}

Progress = Callable[[str, int, int], None]  # file name, bytes so far, total bytes (0: unknown)


class IdxError(Exception):
    """A missing, corrupt or unverifiable IDX file; the message says what to do."""


def read_idx(path: Path) -> np.ndarray:
    """An IDX array of unsigned bytes, from a plain or gzipped file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise IdxError(f"{path} cannot be read: {exc}") from None
    if len(data) < 4 or data[0] or data[1] or data[2] != 0x08:
        raise IdxError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path} is truncated")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise IdxError(f"{path} is truncated or has extra bytes (header says "
                       f"{'×'.join(map(str, dims))})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def find_file(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_files(name: str, root: Path, download: bool, mirrors: list[str] | None = None,
                 checksums: dict[str, str] | None = None,
                 progress: Progress | None = None) -> dict[str, Path]:
    """The four IDX files of dataset `name` under `root`, downloading the missing ones."""
    source = SOURCES[name]
    mirrors = mirrors or list(source["mirrors"])  # type: ignore[arg-type]
    checksums = checksums or dict(source["sha256"])  # type: ignore[arg-type]
    found = {stem: find_file(root, stem) for stem in FILES}
    missing = [stem for stem, path in found.items() if path is None]
    if missing and not download:
        raise IdxError(_missing_message(name, root, missing))
    for stem in missing:
        try:
            found[stem] = _download(f"{stem}.gz", root, mirrors, checksums[f"{stem}.gz"],
                                    progress)
        except IdxError as exc:
            raise IdxError(f"{exc}. {_missing_message(name, root, missing)}") from None
    return {stem: path for stem, path in found.items() if path is not None}


def _missing_message(name: str, root: Path, missing: list[str]) -> str:
    return (f"{name} needs {', '.join(f'{m}.gz' for m in missing)} in {root} (gzipped or "
            "not); put them there, or go online so that LayerLab can download them")


def _download(filename: str, root: Path, mirrors: list[str], expected: str,
              progress: Progress | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    problems = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", dir=root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                done = 0
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(filename, done, total)
            actual = sha256_of(tmp)
            if actual != expected:
                problems.append(f"{url} gave a file with SHA-256 {actual}, expected {expected}")
                continue
            target = root / filename
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 is not the user's
            os.replace(tmp, target)
            return target
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            problems.append(f"{url}: {reason}")
        finally:
            tmp.unlink(missing_ok=True)
    raise IdxError(f"could not download {filename}: " + "; ".join(problems))
