"""Ties in training (mtlib.training): data, model, tie kinds, Boustany's protocol and statistics,
training, extrapolation. Assertions on float16/bfloat16 results hold on any CPU."""

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlib.maxpool import MaxPool2d
from mtlib.training import (
    SIGNIFICAND_BITS,
    TIE_KIND_PATCHES,
    VGG11_CIFAR10_WINDOWS,
    Digits,
    accuracy_study,
    calibrate_threshold,
    digits_cnn,
    digits_data,
    gradient_disagreement,
    rounding_tie_model,
    summed_l1_difference,
    summed_max_difference,
    tie_fraction,
    tie_kind_examples,
    train,
)

F64 = torch.float64


@pytest.fixture(scope="module")
def data():
    return digits_data(300)


def test_digits_data_split_and_exact_pixels(data):
    assert data.x_train.shape == (225, 1, 8, 8) and data.x_test.shape == (75, 1, 8, 8)
    assert data.x_train.dtype == F64 and data.y_train.dtype == torch.int64
    sixteenths = data.x_train * 16
    assert torch.equal(sixteenths, sixteenths.round()) and sixteenths.max() == 16
    assert torch.equal(data.x_train.half().double(), data.x_train)  # exact in float16
    again = digits_data(300)
    assert torch.equal(again.x_test, data.x_test) and torch.equal(again.y_train, data.y_train)
    assert not torch.equal(digits_data(300, seed=1).y_test, data.y_test)
    assert digits_data(20, image_size=16).x_train.shape == (15, 1, 16, 16)


def test_digits_cnn_same_weights_for_both_rules():
    first, uniform = digits_cnn(4, ties="first"), digits_cnn(4, ties="uniform")
    for p, q in zip(first.parameters(), uniform.parameters()):
        assert torch.equal(p, q) and p.dtype == F64
    assert [m.ties for m in uniform if isinstance(m, MaxPool2d)] == ["uniform", "uniform"]
    assert not torch.equal(digits_cnn(4, seed=1)[0].weight, first[0].weight)
    assert digits_cnn(4, image_size=16)(torch.zeros(3, 1, 16, 16, dtype=F64)).shape == (3, 10)


def test_first_rule_gradients_match_pytorch_maxpool(data):
    ours = digits_cnn(4, ties="first")
    native = nn.Sequential(*[nn.MaxPool2d(2) if isinstance(m, MaxPool2d) else m for m in digits_cnn(4)])
    x, y = data.x_train[:64], data.y_train[:64]
    for model in (ours, native):
        F.cross_entropy(model(x), y).backward()
    for p, q in zip(ours.parameters(), native.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_tie_fraction_blank_image():
    assert tie_fraction(digits_cnn(2), torch.zeros(1, 1, 8, 8, dtype=F64)) == (40 / 48, 32 / 48)


def _two_channel_net(ties):
    """1x1 conv with weights (1, 1), then one 2x2 pool: inputs (1, 0) and (0, 1) tie at 1."""
    net = nn.Sequential(nn.Conv2d(2, 1, 1, dtype=F64), MaxPool2d(2, ties=ties), nn.Flatten(),
                        nn.Linear(1, 10, dtype=F64))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[3].weight.copy_(torch.linspace(-1, 1, 10, dtype=F64)[:, None])
        net[3].bias.zero_()
    return net


def test_disagreement_is_half_the_bias_gradient_on_a_genuine_tie():
    image = torch.zeros(8, 2, 2, 2, dtype=F64)
    image[:, 0, 0, 0] = image[:, 1, 0, 1] = 1.0
    labels = torch.arange(8) % 10
    table = gradient_disagreement(_two_channel_net, Digits(image, labels, image, labels), F64,
                                  batches=3, batch_size=4)
    assert table.differs.all() and (table.rounding == 0).all() and (table.windows == 4).all()
    assert (table.tied == 1.0).all() and (table.active == 1.0).all()
    net = _two_channel_net("first")
    idx = torch.randperm(8, generator=torch.Generator().manual_seed(0))[:4]
    F.cross_entropy(net(image[idx]), labels[idx]).backward()
    # first rule: dW = g (1, 0); uniform: dW = g (1/2, 1/2); other gradients agree, so the
    # summed max norm (B1) is |g| / 2 and Boustany's summed L1 norm (B2) is |g| / 2 + |g| / 2
    g = abs(net[0].bias.grad.item())
    assert table.difference[0] == pytest.approx(g / 2, rel=1e-12)
    assert table.l1_difference[0] == pytest.approx(g, rel=1e-12)


@pytest.mark.slow
def test_protocol_on_digits_fp64_never_differs_and_bf16_does(data):
    """What holds on any CPU: float64 has no rounding tie by construction (it is its own
    reference) and only summation-order noise; float32 rounds 2^13 times more finely than
    float16 and meets far fewer rounding ties; bfloat16, 2^3 times more coarsely, more."""
    factory = partial(digits_cnn, 8)
    tables = {name: gradient_disagreement(factory, data, name, batches=6) for name in ("float16", "bfloat16",
                                                                                       "float32", "float64")}
    f64, bf16 = tables["float64"], tables["bfloat16"]
    assert not f64.differs.any() and (f64.rounding == 0).all()
    assert (f64.difference < 1e-15).all() and (f64.l1_difference < 1e-12).all()
    assert (f64.l1_difference >= f64.difference).all()  # an L1 norm bounds the max norm
    assert bf16.differs.mean() > 0.5 and (bf16.rounding > 0).mean() > 0.5
    assert (f64.active <= f64.tied).all() and (f64.active > 0).all()
    assert (f64.windows == 32 * (8 * 16 + 16 * 4)).all()
    rounding = {name: table.rounding.sum() for name, table in tables.items()}
    assert rounding["float32"] < rounding["float16"] < rounding["bfloat16"]
    assert tables["float32"].differs.sum() < tables["float16"].differs.sum()


def test_summed_differences_exact():
    a = [torch.tensor([1.0, -2.0, 0.5]), torch.tensor([[0.25, 0.0]])]
    b = [torch.tensor([0.0, 0.0, 0.5]), torch.tensor([[-0.25, 0.125]])]
    assert summed_max_difference(a, b) == 2.0 + 0.5
    assert summed_l1_difference(a, b) == 1.0 + 2.0 + 0.5 + 0.125
    assert summed_l1_difference(a, a) == summed_max_difference(a, a) == 0.0
    half = [t.half() for t in a]  # gradients of any format, compared in float64
    assert summed_l1_difference(half, b) == summed_l1_difference(a, b)
    with pytest.raises(ValueError, match="summed_l1_difference: the two gradient lists"):
        summed_l1_difference(a, b[:1])
    with pytest.raises(ValueError, match="summed_max_difference: the two gradient lists"):
        summed_max_difference(a, [b[0], b[1].T])


def test_calibrate_threshold_follows_boustanys_rule():
    norms = [0.0, 0.0, 2.0**-10, 2.0**-3, 0.5]
    assert calibrate_threshold(norms, 16) == 2.0**-10   # smallest positive norm
    assert calibrate_threshold(norms, 32) == calibrate_threshold(norms, 64) == 0.5  # largest norm
    assert calibrate_threshold([0.0], 64) == 0.0
    with pytest.raises(ValueError, match="at least one positive norm"):
        calibrate_threshold([0.0, 0.0], 16)
    for bad in ([], [1.0, -1.0], [float("nan")]):
        with pytest.raises(ValueError, match="calibrate_threshold: `norms`"):
            calibrate_threshold(bad, 32)
    with pytest.raises(TypeError, match="calibrate_threshold: `bits`"):
        calibrate_threshold([1.0], 16.0)


def test_tie_kinds_and_zones_are_exact():
    table = tie_kind_examples().set_index(["kind", "dtype"])
    assert list(TIE_KIND_PATCHES) == list(table.index.get_level_values("kind").unique())
    formats = ["float16", "bfloat16", "float32", "float64"]
    # a dead window ties at 0 and the ReLU kills its gradient; identical patches tie at a
    # positive max, but both rules send the gradient through the same input: no zone.
    for kind in ("dead window", "identical patches"):
        rows = table.loc[kind]
        assert rows.tie.all() and not rows.differs.any() and (rows.zone == "neither").all()
        assert rows.active.all() == (kind == "identical patches")
    genuine = table.loc["genuine tie"]
    assert genuine.differs.all() and (genuine.zone == "bifurcation").all()
    rounding = table.loc["rounding tie"].reindex(formats)
    # 1 + 2^-12 rounds to 1 with 11 or 8 significand bits, not with 24 or 53
    assert rounding.tie.tolist() == rounding.differs.tolist() == [True, True, False, False]
    assert rounding.zone.tolist() == ["compensation", "compensation", "neither", "neither"]
    with pytest.raises(TypeError, match="tie_kind_examples: `dtype`"):
        tie_kind_examples(["int32"])


@pytest.mark.slow
def test_train_is_deterministic_and_shapes(data):
    factory = partial(digits_cnn, 4)
    runs = [train(factory, data, ties=rule, dtype="float64", epochs=2, batch_size=50)
            for rule in ("first", "first", "uniform")]
    assert runs[0] == runs[1]
    assert len(runs[0].losses) == len(runs[0].active_ties) == 2 * math.ceil(225 / 50)
    assert runs[0].losses[-1] < runs[0].losses[0]
    assert abs(runs[0].test_accuracy - runs[2].test_accuracy) <= 1 / 75


def test_accuracy_study_tables(data):
    runs, steps = accuracy_study(partial(digits_cnn, 2), data, dtypes=["float32", torch.float64],
                                 seeds=[0, 1],
                                 rules=["uniform"], epochs=1, batch_size=100)
    expected = [["float32", 0], ["float32", 1], ["float64", 0], ["float64", 1]]
    assert runs[["dtype", "seed"]].values.tolist() == expected
    assert len(steps) == 4 * 3 and steps.step.max() == 2
    assert runs.accuracy.between(0, 1).all()


def test_rounding_tie_model_scales_with_significand():
    table = rounding_tie_model({"float16": 1e-4, "bfloat16": 8e-4}, 10_000).set_index("dtype")
    assert table.loc["bfloat16", "rate"] / table.loc["float16", "rate"] == 8.0
    assert table.loc["float32", "rate"] == pytest.approx(1e-4 * 2.0**-13, rel=1e-12)
    assert table.loc["float16", "minibatches"] == pytest.approx(1 - math.exp(-1.0), rel=1e-12)
    assert table.loc["float64", "minibatches"] < 1e-10
    assert list(table.index) == list(SIGNIFICAND_BITS)
    assert VGG11_CIFAR10_WINDOWS == 64 * 16**2 + 128 * 8**2 + 256 * 4**2 + 512 * 2**2 + 512 * 1**2


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: digits_data(1), ValueError, "digits_data: `n_samples`"),
        (lambda: digits_data(100, test_fraction=1.0), ValueError, "digits_data: `test_fraction`"),
        (lambda: digits_data(100, image_size=4), ValueError, "digits_data: `image_size`"),
        (lambda: digits_cnn(0), ValueError, "digits_cnn: `width`"),
        (lambda: digits_cnn(2, ties="random"), ValueError, "digits_cnn: `ties`"),
        (lambda: digits_cnn(2, image_size=10), ValueError, "digits_cnn: `image_size`"),
        (lambda: rounding_tie_model({"float32": 0.0}, 10), ValueError, "rounding_tie_model: `rates`"),
        (lambda: rounding_tie_model({"float32": 1e-9}, 0), ValueError, "rounding_tie_model: `windows`"),
        (lambda: digits_data(2000), ValueError, "digits_data: `n_samples` must be <= 1797"),
        (lambda: digits_data(100.0), TypeError, "digits_data: `n_samples`"),
        (lambda: digits_cnn(2.0), TypeError, "digits_cnn: `width`"),
        (lambda: tie_fraction(nn.Sequential(nn.MaxPool2d(2)), torch.zeros(1, 1, 4, 4)), ValueError,
         "tie_fraction: `model` ran no mtlib.maxpool.MaxPool2d"),
    ],
)
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    ("fn", "kwargs", "error", "message"),
    [
        ("protocol", {"dtype": "float17"}, TypeError, "gradient_disagreement: `dtype`"),
        ("protocol", {"dtype": torch.int32}, TypeError, "gradient_disagreement: `dtype`"),
        ("protocol", {"batches": 0}, ValueError, "gradient_disagreement: `batches`"),
        ("protocol", {"batch_size": 0}, ValueError, "gradient_disagreement: `batch_size`"),
        ("protocol", {"thresholds": {16: 1e-3}}, ValueError, "gradient_disagreement: `thresholds`"),
        ("train", {"ties": "all"}, ValueError, "train: `ties`"),
        ("train", {"epochs": 0}, ValueError, "train: `epochs`"),
        ("train", {"batch_size": 1.5}, TypeError, "train: `batch_size`"),
        ("train", {"lr": 0.0}, ValueError, "train: `lr`"),
        ("train", {"dtype": "int8"}, TypeError, "train: `dtype`"),
        ("no_pool", {}, ValueError, "gradient_disagreement: `model` ran no mtlib.maxpool.MaxPool2d"),
    ],
)
def test_argument_errors(data, fn, kwargs, error, message):
    factory = partial(digits_cnn, 2)
    if fn == "no_pool":
        fn, factory = "protocol", lambda ties: nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(error, match=message):
        if fn == "protocol":
            gradient_disagreement(factory, data, **{"dtype": F64, **kwargs})
        else:
            train(factory, data, **{"ties": "first", "dtype": F64, **kwargs})
