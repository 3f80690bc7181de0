"""Why is D_R not more robust than D on fast-profile MNIST? Variants of Ilyas et al.'s construction.

1,000 training images, 500 test images, fresh mnist_net models (20 epochs Adam), evaluated clean and under 20-step
PGD at L2 ε = 1, 2 and L∞ ε = 0.1, 0.2. Source robust models: the zoo's L2 (mnist-cnn-l2, ε = 2) and L∞
(mnist-cnn-pgd, ε = 0.3) adversarially trained CNNs; D_NR uses the standard mnist-cnn. Inversions start from another
training image (Ilyas et al.) or, as a diagnostic, from uniform noise. Results: docs/features.md.

    python docs/experiments/features_mnist_probe.py 1000
"""

import sys
import time

import torch

from advlab import config, data, features, models, train, zoo
from advlab.attacks import pgd

torch.set_num_threads(1)
t0 = time.time()
n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
x, y, _ = data.load("mnist", "train")
xt, yt, _ = data.load("mnist", "test")
x, y, xt, yt = x[:n], y[:n], xt[:500], yt[:500]
sources = {"l2": zoo.load("mnist-cnn-l2"), "linf": zoo.load("mnist-cnn-pgd")}
standard = zoo.load("mnist-cnn")
noise = torch.Generator().manual_seed(0)


def fresh(xs, ys, seed=0):
    config.seed_everything(seed)
    m = models.build("mnist_net")
    train.fit(m, xs, ys, epochs=20, batch_size=128, lr=3e-3, optimizer="adam", weight_decay=0.0, progress=False)
    return m.eval()


def evaluate(m):
    out = [(m(xt).argmax(1) == yt).float().mean().item()]
    out += [(~pgd(m, xt, yt, e, norm=2, steps=20).success).float().mean().item() for e in (1.0, 2.0)]
    out += [(~pgd(m, xt, yt, e, norm="inf", steps=20).success).float().mean().item() for e in (0.1, 0.2)]
    return " ".join(f"{v:.3f}" for v in out)


def report(name, xs, ys=y):
    print(f"{name:24s} {evaluate(fresh(xs, ys))}   ({time.time() - t0:.0f} s)", flush=True)


print(f"{'training set':24s} clean L2@1  L2@2  Linf@.1 Linf@.2")
report("D", x)
for tag, src in sources.items():
    ds = features.representation_dataset(
        src, x, y, steps=100, step_size=0.5, generator=torch.Generator().manual_seed(1)
    )
    report(f"D_R ({tag} source)", ds.x)
    g = features.penultimate(src)
    inv = features.invert_representation(g, x, torch.rand(x.shape, generator=noise), steps=100, step_size=0.5)
    report(f"D_R ({tag}, noise start)", inv.x)
ds = features.representation_dataset(
    standard, x, y, steps=100, step_size=0.5, generator=torch.Generator().manual_seed(1)
)
report("D_NR", ds.x)
