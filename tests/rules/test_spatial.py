"""Padding, permutes around spatial ops, im2col (fxgrow.rules.spatial)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import blocked, exact_or_refused, grow_exactly


def test_pad_permute_unsqueeze_squeeze():
    class P(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(2, 4, 1)
            self.b = nn.Linear(6, 3)

        def forward(self, x):
            h = F.pad(self.a(x), (0, 0, 1, 1))  # pads the channel dim with zeros
            h = h.permute(0, 2, 1).unsqueeze(1).squeeze(1)
            return self.b(h)

    m, x = P(), torch.randn(2, 2, 5)
    a = fxgrow.analyze(m, x)
    assert a.group("a").growable
    grow_exactly(m, x, {"a": 7})


class _Mixer(nn.Module):
    """Linear -> an op along a dim that holds the Linear's neurons -> Linear."""

    def __init__(self, op, out):
        super().__init__()
        self.a, self.op, self.b = nn.Linear(4, 16), op, nn.Linear(out, 3)

    def forward(self, x):
        return self.b(self.op(self.a(x).unsqueeze(1)).flatten(1))


@pytest.mark.parametrize("op, out", [
    (lambda h: F.avg_pool1d(h, 2), 8), (lambda h: F.max_pool1d(h, 2), 8),
    (lambda h: F.adaptive_avg_pool1d(h, 4), 4), (nn.AvgPool1d(2), 8),
    (lambda h: F.interpolate(h, scale_factor=2.0), 32),
    (lambda h: F.conv1d(h, torch.ones(1, 1, 3, dtype=torch.float64), padding=1), 16),
])
def test_ops_mixing_positions_along_neurons_block_them(op, out):
    m = _Mixer(op, out).double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert "mixes positions" in blocked(m, x, "a")
    assert exact_or_refused(m, x, 2.0) is not None  # nothing else may go wrong


def test_pooling_over_space_still_grows_channels():
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.MaxPool2d(2), nn.Upsample(scale_factor=2.0),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)).double().eval()
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert fxgrow.analyze(m, x).group("0").growable
    grow_exactly(m, x, 1.5)


# -- padding: amounts read from sizes, crops, padding modules -------------------
class _WindowPad(nn.Module):
    """Swin's window attention on (B, H, W, C): pad H and W up to multiples of the
    window by amounts read from the sizes, partition, mix channels, reverse, crop."""

    def __init__(self, ws=4):
        super().__init__()
        self.ws, self.a, self.b, self.c = ws, nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h, ws = self.a(x), self.ws
        B, H, W, C = h.shape
        pad_h, pad_w = (ws - H % ws) % ws, (ws - W % ws) % ws
        h = F.pad(h, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        win = h.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)
        win = torch.relu(self.b(win))
        h = win.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
        return self.c(h[:, :H, :W, :].contiguous())


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_window_padding_by_amounts_read_from_sizes_grows_channels(capture):
    m, x = _WindowPad().double(), torch.randn(2, 6, 7, 3, dtype=torch.float64)
    a = fxgrow.analyze(m, x, capture=capture)
    assert a.group("a").growable and a.group("b").growable, a
    grown = grow_exactly(m, x, 2.0, capture=capture)
    grow_exactly(m, x, 1.5, capture=capture)
    if capture == "fx":  # the amounts stay computed from the sizes, not baked in
        pad = next(n for n in grown.graph.nodes if n.target is F.pad)
        assert all(isinstance(v, (int, torch.fx.Node)) for v in pad.args[1]) and any(
            isinstance(v, torch.fx.Node) for v in pad.args[1])
        # ... so the grown model pads other sizes by their own amounts (here none, and 3)
        for shape in [(3, 8, 8, 3), (1, 5, 9, 3)]:
            y = torch.randn(shape, dtype=torch.float64)
            torch.testing.assert_close(grown(y), m(y), rtol=1e-9, atol=1e-9)


class _Pads(nn.Module):
    def __init__(self, pad):
        super().__init__()
        self.a, self.pad, self.b = nn.Conv2d(3, 8, 3), pad, nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.b(torch.relu(self.pad(torch.relu(self.a(x)))))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("pad", [nn.ZeroPad2d((-1, 1, -1, 1)), nn.ConstantPad2d((1, 2, 0, 1), 0.5),
                                 nn.ReflectionPad2d(1), nn.ReplicationPad2d((1, 0, 2, 1)),
                                 nn.CircularPad2d(1), lambda h: F.pad(h, (-1, -2, 1, 0))])
def test_crops_and_non_constant_pads_over_space_grow_channels(pad, capture):
    m, x = _Pads(pad).double(), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 1.5, capture=capture)


class _PadNeurons(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.a = how, nn.Linear(3, 8)
        self.b = nn.Linear({"read": 16, "crop": 7, "reflect": 10}[how], 2)

    def forward(self, x):
        h = self.a(x)
        if self.how == "read":  # pad the features up to 16: the amount counts neurons
            return self.b(F.pad(h, (0, 16 - h.shape[-1])))
        if self.how == "crop":  # drop the last neuron
            return self.b(F.pad(h, (0, -1)))
        return self.b(F.pad(h, (1, 1), mode="reflect"))


@pytest.mark.parametrize("how, why", [
    ("read", "a padding amount is read from the size of a dim that holds neurons"),
    ("crop", "crops positions along a dim that holds neurons"),
    ("reflect", "reflect-pads positions along a dim that holds neurons")])
def test_padding_that_moves_neurons_blocks_them(how, why):
    m, x = _PadNeurons(how).double(), torch.randn(2, 5, 3, dtype=torch.float64)
    reason = blocked(m, x, "a")
    assert why in reason and "(node `pad`)" in reason
    exact_or_refused(m, x, 2.0)


def test_constant_padding_of_neurons_by_literals_grows():
    m, x = _PadNeurons("read").double(), torch.randn(2, 5, 3, dtype=torch.float64)
    # through export the amount is a literal (8): the padding is 8 zeros, whatever grows
    grown = grow_exactly(m, x, 2.0, capture="export")
    assert grown.get_parameter("b.weight").shape == (2, 24)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resizing_through_export_grows_channels(mode):
    class Resize(nn.Module):  # a position-embedding resample
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.b(F.interpolate(self.a(x), size=(4, 4), mode=mode, antialias=True))

    m, x = Resize().double(), torch.randn(2, 3, 9, 9, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture="export").group("a").growable
    grow_exactly(m, x, 1.5, capture="export")


# -- im2col: F.unfold / nn.Unfold, F.fold / nn.Fold, Tensor.unfold ------------------
class _Blocks(nn.Module):
    """Conv -> sliding blocks (halonet's ``Tensor.unfold``, tnt/volo's ``nn.Unfold``/``F.fold``)
    -> a layer reading the channels."""

    def __init__(self, how):
        super().__init__()
        self.how, self.a = how, nn.Conv2d(3, 4, 1)
        self.unf, self.fold = nn.Unfold(2, stride=2), nn.Fold((6, 6), 2, stride=2)
        self.b, self.c = nn.Linear(16, 5), nn.Conv2d(4, 2, 1)

    def forward(self, x):  # (B, 3, 6, 6)
        h = self.a(x)
        if self.how == "F.unfold":  # (B, 4 * 2 * 2, 9): channel-major blocks
            return self.b(F.unfold(h, 2, stride=2).transpose(1, 2))
        if self.how == "nn.Unfold":
            return self.b(self.unf(h).transpose(1, 2))
        if self.how == "unfold-fold":
            return self.c(F.fold(F.unfold(h, (2, 2), padding=1) * 2, (6, 6), 2, padding=1))
        if self.how == "nn.Fold":
            return self.c(self.fold(self.unf(h)))
        if self.how == "Tensor.unfold":  # (B, 4, 3, 3, 2, 2)
            return self.c(h.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2)))
        k = h.shape[-1] // 3  # window size and step read from a free size
        return self.c(h.unfold(2, k, k).unfold(3, k, k).amax((-1, -2)))


@pytest.mark.parametrize("capture", ["fx", "export"])
@pytest.mark.parametrize("how", ["F.unfold", "nn.Unfold", "unfold-fold", "nn.Fold",
                                 "Tensor.unfold", "Tensor.unfold-sizes"])
def test_sliding_blocks_over_space_grow_channels(how, capture):
    m, x = _Blocks(how).double(), torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert fxgrow.analyze(m, x, capture=capture).group("a").growable
    grow_exactly(m, x, 2.0, capture=capture)
    grow_exactly(m, x, 1.5, capture=capture)  # non-uniform copies: blocks stay channel-major


def test_fold_of_a_projection_factors_its_rows():
    """A Linear making ``C·K`` rows folded into ``C`` channels: ``C`` grows by whole blocks
    of ``K`` rows (the kernel positions stay fixed)."""
    class Fold(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Linear(3, 16), nn.Conv2d(4, 2, 1)

        def forward(self, x):  # (B, 9, 3) -> (B, 16, 9) -> (B, 4, 6, 6)
            return self.c(F.fold(self.a(x).transpose(1, 2), (6, 6), 2, stride=2))

    m, x = Fold().double(), torch.randn(2, 9, 3, dtype=torch.float64)
    g = grow_exactly(m, x, 1.5)  # `a` makes two groups: C (grows) and K (fixed)
    assert g.a.out_features == 24 and g.c.in_channels == 6


class _BlocksAlongNeurons(nn.Module):
    def __init__(self, op, out):
        super().__init__()
        self.op, self.a, self.b = op, nn.Linear(3, 6), nn.Linear(out, 2)

    def forward(self, x):  # (B, 3)
        return self.b(self.op(self.a(x)).flatten(1))


@pytest.mark.parametrize("op, out, why", [
    (lambda h: h.unfold(1, 2, 2), 6, "unfold reads windows of positions"),
    (lambda h: F.unfold(h[:, None, None, :], (1, 2)), 10, "sliding blocks of positions"),
    (lambda h: F.fold(h[:, None, :], (1, 6), (1, 1)), 6, "sums blocks into positions"),
])
def test_sliding_blocks_along_neurons_block_them(op, out, why):
    m, x = _BlocksAlongNeurons(op, out).double(), torch.randn(2, 3, dtype=torch.float64)
    reason = blocked(m, x, "a")
    assert why in reason and "(node `" in reason
    assert exact_or_refused(m, x, 2.0) is not None


def test_unfold_window_read_from_a_neuron_count_blocks_it():
    class Window(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 2), nn.Conv1d(1, 2, 1)

        def forward(self, x):  # (B, 1, 8): windows as long as the Linear is wide
            h = self.a(x[:, 0, :3])
            return self.b(x.unfold(2, h.shape[-1], 2).mean(-1)).sum(-1) + h

    m, x = Window().double(), torch.randn(2, 1, 8, dtype=torch.float64)
    assert "unfold window read from the size" in blocked(m, x, "a")
    assert exact_or_refused(m, x, 2.0) is not None
