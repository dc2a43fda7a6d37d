import pytest

from libcontinual.engine import metrics

# R[i][j]: accuracy on task j after task i (lower triangle), in %.
R = [
    [90.0],
    [60.0, 80.0],
    [50.0, 70.0, 85.0],
]
SIZES = [100, 100, 200]


def test_accuracy_curve_is_sample_weighted():
    curve = metrics.accuracy_curve(R, SIZES)
    assert curve == pytest.approx([90.0, 70.0, (50 * 100 + 70 * 100 + 85 * 200) / 400])


def test_mean_task_accuracy_is_unweighted():
    assert metrics.mean_task_accuracy(R) == pytest.approx([90.0, 70.0, (50 + 70 + 85) / 3])


def test_last_and_average_incremental_accuracy():
    summary = metrics.summarize(R, SIZES)
    assert summary["last_accuracy"] == pytest.approx(72.5)
    assert summary["average_incremental_accuracy"] == pytest.approx((90 + 70 + 72.5) / 3)


def test_forgetting_counts_every_old_task_including_the_latest():
    # task 0: max(90, 60) - 50 = 40; task 1: max(80) - 70 = 10 (LibContinual would skip this one)
    assert metrics.forgetting(R) == pytest.approx(25.0)


def test_forgetting_uses_the_maximum_not_the_first_accuracy():
    rising = [[40.0], [70.0, 80.0], [50.0, 80.0, 90.0]]
    # task 0: max(40, 70) - 50 = 20; task 1: 80 - 80 = 0
    assert metrics.forgetting(rising) == pytest.approx(10.0)


def test_bwt():
    # (50 - 90) + (70 - 80) over 2 old tasks
    assert metrics.backward_transfer(R) == pytest.approx(-25.0)


def test_single_task_has_no_forgetting_or_bwt():
    assert metrics.forgetting([[50.0]]) is None
    assert metrics.backward_transfer([[50.0]]) is None


def test_forward_transfer_follows_the_paper_and_needs_full_rows():
    full = [[90.0, 15.0, 12.0], [60.0, 80.0, 20.0], [50.0, 70.0, 85.0]]
    random_init = [10.0, 10.0, 10.0]
    # ((15 - 10) + (20 - 10)) / (T - 1)
    assert metrics.forward_transfer(full, random_init) == pytest.approx(7.5)
    with pytest.raises(ValueError, match="full rows"):
        metrics.forward_transfer(R, random_init)
