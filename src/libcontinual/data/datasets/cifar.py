"""CIFAR-10 and CIFAR-100 from the official python archives, extracted or not.

``data_root`` may be the extracted folder (``cifar-10-batches-py/``), the folder holding it or the
``.tar.gz``, or the ``.tar.gz`` itself. The pickles are read with an unpickler that accepts only
numpy arrays and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from libcontinual.data.datasets.common import check_image_size, require_data_root
from libcontinual.data.datasets.download import download_file
from libcontinual.data.datasets.imaging import resize_images
from libcontinual.data.types import ClassificationData
from libcontinual.errors import DataError
from libcontinual.registry import register_dataset

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

logger = logging.getLogger(__name__)

_PICKLE_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how Python 3 writes bytes in protocol 2
}
for _module in ("numpy.core", "numpy._core"):
    _PICKLE_GLOBALS[(f"{_module}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _PICKLE_GLOBALS[(f"{_module}.multiarray", "scalar")] = _multiarray.scalar
    _PICKLE_GLOBALS[(f"{_module}.numeric", "_frombuffer")] = _numeric._frombuffer


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its pickles and which keys hold labels and names."""

    title: str
    folder: str
    archive: str
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)


CIFAR10 = CifarFormat(
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    train_files=tuple(f"data_batch_{index}" for index in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
)
CIFAR100 = CifarFormat(
    title="CIFAR-100",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
)


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the numpy globals an array needs; any other global is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return _PICKLE_GLOBALS[(module, name)]


def _unpickle(data: bytes, where: str) -> dict:
    try:
        content = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a damaged pickle can raise almost anything
        raise DataError(
            f"{where} is not a readable CIFAR pickle ({type(error).__name__}: {error}); "
            f"delete it and download the official archive again."
        ) from error
    if not isinstance(content, dict):
        raise DataError(f"{where}: expected a pickled dict, got {type(content).__name__}")
    return content


def _find_folder(fmt: CifarFormat, root: Path) -> Path | None:
    for folder in (root, root / fmt.folder):
        if (folder / fmt.meta_file).is_file():
            return folder
    return None


def _find_archive(fmt: CifarFormat, root: Path) -> Path | None:
    for archive in (root, root / fmt.archive):
        if archive.is_file():
            return archive
    return None


def _read_folder(fmt: CifarFormat, folder: Path) -> dict[str, dict]:
    missing = [name for name in fmt.files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{fmt.title} folder {folder} lacks {', '.join(missing)}; "
            f"extract the official {fmt.archive} again."
        )
    try:
        return {name: _unpickle((folder / name).read_bytes(), str(folder / name)) for name in fmt.files}
    except OSError as error:
        raise DataError(f"cannot read {fmt.title} folder {folder}: {error}") from error


def _read_archive(fmt: CifarFormat, archive: Path) -> dict[str, dict]:
    contents: dict[str, dict] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if member.isfile() and path.name in fmt.files and path.parent.name in (fmt.folder, ""):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        contents[path.name] = _unpickle(handle.read(), f"{archive}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(
            f"{fmt.title} archive {archive} is truncated or corrupt ({type(error).__name__}: {error}); "
            f"delete it and download it again (download=True)."
        ) from error
    missing = [name for name in fmt.files if name not in contents]
    if missing:
        raise DataError(
            f"{archive} is not the official {fmt.archive}: it lacks {fmt.folder}/{', '.join(missing)}"
        )
    return contents


def _locate_or_download(fmt: CifarFormat, root: Path, download: bool, url: str | None) -> Path:
    """The extracted folder or archive to read, downloading the archive into ``root`` if asked."""
    found = _find_folder(fmt, root) or _find_archive(fmt, root)
    if found is not None:
        return found
    if not download:
        raise DataError(
            f"{fmt.title} not found at {root}: expected the folder {root / fmt.folder} or the archive "
            f"{root / fmt.archive}. Set data_root to where they are, or pass download=True "
            f"(dataset.kwargs.download: true) to fetch {fmt.archive} into {root}."
        )
    return download_file(url or fmt.url, root / fmt.archive, fmt.md5)


def _images_of(contents: dict[str, dict], files: tuple[str, ...], source: Path) -> np.ndarray:
    """The (N, 32, 32, 3) images of the batches ``files``, from CIFAR's channel-planar rows."""
    rows = []
    for name in files:
        data = contents[name].get(b"data")
        if (
            not isinstance(data, np.ndarray)
            or data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3072
        ):
            shape = getattr(data, "shape", type(data).__name__)
            raise DataError(f"{source}:{name}: b'data' must be a uint8 array of shape (N, 3072), got {shape}")
        rows.append(data)
    return np.ascontiguousarray(np.concatenate(rows).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _labels_of(contents: dict[str, dict], files: tuple[str, ...], key: bytes, source: Path) -> np.ndarray:
    """The int64 labels under ``key`` of the batches ``files``, one per image row."""
    labels = []
    for name in files:
        batch, where = contents[name], f"{source}:{name}"
        if key not in batch:
            raise DataError(f"{where}: no {key!r} entry, so this is not an official CIFAR batch")
        values = np.asarray(batch[key], dtype=np.int64)
        rows = len(batch[b"data"])
        if values.shape != (rows,):
            raise DataError(f"{where}: {values.size} entries in {key!r} for {rows} images")
        labels.append(values)
    return np.concatenate(labels)


def _names(meta: dict, key: bytes, where: str) -> list[str]:
    if key not in meta:
        raise DataError(f"{where}: no {key!r} entry")
    return [name.decode("utf-8") if isinstance(name, bytes) else str(name) for name in meta[key]]


def _load(
    fmt: CifarFormat,
    name: str,
    data_root: str | None,
    image_size: int | None,
    download: bool,
    url: str | None,
) -> tuple[ClassificationData, dict[str, dict], Path]:
    check_image_size(image_size, name)
    source = _locate_or_download(fmt, require_data_root(data_root, name), download, url)
    contents = _read_folder(fmt, source) if source.is_dir() else _read_archive(fmt, source)
    data = ClassificationData(
        name=name,
        train_images=resize_images(_images_of(contents, fmt.train_files, source), image_size),
        train_labels=_labels_of(contents, fmt.train_files, fmt.label_key, source),
        test_images=resize_images(_images_of(contents, fmt.test_files, source), image_size),
        test_labels=_labels_of(contents, fmt.test_files, fmt.label_key, source),
        class_names=_names(contents[fmt.meta_file], fmt.names_key, f"{source}:{fmt.meta_file}"),
        source=str(source),
    )
    logger.info(
        "Loaded %s from %s: %d train, %d test images.",
        fmt.title,
        source,
        len(data.train_labels),
        len(data.test_labels),
    )
    return data, contents, source


@register_dataset("cifar10")
def cifar10(
    data_root: str | None, image_size: int | None = None, *, download: bool = False, url: str | None = None
) -> ClassificationData:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, 10 classes) from the official python archive.

    ``download`` fetches ``cifar-10-python.tar.gz`` into ``data_root`` when it is not there (MD5
    checked); ``url`` replaces the official address, for mirrors (same file, same MD5).
    """
    data, _, _ = _load(CIFAR10, "cifar10", data_root, image_size, download, url)
    data.validate()
    return data


@register_dataset("cifar100")
def cifar100(
    data_root: str | None, image_size: int | None = None, *, download: bool = False, url: str | None = None
) -> ClassificationData:
    """CIFAR-100 (50,000 / 10,000, 100 fine classes) from the official python archive.

    Labels are the fine labels; ``extras`` holds ``train_coarse_labels``, ``test_coarse_labels``
    (the 20 superclasses, int64) and ``coarse_class_names``. ``download`` / ``url`` as for cifar10.
    """
    data, contents, source = _load(CIFAR100, "cifar100", data_root, image_size, download, url)
    for split, files in (("train", CIFAR100.train_files), ("test", CIFAR100.test_files)):
        data.extras[f"{split}_coarse_labels"] = _labels_of(contents, files, b"coarse_labels", source)
    coarse_names = _names(
        contents[CIFAR100.meta_file], b"coarse_label_names", f"{source}:{CIFAR100.meta_file}"
    )
    data.extras["coarse_class_names"] = np.array(coarse_names, dtype=str)
    for split in ("train", "test"):
        coarse = data.extras[f"{split}_coarse_labels"]
        if coarse.size and (coarse.min() < 0 or coarse.max() >= len(coarse_names)):
            raise DataError(
                f"{source}: {split} coarse labels span {coarse.min()}..{coarse.max()} "
                f"but there are {len(coarse_names)} coarse class names"
            )
    data.validate()
    return data
