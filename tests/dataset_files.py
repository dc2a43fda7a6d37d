"""Tiny dataset files in the official formats, and a local HTTP server, for the dataset tests.

Not a test module: the ``test_datasets_*`` files import it (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import pickle
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _dump(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def _rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) -> CIFAR's (N, 3072) rows: all red, then all green, then all blue."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def write_cifar10(parent: Path, seed: int = 0, per_batch: int = 3, test: int = 4) -> dict:
    """A CIFAR-10 folder ``parent/cifar-10-batches-py`` with 5 train batches; returns the expected arrays."""
    rng = np.random.default_rng(seed)
    folder = parent / CIFAR10_FOLDER
    folder.mkdir(parents=True)
    train_images = rng.integers(0, 256, (5 * per_batch, 32, 32, 3), dtype=np.uint8)
    train_labels = rng.integers(0, 10, 5 * per_batch)
    test_images = rng.integers(0, 256, (test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, test)
    for index in range(5):
        part = slice(index * per_batch, (index + 1) * per_batch)
        batch = {
            b"batch_label": b"training batch",
            b"labels": train_labels[part].tolist(),
            b"data": _rows(train_images[part]),
        }
        _dump(folder / f"data_batch_{index + 1}", batch)
    _dump(folder / "test_batch", {b"labels": test_labels.tolist(), b"data": _rows(test_images)})
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
        "class_names": [name.decode() for name in names],
    }


def write_cifar100(parent: Path, seed: int = 0, train: int = 12, test: int = 5) -> dict:
    """A CIFAR-100 folder ``parent/cifar-100-python``; returns the expected arrays."""
    rng = np.random.default_rng(seed)
    folder = parent / CIFAR100_FOLDER
    folder.mkdir(parents=True)
    expected: dict = {}
    for split, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        fine, coarse = rng.integers(0, 100, count), rng.integers(0, 20, count)
        _dump(
            folder / split,
            {b"fine_labels": fine.tolist(), b"coarse_labels": coarse.tolist(), b"data": _rows(images)},
        )
        expected.update(
            {f"{split}_images": images, f"{split}_labels": fine, f"{split}_coarse_labels": coarse}
        )
    fine_names = [f"fine{index}".encode() for index in range(100)]
    coarse_names = [f"coarse{index}".encode() for index in range(20)]
    _dump(folder / "meta", {b"fine_label_names": fine_names, b"coarse_label_names": coarse_names})
    expected["class_names"] = [name.decode() for name in fine_names]
    expected["coarse_class_names"] = [name.decode() for name in coarse_names]
    return expected


def tar_gz(folder: Path, archive: Path) -> Path:
    """Pack ``folder`` (as its own top-level entry) into the gzip tar ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    """An IDX file of uint8 ``array`` (magic 0x0800 | ndim), gzip-compressed when ``compress``."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist(folder: Path, compress: bool, seed: int = 0, train: int = 20, test: int = 8) -> dict:
    """The four MNIST IDX files with random content; returns the expected arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for split, prefix, count in (("train", "train", train), ("test", "t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)
        expected[f"{split}_images"], expected[f"{split}_labels"] = images, labels
    return expected


def write_image_folder(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "emu"),
    per_class: int = 3,
    size: int = 8,
    seed: int = 0,
) -> dict[str, list[Path]]:
    """``root/{train,test}/<class>/<nnn>.png``, random RGB; returns the files per split in class order."""
    rng = np.random.default_rng(seed)
    files: dict[str, list[Path]] = {"train": [], "test": []}
    for split in files:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(per_class):
                path = folder / f"{index:03d}.png"
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
                files[split].append(path)
    return files


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: a list of (body, declared length or None, stall) answered in turn."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.requests.append(self.path)
        answers = self.server.routes.get(self.path)
        if not answers:
            self.send_error(404)
            return
        body, declared, stall = answers.pop(0) if len(answers) > 1 else answers[0]
        self.send_response(200)
        self.send_header("Content-Length", str(declared if declared is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if stall:
            self.server.release.wait(10)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    block_on_close = False
    daemon_threads = True


@contextlib.contextmanager
def serve(routes: dict[str, list[tuple[bytes, int | None, bool]]]) -> Iterator[tuple[_Server, str]]:
    """An HTTP server on 127.0.0.1 while in the block: yields it (``.requests`` = paths asked) and its URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.routes = routes
    server.requests = []
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
