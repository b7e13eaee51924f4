"""Task: mnist1d (Greydanus, 2020), generated locally by the ``mnist1d`` package.

``mnist1d.data.make_dataset`` draws the 1-D digit sequences from its templates with a fixed seed
(no download); the package's own train/test split is our train/validation split, inputs
standardised with the training statistics.  Families: an MLP (two hidden ReLU layers) and a 1-D
CNN with BatchNorm; SGD with momentum 0.9, batch 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ["mlp", "cnn"]
_DATA = {}


def setup(cfg):
    key = cfg["samples"]
    if key in _DATA:
        return _DATA[key]
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = cfg["samples"]
    d = make_dataset(args)
    x, xv = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["x_test"], dtype=torch.float32)
    mean, std = x.mean(), x.std()
    _DATA[key] = {"train": ((x - mean) / std, torch.tensor(d["y"], dtype=torch.long)),
                  "val": ((xv - mean) / std, torch.tensor(d["y_test"], dtype=torch.long))}
    return _DATA[key]


def describe(cfg) -> str:
    d = setup(cfg)
    return (f"mnist1d, {len(d['train'][1])} training and {len(d['val'][1])} validation sequences "
            f"of length {d['train'][0].shape[1]}")


class MLP(nn.Module):
    def __init__(self, h):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(40, h), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(h, h), nn.ReLU()
        self.out = nn.Linear(h, 10)

    def forward(self, x):
        return self.out(self.act2(self.fc2(self.act1(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(1, c, 5, padding=2), nn.BatchNorm1d(c)
        self.conv2, self.bn2 = nn.Conv1d(c, c, 3, padding=1), nn.BatchNorm1d(c)
        self.conv3, self.bn3 = nn.Conv1d(c, c, 3, padding=1), nn.BatchNorm1d(c)
        self.out = nn.Linear(c * 10, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        x = F.max_pool1d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.max_pool1d(F.relu(self.bn3(self.conv3(x))), 2)
        return self.out(x.flatten(1))


def small(family, cfg, seed):
    torch.manual_seed(seed)
    return MLP(cfg["width"]["mlp"]) if family == "mlp" else CNN(cfg["width"]["cnn"])


def batch(family, cfg, gen):
    x, y = setup(cfg)["train"]
    i = torch.randint(0, len(y), (cfg["batch"],), generator=gen)
    return x[i], y[i]


def example(family, cfg):
    return setup(cfg)["train"][0][:64]


def loss(family, model, x, y):
    return F.cross_entropy(model(x), y)


@torch.no_grad()
def evaluate(family, cfg, model):
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    x, y = (t.to(dev) for t in setup(cfg)["val"])
    out = model(x)
    model.train(was)
    return {"loss": float(F.cross_entropy(out, y)), "acc": float((out.argmax(1) == y).float().mean())}


def optimizer(family, params, lr):
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def lr(family, cfg):
    return cfg["lr"][family]


def clip(family):
    return None


def deepen(family, cfg, small_model, seed):
    """Depth: a zero-initialised residual block after every layer (BatchNorm mirrored in the
    CNN, calibrated on training data).

    HOOK(grow_into): when ``fxgrow.grow_into`` lands, grow into a deeper ``MLP``/``CNN`` of this
    module instead; only this function changes.
    """
    import fxgrow

    dev = cfg["device"]
    return fxgrow.deepen(small_model, example(family, cfg).to(dev), after="all", method="residual",
                         calibration=setup(cfg)["train"][0][:1024].to(dev), seed=seed)


def reinit(family, model, seed):
    """The architecture with PyTorch's default initialisation (and fresh BatchNorm statistics)."""
    torch.manual_seed(seed)
    for mod in model.modules():
        if mod is not model and hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
        if hasattr(mod, "reset_running_stats"):
            mod.reset_running_stats()
    return model


def probe(family):
    return "fc1.weight" if family == "mlp" else "conv2.weight"
