"""Dataset loaders. Importing this package registers every loader with the dataset registry."""

from libcontinual.data.datasets import (
    cifar,  # noqa: F401
    demo,  # noqa: F401
    image_folder,  # noqa: F401
    mnist,  # noqa: F401
    npz,  # noqa: F401
    synthetic,  # noqa: F401
)
from libcontinual.data.datasets.catalog import describe_datasets

__all__ = ["describe_datasets"]
