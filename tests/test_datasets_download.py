"""download_file against a local HTTP server, and the loaders' download=True path."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from dataset_files import md5, serve, tar_gz, write_cifar10, write_cifar100, write_mnist
from libcontinual.data.datasets import cifar, mnist
from libcontinual.data.datasets.download import download_file
from libcontinual.errors import DataError

PAYLOAD = bytes(range(256)) * 40_000  # 10 MB: several read chunks


def _leftovers(folder):
    return sorted(path.name for path in folder.iterdir())


def test_download_verifies_md5_and_renames_into_place(tmp_path):
    with serve({"/file.bin": [(PAYLOAD, None, False)]}) as (_, url):
        target = download_file(f"{url}/file.bin", tmp_path / "out" / "file.bin", md5(PAYLOAD), timeout=5)
    assert target.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path / "out") == ["file.bin"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_wrong_checksum_retries_then_fails_and_leaves_nothing(tmp_path):
    wrong = "0" * 32
    with serve({"/file.bin": [(PAYLOAD, None, False)]}) as (server, url), pytest.raises(DataError) as error:
        download_file(f"{url}/file.bin", tmp_path / "file.bin", wrong, retries=2, timeout=5, backoff=0)
    message = str(error.value)
    assert f"{url}/file.bin" in message and wrong in message and md5(PAYLOAD) in message
    assert server.requests == ["/file.bin", "/file.bin"]
    assert _leftovers(tmp_path) == []


def test_truncated_body_is_retried_then_fails_without_a_partial_file(tmp_path):
    body = PAYLOAD[:100_000]
    routes = {"/file.bin": [(body, len(PAYLOAD), False)]}
    with serve(routes) as (server, url), pytest.raises(DataError, match="IncompleteRead|truncated") as error:
        download_file(f"{url}/file.bin", tmp_path / "file.bin", md5(PAYLOAD), retries=3, timeout=5, backoff=0)
    assert f"{url}/file.bin" in str(error.value)
    assert len(server.requests) == 3
    assert _leftovers(tmp_path) == []


def test_a_retry_after_a_truncated_transfer_succeeds(tmp_path):
    answers = [(PAYLOAD[:5000], len(PAYLOAD), False), (PAYLOAD, None, False)]
    with serve({"/file.bin": answers}) as (server, url):
        target = download_file(f"{url}/file.bin", tmp_path / "file.bin", md5(PAYLOAD), timeout=5, backoff=0)
    assert target.read_bytes() == PAYLOAD
    assert len(server.requests) == 2
    assert _leftovers(tmp_path) == ["file.bin"]


def test_http_404_fails_at_once(tmp_path):
    with serve({}) as (server, url), pytest.raises(DataError, match="HTTP 404"):
        download_file(f"{url}/missing.bin", tmp_path / "missing.bin", md5(b""), retries=3, timeout=5)
    assert server.requests == ["/missing.bin"]
    assert _leftovers(tmp_path) == []


def test_a_stalled_server_times_out(tmp_path):
    started = time.perf_counter()
    stalling = {"/file.bin": [(PAYLOAD[:1000], len(PAYLOAD), True)]}
    with serve(stalling) as (_, url), pytest.raises(DataError) as error:
        download_file(f"{url}/file.bin", tmp_path / "x.bin", md5(PAYLOAD), retries=2, timeout=0.3, backoff=0)
    assert "timed out" in str(error.value)
    assert time.perf_counter() - started < 5
    assert _leftovers(tmp_path) == []


def test_a_failed_download_keeps_an_existing_file(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"old")
    with serve({"/file.bin": [(PAYLOAD, None, False)]}) as (_, url), pytest.raises(DataError):
        download_file(f"{url}/file.bin", tmp_path / "file.bin", "0" * 32, retries=1, timeout=5)
    assert (tmp_path / "file.bin").read_bytes() == b"old"
    assert _leftovers(tmp_path) == ["file.bin"]


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_cifar_download_true_fetches_the_archive_and_checks_the_official_md5(tmp_path, monkeypatch, variant):
    monkeypatch.setattr("libcontinual.data.datasets.download.time.sleep", lambda seconds: None)
    fmt_name, writer = ("CIFAR10", write_cifar10) if variant == "cifar10" else ("CIFAR100", write_cifar100)
    fmt = getattr(cifar, fmt_name)
    expected = writer(tmp_path / "src")
    archive = tar_gz(tmp_path / "src" / fmt.folder, tmp_path / fmt.archive).read_bytes()
    loader = getattr(cifar, variant)
    root = tmp_path / "data"
    with serve({f"/{fmt.archive}": [(archive, None, False)]}) as (server, url):
        with pytest.raises(DataError, match=fmt.md5):  # the test archive is not the official one
            loader(str(root), download=True, url=f"{url}/{fmt.archive}")
        assert list(root.iterdir()) == []
        monkeypatch.setattr(cifar, fmt_name, dataclasses.replace(fmt, md5=md5(archive)))
        data = loader(str(root), download=True, url=f"{url}/{fmt.archive}")
        requests = len(server.requests)
        again = loader(str(root), download=True, url=f"{url}/{fmt.archive}")
    assert requests == 4 and len(server.requests) == 4  # 3 failed attempts, 1 good one, then read locally
    assert _leftovers(root) == [fmt.archive]
    np.testing.assert_array_equal(data.train_images, expected["train_images"])
    np.testing.assert_array_equal(again.test_labels, expected["test_labels"])


def test_mnist_download_true_fetches_the_four_files(tmp_path, monkeypatch):
    expected = write_mnist(tmp_path / "src", compress=True)
    routes, sums = {}, {}
    for path in (tmp_path / "src").iterdir():
        routes[f"/mirror/{path.name}"] = [(path.read_bytes(), None, False)]
        sums[path.name] = md5(path.read_bytes())
    monkeypatch.setattr(mnist, "MNIST", dataclasses.replace(mnist.MNIST, md5=sums))
    with serve(routes) as (_, url):
        data = mnist.mnist(str(tmp_path / "data"), download=True, url=f"{url}/mirror/")
    assert sorted(_leftovers(tmp_path / "data")) == sorted(sums)
    np.testing.assert_array_equal(data.train_images[..., 0], expected["train_images"])
    np.testing.assert_array_equal(data.test_labels, expected["test_labels"])
