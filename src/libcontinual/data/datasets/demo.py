"""The demo dataset shipped with the package: 10 CIFAR-10 classes, 400 train / 100 test images each.

Real CIFAR-10 images (JPEG, quality 75) selected by ``scripts/make_demo_dataset.py``, which records
their provenance inside the file. Decoded with Pillow on load (about 5,000 small JPEGs).
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

import numpy as np
from PIL import Image

from libcontinual import progress
from libcontinual.data.datasets.catalog import default_location
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError
from libcontinual.registry import register_dataset

DEMO_FILE = "demo_cifar10.npz"


def _decode(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    def one(i: int) -> np.ndarray:
        payload = blob[offsets[i] : offsets[i + 1]].tobytes()
        with Image.open(io.BytesIO(payload)) as image:
            return np.asarray(image.convert("RGB"))

    count = len(offsets) - 1
    with progress.track(f"decoding {count} demo images", count) as bar, ThreadPoolExecutor() as pool:
        images = []
        for image in pool.map(one, range(count)):
            images.append(image)
            bar.advance()
        return np.stack(images)


@register_dataset("demo")
@default_location("(shipped in the package)", found=lambda _: True)
def load_demo(data_root: str | None = None, image_size: int | None = None) -> ClassificationData:
    """The packaged demo subset of CIFAR-10 (``data_root`` is ignored; 32x32 only)."""
    if image_size not in (None, 32):
        raise ConfigError(f"Config key 'image_size': the demo dataset has 32x32 images, got {image_size}.")
    path = resources.files("libcontinual.data") / "demo" / DEMO_FILE
    with resources.as_file(path) as file, np.load(file) as archive:
        arrays = {key: archive[key] for key in archive.files}
    provenance = json.loads(str(arrays["provenance"]))
    return ClassificationData(
        name="demo",
        train_images=_decode(arrays["train_jpeg"], arrays["train_offsets"]),
        train_labels=arrays["train_labels"],
        test_images=_decode(arrays["test_jpeg"], arrays["test_offsets"]),
        test_labels=arrays["test_labels"],
        class_names=[str(name) for name in arrays["class_names"]],
        source=f"libcontinual package ({provenance['source']}; {provenance['selection']})",
    )
