"""Training with the perturbed-branch gradient beside PyTorch's (mtlib.training._valid, chapter
training_valid). Assertions on float16/bfloat16 results hold on any CPU."""

from functools import partial

import pytest
import torch

from mtlib.training import (
    GRADIENTS,
    digits_cnn,
    digits_data,
    parameter_gradients,
    train_valid,
    valid_disagreement,
    valid_record,
    valid_study,
)

f64 = torch.float64


@pytest.fixture(scope="module")
def data():
    return digits_data(80, seed=0)


def test_both_gradients_agree_off_ties_and_differ_at_a_genuine_tie(data):
    model = digits_cnn(2, ties="first", seed=0)
    x, y = data.x_train[:8], data.y_train[:8]
    loss_a, pytorch = parameter_gradients(model, x, y, "pytorch")
    loss_b, perturbed = parameter_gradients(model, x, y, "perturbed", torch.Generator().manual_seed(0))
    assert loss_a.item() == loss_b.item() and len(pytorch) == len(list(model.parameters()))
    for a, b in zip(pytorch, perturbed):  # the digits meet only dead windows and identical patches
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)
    with torch.no_grad():  # a genuine tie: integer weights and pixels, relu inputs at exactly 0
        for p in model.parameters():
            p.copy_(torch.randint(-1, 2, p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = torch.randint(0, 2, (4, 1, 8, 8), generator=torch.Generator().manual_seed(4)).to(f64)
    _, pytorch = parameter_gradients(model, x, y[:4], "pytorch")
    _, perturbed = parameter_gradients(model, x, y[:4], "perturbed", torch.Generator().manual_seed(0))
    assert max((a - b).abs().max().item() for a, b in zip(pytorch, perturbed)) > 1e-3


def test_protocol_in_float64_never_differs_and_its_columns(data):
    table = valid_disagreement(partial(digits_cnn, 2), data, "float64", batches=3, batch_size=8)
    assert table.columns.tolist() == ["dtype", "batch", "active", "difference", "l1_difference", "differs"]
    assert len(table) == 3 and not table.differs.any() and (table.difference < 1e-14).all()
    assert (table.l1_difference >= table.difference).all()


def test_training_is_reproducible_and_learns(data):
    runs = [train_valid(partial(digits_cnn, 2), data, gradient="perturbed", dtype="float32", epochs=2,
                        batch_size=16, seed=1) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0][1]) == 2 * 4  # 64 training images, batches of 16
    accuracy, losses = runs[0]
    assert 0.0 <= accuracy <= 1.0 and all(loss > 0 for loss in losses)


def test_study_summary_and_record(data):
    study = valid_study(partial(digits_cnn, 2), data, dtypes=["float32", "float64"], seeds=[0], batches=1,
                        batch_size=16, epochs=1, lr=0.05)
    assert list(study.summary.index) == ["float32", "float64"]
    assert study.summary.columns.tolist() == [
        "active", "differs", "median_delta", "median_l1",
        "accuracy_pytorch", "accuracy_perturbed", "accuracy_sd_pytorch", "accuracy_sd_perturbed",
        "accuracy_gap", "loss_gap"]
    assert len(study.runs) == 2 * len(GRADIENTS) and len(study.steps) == 2 * 4
    assert study.summary.loss_gap["float64"] < 1e-12
    record = valid_record(study, batch_size=16)
    assert list(record)[:3] == ["batch_size", "active_float32", "differs_float32"]
    assert record["differs_float64"] == 0.0 and len(record) == 1 + 2 * 10


def test_bad_arguments(data):
    model = digits_cnn(2)
    with pytest.raises(ValueError, match="gradient"):
        parameter_gradients(model, data.x_train[:2], data.y_train[:2], "uniform")
    with pytest.raises(ValueError, match="gradient"):
        train_valid(partial(digits_cnn, 2), data, gradient="first", dtype="float32")
    with pytest.raises(TypeError, match="dtype"):
        train_valid(partial(digits_cnn, 2), data, gradient="pytorch", dtype="int32")
    with pytest.raises(ValueError, match="batches"):
        valid_disagreement(partial(digits_cnn, 2), data, "float64", batches=0)
