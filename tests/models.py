"""Hand-written architectures the tests grow (each with an example input)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fxgrow.testing.models import tiny_resnet


def _perturb_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm layers non-trivial statistics, as a trained model has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model


def mlp():
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 24), nn.Tanh(),
                         nn.Linear(24, 5)), torch.randn(8, 10)


class LeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def lenet():
    return LeNet(), torch.randn(4, 1, 28, 28)


def vgg_bn():
    layers, c = [], 3
    for v in (8, "M", 16, 16, "M", 24):
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            c = v
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
                          nn.Linear(24 * 4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    return _perturb_bn(model).eval(), torch.randn(4, 3, 16, 16)


def resnet():
    return tiny_resnet(width=8), torch.randn(2, 3, 16, 16)


class DenseBlock(nn.Module):
    """DenseNet-style: each layer sees the concatenation of all previous outputs."""

    def __init__(self, cin=8, growth=4, n=3):
        super().__init__()
        self.layers = nn.ModuleList()
        c = cin
        for _ in range(n):
            self.layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, growth, 3, padding=1)))
            c += growth
        self.stem = nn.Conv2d(3, cin, 3, padding=1)
        self.head = nn.Linear(c, 7)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1)))
        y = torch.cat(feats, dim=1)
        return self.head(y.mean((2, 3)))


def densenet():
    return _perturb_bn(DenseBlock()).eval(), torch.randn(2, 3, 8, 8)


class SEBlock(nn.Module):
    def __init__(self, c=16, r=4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)
        self.out = nn.Linear(c, 3)

    def forward(self, x):
        x = F.relu(self.conv(x))
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        x = x * s
        return self.out(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def se_block():
    return SEBlock(), torch.randn(2, 3, 8, 8)


class MobileBlock(nn.Module):
    """Inverted residual: expand 1x1, depthwise 3x3, project 1x1, residual add."""

    def __init__(self, c=8, expand=4):
        super().__init__()
        h = c * expand
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
            nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.Hardswish(),
            nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))
        self.dw_mult = nn.Conv2d(c, 2 * c, 3, padding=1, groups=c)  # channel multiplier 2
        self.head = nn.Linear(2 * c, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        x = F.gelu(self.dw_mult(x))
        return self.head(x.mean([2, 3]))


def mobilenet_block():
    return _perturb_bn(MobileBlock()).eval(), torch.randn(2, 3, 8, 8)


class GroupedNet(nn.Module):
    """ResNeXt-style grouped 3x3 between 1x1 convs."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 1)
        self.b = nn.Conv2d(16, 24, 3, padding=1, groups=4)
        self.c = nn.Conv2d(24, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.b(F.relu(self.a(x))))
        return self.fc(F.relu(self.c(x)).amax(dim=(2, 3)))


def grouped():
    return GroupedNet(), torch.randn(2, 3, 6, 6)


def conv1d_net():
    return _perturb_bn(nn.Sequential(
        nn.Conv1d(4, 12, 3, padding=1), nn.BatchNorm1d(12), nn.LeakyReLU(0.1),
        nn.Conv1d(12, 10, 3), nn.SiLU(), nn.AvgPool1d(2), nn.Flatten(),
        nn.Linear(10 * 7, 6))).eval(), torch.randn(3, 4, 16)


def conv3d_net():
    return _perturb_bn(nn.Sequential(
        nn.Conv3d(2, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(),
        nn.MaxPool3d(2), nn.Conv3d(6, 8, 1), nn.Sigmoid(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 3))).eval(), torch.randn(2, 2, 6, 6, 6)


class SplitNet(nn.Module):
    """A producer whose channels are split unevenly: refinement A -> A1 ⊕ A2."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 10)
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(7, 4)

    def forward(self, x):
        h = F.gelu(self.fc(x))
        p, q = torch.split(h, [3, 7], dim=1)
        return self.a(p) + self.b(q) + self.b(h[:, 3:])


def split_net():
    return SplitNet(), torch.randn(5, 6)


class HardtanhMLP(nn.Module):
    """A functional activation with non-default bounds (deepen must keep them)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.b(F.hardtanh(self.a(x), -0.5, 2.0))


def hardtanh_mlp():
    return HardtanhMLP(), torch.randn(6, 4)


class LoopOverBatch(nn.Module):
    """Runs ``x.size(0) % 3 + 1`` of its layers: the path through the model depends on
    the batch size, which only torch.export captures (as a guard on it)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.i = nn.Linear(4, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(3))
        self.o = nn.Linear(width, 2)

    def forward(self, x):
        h = self.i(x)
        for k in range(x.shape[0] % 3 + 1):
            h = torch.tanh(self.layers[k](h))
        return self.o(h)


ALL = {
    "mlp": mlp, "lenet": lenet, "vgg_bn": vgg_bn, "resnet": resnet, "densenet": densenet,
    "se_block": se_block, "mobilenet_block": mobilenet_block, "grouped": grouped,
    "conv1d": conv1d_net, "conv3d": conv3d_net, "split": split_net,
}
