import pytest

from tuneforge.training.auto import auto_batch_size, auto_epochs, auto_learning_rate


@pytest.mark.parametrize(
    ("n", "epochs"),
    [(50, 20), (1_000, 20), (2_767, 11), (9_000, 4), (10_000, 3), (60_614, 1.48), (500_000, 1)],
)
def test_auto_epochs_shrink_with_data_size(n, epochs):
    assert auto_epochs(n) == epochs


def test_auto_batch_and_learning_rate():
    assert auto_batch_size(500) == 16
    assert auto_batch_size(50_000) == 32
    assert auto_learning_rate(5e-5, 32) == pytest.approx(5e-5)
    assert auto_learning_rate(5e-5, 128) == pytest.approx(1e-4)


def test_head_multiplier_only_for_many_class_heads():
    from tuneforge.training.auto import auto_head_lr_multiplier

    assert auto_head_lr_multiplier(20.0, 2) == 1.0
    assert auto_head_lr_multiplier(20.0, 77) == 20.0
    assert auto_head_lr_multiplier(1.0, 77) == 1.0
