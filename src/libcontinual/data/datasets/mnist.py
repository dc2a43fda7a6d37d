"""MNIST and Fashion-MNIST from the official IDX files, gzip-compressed or not.

Each file's magic number, dimensions and length are checked, so a truncated or swapped file is
reported by name instead of producing garbage images.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from libcontinual.data.datasets.catalog import default_location
from libcontinual.data.datasets.common import (
    channel_mode,
    check_image_size,
    require_data_root,
    require_folder,
)
from libcontinual.data.datasets.download import download_file
from libcontinual.data.datasets.imaging import ensure_channels, resize_images
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError, DataError
from libcontinual.registry import register_dataset

logger = logging.getLogger(__name__)

IDX_UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_SYSTEM_ROOT = "/usr/share/datasets/fashion-mnist"


@dataclass(frozen=True)
class IdxDataset:
    """One dataset published as the four MNIST-style IDX files."""

    title: str
    class_names: tuple[str, ...]
    base_url: str
    md5: dict[str, str]  # of the official .gz files


MNIST = IdxDataset(
    title="MNIST",
    class_names=tuple(str(digit) for digit in range(10)),
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
FASHION_MNIST = IdxDataset(
    title="Fashion-MNIST",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),  # fmt: skip
    base_url="https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array stored in one IDX file (raw or gzip), after checking its magic number and length.

    ``magic`` is the expected header word: 0x803 for (N, rows, cols) images, 0x801 for (N,) labels.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            compressed = handle.read(2) == b"\x1f\x8b"
        with gzip.open(path, "rb") if compressed else open(path, "rb") as handle:
            content = bytearray(handle.read())
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"cannot read IDX file {path} ({type(error).__name__}: {error}); "
            f"it is truncated or corrupt: replace it with the official file."
        ) from error
    found = int.from_bytes(content[:4], "big") if len(content) >= 4 else None
    if found != magic:
        shown = "none (file shorter than 4 bytes)" if found is None else f"{found:#010x}"
        raise DataError(
            f"{path} is not an IDX {'image' if magic == IMAGES_MAGIC else 'label'} file: magic number "
            f"{shown}, expected {magic:#010x}. Check that the file is the one its name says."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(content) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(content)} bytes)")
    shape = tuple(int.from_bytes(content[4 + 4 * axis : 8 + 4 * axis], "big") for axis in range(ndim))
    expected = int(np.prod(shape))
    if len(content) - header != expected:
        raise DataError(
            f"IDX file {path} declares shape {shape} ({expected} bytes of data) but holds "
            f"{len(content) - header}: it is truncated or corrupt; replace it with the official file."
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``root`` or ``root/raw``: official name, with ``.gz`` or dotted variant."""
    names = (stem, f"{stem}.gz", stem.replace("-idx", ".idx"), f"{stem.replace('-idx', '.idx')}.gz")
    for folder in (root, root / "raw"):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def has_idx_files(root: Path) -> bool:
    """Whether all four IDX files are present under ``root``."""
    return all(_find(root, stem) is not None for stem in FILES.values())


def _locate(spec: IdxDataset, root: Path, download: bool, url: str | None) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    require_folder(root, spec.title, f"the four official IDX files ({', '.join(FILES.values())})")
    for key, stem in FILES.items():
        found = _find(root, stem)
        if found is None and download:
            base = url or spec.base_url
            found = download_file(
                f"{base.rstrip('/')}/{stem}.gz", root / f"{stem}.gz", spec.md5[f"{stem}.gz"]
            )
        if found is None:
            raise DataError(
                f"{spec.title} file {stem}[.gz] not found in {root}: data_root must hold the four official "
                f"IDX files ({', '.join(FILES.values())}, gzip or not). Pass download=True to fetch them."
            )
        paths[key] = found
    return paths


def _load(
    spec: IdxDataset,
    name: str,
    root: Path,
    image_size: int | None,
    channels: int,
    download: bool,
    url: str | None,
) -> ClassificationData:
    check_image_size(image_size, name)
    channel_mode(channels, name)
    paths = _locate(spec, root, download, url)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], IMAGES_MAGIC)
        labels = read_idx(paths[f"{split}_labels"], LABELS_MAGIC).astype(np.int64)
        if len(images) != len(labels):
            raise DataError(
                f"{paths[f'{split}_images']} holds {len(images)} images but {paths[f'{split}_labels']} "
                f"holds {len(labels)} labels: the two files do not belong together."
            )
        arrays[f"{split}_images"] = ensure_channels(resize_images(images[..., None], image_size), channels)
        arrays[f"{split}_labels"] = labels
    data = ClassificationData(name=name, class_names=list(spec.class_names), source=str(root), **arrays)
    data.validate()
    logger.info(
        "Loaded %s from %s: %d train, %d test images.",
        spec.title,
        root,
        len(data.train_labels),
        len(data.test_labels),
    )
    return data


@register_dataset("mnist")
def mnist(
    data_root: str | None,
    image_size: int | None = None,
    *,
    channels: int = 1,
    download: bool = False,
    url: str | None = None,
) -> ClassificationData:
    """MNIST digits (60,000 / 10,000, 28x28 grey) from the four official IDX files in ``data_root``.

    ``channels=3`` repeats the grey channel. ``download`` fetches missing files (MD5 checked) into
    ``data_root``; ``url`` replaces the base address the four files are fetched from, for mirrors.
    """
    return _load(MNIST, "mnist", require_data_root(data_root, "mnist"), image_size, channels, download, url)


@register_dataset("fashion_mnist")
@default_location(FASHION_MNIST_SYSTEM_ROOT, has_idx_files)
def fashion_mnist(
    data_root: str | None,
    image_size: int | None = None,
    *,
    channels: int = 1,
    download: bool = False,
    url: str | None = None,
) -> ClassificationData:
    """Fashion-MNIST (60,000 / 10,000, 28x28 grey, 10 clothing classes) from its IDX files.

    With ``data_root`` None it reads ``/usr/share/datasets/fashion-mnist`` (Debian/Ubuntu package
    ``dataset-fashion-mnist``). Other kwargs as for mnist.
    """
    if data_root is None:
        if download:
            raise ConfigError(
                "fashion_mnist: download=True needs a data_root to download into; set data_root."
            )
        root = Path(FASHION_MNIST_SYSTEM_ROOT)
        if not has_idx_files(root):
            raise DataError(
                f"Fashion-MNIST not found in {root} (the default when data_root is not set): install it "
                f"with `apt-get install dataset-fashion-mnist`, or set data_root to a folder with its "
                f"IDX files (download=True fetches them)."
            )
    else:
        root = require_data_root(data_root, "fashion_mnist")
    return _load(FASHION_MNIST, "fashion_mnist", root, image_size, channels, download, url)
