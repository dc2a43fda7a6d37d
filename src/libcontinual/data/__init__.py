"""Datasets, scenarios (class order and task split), the device loader and batched augmentation."""
