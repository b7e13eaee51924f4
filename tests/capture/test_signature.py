"""Specialised keyword arguments stay accepted at their captured value (fxgrow.capture.signature)."""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import SpecialisedInputError


class Scaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 2)

    def forward(self, x, scale=1.0, *, shift=None):
        y = self.fc2(torch.relu(self.fc1(x))) * scale
        return y if shift is None else y + shift


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_captured_defaults_are_accepted_and_others_refused(capture):
    m, x = Scaled().eval(), torch.randn(3, 4)
    g = fxgrow.widen(m, x, 2.0, capture=capture)
    ref = m(x)
    assert torch.allclose(g(x), ref, atol=1e-6)
    assert torch.allclose(g(x, scale=1.0, shift=None), ref, atol=1e-6)
    with pytest.raises(SpecialisedInputError, match="`scale`.*scale=1.0 only.*given 2.0"):
        g(x, scale=2.0)
    with pytest.raises(SpecialisedInputError, match="`shift`.*a tensor of shape"):
        g(x, shift=torch.ones(2))
    # the guard travels with graphs grown again
    again = fxgrow.widen(g, x, 1.5, verify=False)
    with pytest.raises(SpecialisedInputError):
        again(x, scale=3.0)


def test_an_argument_given_in_the_example_stays_an_input():
    m, x = Scaled().eval(), torch.randn(3, 4)
    g = fxgrow.widen(m, (x, 2.0), 2.0, capture="export")
    assert "scale" not in g.meta["fxgrow.capture"]["specialised"]
