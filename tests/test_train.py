import pytest
import torch

import advlab
from advlab import AdvlabError, data, models, train


@pytest.fixture(scope="module")
def small_mnist():
    x, y, _ = data.load("mnist", "train", n=600)
    xt, yt, _ = data.load("mnist", "test", n=300)
    return x, y, xt, yt


def test_fit_learns_and_is_deterministic(small_mnist):
    x, y, xt, yt = small_mnist
    runs = []
    for _ in range(2):
        advlab.seed_everything(0)  # the initial weights come from the global stream
        m = models.mnist_net(width=0.5)
        hist = train.fit(m, x, y, epochs=3, lr=3e-3, optimizer="adam", seed=1, progress=False, x_val=xt, y_val=yt)
        runs.append((m, hist))
    (m1, h1), (m2, h2) = runs
    assert h1.loss == h2.loss
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert h1.val_accuracy[-1] > 0.5  # far above chance (0.1) after 3 short epochs on 600 images
    assert not m1.training


def test_perturb_hook_sees_eval_mode_and_changes_batches(small_mnist):
    x, y, *_ = small_mnist
    seen = []

    def perturb(model, xb, yb):
        seen.append((model.training, len(xb)))
        return torch.zeros_like(xb)  # train on blank images only

    trained_on = []

    def loss_fn(model, xb, yb):
        trained_on.append((model.training, xb.abs().sum().item()))
        return torch.nn.functional.cross_entropy(model(xb), yb)

    m = models.mnist_net(width=0.5)
    train.fit(m, x[:256], y[:256], epochs=1, batch_size=128, perturb=perturb, loss_fn=loss_fn, progress=False)
    assert seen == [(False, 128), (False, 128)]
    assert trained_on == [(True, 0.0), (True, 0.0)]  # the step used the perturbed batch, in train mode


def test_replays_step_on_each_batch_again_and_hand_the_input_gradient_to_the_hook():
    # Free adversarial training's contract: every replay is one optimiser step; a hook with reuse_gradient gets the
    # loss's gradient with respect to the batch it returned. With lr = 0 the weights stay, so that gradient can be
    # recomputed here.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(40, 1, 2, 2), torch.randint(0, 3, (40,))
    seen = []

    class Hook:
        def __call__(self, model, xb, yb):
            seen.append([xb + 0.1, yb])
            return seen[-1][0]

        def reuse_gradient(self, grad):
            seen[-1].append(grad.clone())

    hist = train.fit(model, x, y, epochs=5, batch_size=20, replays=3, lr=0.0, optimizer="sgd", weight_decay=0.0,
                     schedule="constant", perturb=Hook(), progress=False)
    assert len(hist.loss) == 2 and len(seen) == 2 * 2 * 3  # ceil(5 / 3) passes of 2 batches, 3 replays each
    for xb, yb, grad in seen:
        xb = xb.detach().requires_grad_(True)
        (want,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xb), yb), xb)
        assert torch.allclose(grad, want)
    with pytest.raises(AdvlabError, match="replays"):
        train.fit(model, x, y, replays=0, progress=False)


def test_loss_fn_and_callback_stop(small_mnist):
    x, y, *_ = small_mnist
    calls = []

    def loss_fn(model, xb, yb):
        calls.append(1)
        return torch.nn.functional.cross_entropy(model(xb), yb)

    hist = train.fit(
        models.logistic(), x, y, epochs=5, loss_fn=loss_fn, callback=lambda e, m, h: e == 1, progress=False
    )
    assert hist.stopped_early == 1 and len(hist.loss) == 2
    assert len(calls) == 2 * ((len(x) + 127) // 128)


def test_schedules():
    assert train.lr_at("onecycle", 1.0, 0.3) == pytest.approx(1.0)
    assert train.lr_at("onecycle", 1.0, 0.0) == 0.0 and train.lr_at("onecycle", 1.0, 1.0) == 0.0
    assert train.lr_at("cosine", 2.0, 0.5) == pytest.approx(1.0)
    with pytest.raises(AdvlabError):
        train.lr_at("warp", 1.0, 0.5)


def test_shift_augmentation_moves_pixels():
    x = torch.zeros(2, 1, 5, 5)
    x[:, :, 2, 2] = 1
    out = train.augment_shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.sum() == 2
    assert all(o[0, 1:4, 1:4].sum() == 1 for o in out)


def test_accuracy_errors():
    with pytest.raises(AdvlabError, match="match"):
        train.accuracy(models.logistic(), torch.rand(3, 1, 28, 28), torch.zeros(2, dtype=torch.long))


def test_weight_average_is_the_exponential_moving_average_of_the_steps():
    from advlab.train import WeightAverage

    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.zero_()
    avg = WeightAverage(model, decay=0.5)
    expected = torch.zeros(1, 2)
    for t, value in enumerate([4.0, 8.0, 2.0, 6.0, 6.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        avg.update(model)
        d = min(0.5, (1 + t) / (10 + t))  # the ramped decay: the first steps count fully
        expected = d * expected + (1 - d) * value
    avg.copy_to(model)
    assert torch.allclose(model.weight, expected)


def test_fit_with_ema_ends_on_the_averaged_weights():
    from advlab import data
    from advlab.train import WeightAverage

    x, y, _ = data.load("toy-circle", "train", profile="fast")
    arch = {"in_shape": (2,), "classes": 2, "mean": (0.0,), "std": (1.0,)}
    plain, averaged = models.build("logistic", **arch), models.build("logistic", **arch)
    averaged.load_state_dict(plain.state_dict())
    runs = []  # per run, the weights before each optimiser step

    def loss_fn(model, xb, yb):
        runs[-1].append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return torch.nn.functional.cross_entropy(model(xb), yb)

    kw = {"epochs": 3, "batch_size": 64, "lr": 0.1, "optimizer": "adam", "progress": False, "loss_fn": loss_fn}
    for model, ema in ((plain, 0.0), (averaged, 0.9)):
        runs.append([])
        train.fit(model, x, y, ema=ema, **kw)
    steps = runs[0][1:] + [plain.state_dict()]  # the plain run's weights after each step
    assert len(steps) == 3 * -(-len(x) // 64)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(*runs, strict=True) for k in a), "EMA must not change training"
    # the averaged model ends on the average (WeightAverage, tested above) of the weights after every step
    oracle = models.build("logistic", **arch)
    oracle.load_state_dict(runs[0][0])
    average = WeightAverage(oracle, 0.9)
    for state in steps:
        oracle.load_state_dict(state)
        average.update(oracle)
    average.copy_to(oracle)
    for k, v in oracle.state_dict().items():
        torch.testing.assert_close(averaged.state_dict()[k], v, rtol=1e-6, atol=1e-7)
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), averaged.parameters())), "not the last iterate"
    with pytest.raises(AdvlabError, match="decay"):
        train.fit(plain, x, y, ema=1.5, **kw)
