"""The batched device augmentation equals a straightforward per-image implementation."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def per_image_reference(
    image_hwc: np.ndarray, top: int, left: int, flip: bool, bright: float, contrast: float, padding: int
) -> np.ndarray:
    """One image at a time with Pillow: pad with zeros, crop, flip; then jitter and normalise in float."""
    pil = Image.fromarray(image_hwc)
    height, width = image_hwc.shape[:2]
    padded = ImageOps.expand(pil, border=padding, fill=0)
    cropped = padded.crop((left, top, left + width, top + height))
    if flip:
        cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(cropped, dtype=np.float32) / 255.0
    x = np.clip(x * np.float32(bright), 0, 1)
    grey = (x * np.array([0.299, 0.587, 0.114], dtype=np.float32)).sum(axis=2).mean()
    x = np.clip(x * np.float32(contrast) + grey * np.float32(1 - contrast), 0, 1)
    x = (x - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return x.transpose(2, 0, 1)


@pytest.mark.parametrize("padding", [4, 2])
def test_batched_augmentation_equals_per_image_reference(padding):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    augment = BatchAugment(MEAN, STD, crop_padding=padding, brightness=63 / 255, contrast=0.3)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    draws = augment.sample(16, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert draws.flip.any() and not draws.flip.all()
    assert set(draws.crop_top.tolist()) - {0, 2 * padding}  # interior offsets are exercised
    out = augment.apply(batch, draws)
    for i in range(16):
        expected = per_image_reference(
            images[i],
            int(draws.crop_top[i]),
            int(draws.crop_left[i]),
            bool(draws.flip[i]),
            float(draws.brightness[i]),
            float(draws.contrast[i]),
            padding,
        )
        np.testing.assert_allclose(out[i].numpy(), expected, rtol=0, atol=2e-6)


def test_crop_and_flip_alone_are_pixel_exact():
    rng = np.random.RandomState(1)
    images = rng.randint(0, 256, size=(8, 12, 10, 3), dtype=np.uint8)
    augment = BatchAugment((0, 0, 0), (1, 1, 1), crop_padding=3, brightness=0.0)
    draws = augment.sample(8, torch.Generator().manual_seed(2), torch.device("cpu"))
    out = augment.apply(torch.from_numpy(images).permute(0, 3, 1, 2), draws)
    pixels = (out * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    for i in range(8):
        padded = ImageOps.expand(Image.fromarray(images[i]), border=3, fill=0)
        top, left = int(draws.crop_top[i]), int(draws.crop_left[i])
        crop = padded.crop((left, top, left + 10, top + 12))
        if draws.flip[i]:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        assert np.array_equal(pixels[i], np.asarray(crop))


def test_brightness_factors_stay_in_torchvision_range():
    augment = BatchAugment(MEAN, STD, brightness=63 / 255)
    draws = augment.sample(4096, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert draws.brightness.min() >= 1 - 63 / 255 and draws.brightness.max() <= 1 + 63 / 255
    assert draws.brightness.std() > 0.1


def test_same_generator_seed_gives_the_same_batch():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    augment = BatchAugment(MEAN, STD)
    a = augment(images, torch.Generator().manual_seed(3))
    b = augment(images, torch.Generator().manual_seed(3))
    c = augment(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_normalize_handles_grey_images_with_one_statistic():
    images = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    out = Normalize((0.5,), (0.25,))(images)
    assert torch.allclose(out, torch.full_like(out, 2.0))


def test_loader_visits_every_sample_once_per_epoch_in_a_seeded_order():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).contiguous()
    labels = torch.arange(10)
    identity = Normalize((0.0,), (1 / 255,))
    loader = DeviceLoader(
        images, labels, 4, identity, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    assert len(loader) == 3
    batches = list(loader)
    seen = torch.cat([b["label"] for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))
    # images stay paired with their labels through the gather
    for batch in batches:
        assert torch.equal(batch["image"][:, 0, 0, 0].round().long(), batch["label"])
    second = torch.cat([b["label"] for b in loader])
    assert second.tolist() != seen.tolist()  # a new order every epoch


def test_loader_extend_and_drop_last():
    identity = Normalize((0.0,), (1.0,))
    loader = DeviceLoader(
        torch.zeros(5, 1, 2, 2, dtype=torch.uint8),
        torch.zeros(5, dtype=torch.long),
        2,
        identity,
        drop_last=True,
    )
    loader.extend(torch.ones(2, 1, 2, 2, dtype=torch.uint8), torch.ones(2, dtype=torch.long))
    assert loader.num_samples == 7 and len(loader) == 3
    assert sum(b["label"].shape[0] for b in loader) == 6


def test_loader_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(torch.zeros(2, 3, 4, 4), torch.zeros(2), 2, Normalize((0,), (1,)))
