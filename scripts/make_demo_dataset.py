"""Build the demo dataset shipped with the package from the CIFAR-10 JPEG archive.

Provenance: ``shared/data/cifar10-jpg.tar.gz`` (complete CIFAR-10 as JPEG image folders, quality 75;
within a class, file numbering follows the original CIFAR order). The demo keeps, for every class,
the first ``--train`` training and first ``--test`` test files in that order, byte for byte (no
re-encoding), and stores them in one compressed .npz with the archive's SHA-256 and the selection
rule, so the file can be rebuilt and checked.

Usage: python scripts/make_demo_dataset.py [--archive PATH] [--train 400] [--test 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
OUTPUT = REPO / "src" / "libcontinual" / "data" / "demo" / "demo_cifar10.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--train", type=int, default=400, help="training images per class")
    parser.add_argument("--test", type=int, default=100, help="test images per class")
    args = parser.parse_args()

    wanted = {"train": args.train, "test": args.test}
    members: dict[tuple[str, str], list[tuple[int, bytes]]] = {}
    with tarfile.open(args.archive) as archive:
        for member in archive:
            parts = Path(member.name).parts  # cifar10-jpg/<split>/<class>/<nnnn>.jpg
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            number = int(Path(parts[3]).stem)
            if number < wanted[parts[1]]:
                payload = archive.extractfile(member).read()  # type: ignore[union-attr]
                members.setdefault((parts[1], parts[2]), []).append((number, payload))
    class_names = sorted({name for _, name in members})
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        blobs, labels = [], []
        for label, name in enumerate(class_names):
            files = sorted(members[(split, name)])
            if len(files) != wanted[split]:
                raise SystemExit(
                    f"{args.archive}: class {name} has {len(files)} {split} files, need {wanted[split]}"
                )
            blobs += [payload for _, payload in files]
            labels += [label] * len(files)
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    provenance = {
        "source": "cifar10-jpg.tar.gz (CIFAR-10 as JPEG image folders, quality 75)",
        "source_sha256": hashlib.sha256(args.archive.read_bytes()).hexdigest(),
        "selection": (
            f"per class, files 0000..{args.train - 1:04d} of train/ and 0000..{args.test - 1:04d} of test/"
        ),
        "builder": "scripts/make_demo_dataset.py",
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUTPUT, class_names=np.asarray(class_names), provenance=np.asarray(json.dumps(provenance)), **arrays
    )
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
