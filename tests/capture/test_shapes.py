"""fxgrow.capture.shapes: what is recorded per node."""

import torch

from fxgrow.capture.shapes import Opaque, TensorSpec, describe


def test_describe_values():
    assert describe(torch.zeros(2, 3)) == TensorSpec((2, 3), torch.float32)
    assert describe(torch.Size([4, 5])) == (4, 5)
    assert describe((torch.zeros(1), 3)) == (TensorSpec((1,), torch.float32), 3)
    assert describe(slice(1, 2)) == slice(1, 2)
    assert describe(object()) == Opaque("object")
