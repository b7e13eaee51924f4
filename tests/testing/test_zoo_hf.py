"""A small sample of HuggingFace architectures, grown exactly (fxgrow/testing/zoo_hf.py).

Every model type of the auto registry is swept by ``benchmarks/zoo_hf.py``
into docs/zoo.md; here a few, built from the generic small config in
float64 (decoder, encoder, encoder-decoder, GPT-2's Conv1D, mixture of
experts, vision), each a few seconds on 2 cores, are analysed, widened by
every zoo step with ``verify=False`` and compared with the original on the
example and a fresh input.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
from fxgrow.testing import zoo, zoo_hf  # noqa: E402
from fxgrow.testing.zoo_hf_config import choose_class, model_types, small_config  # noqa: E402

SAMPLE = ["llama", "bert", "t5", "gpt2", "mixtral", "vit"]
#: float64 where the model runs in it; HF attention takes its softmax in float32, so
#: float64 rounding differences come back at float32's scale (llama: 7e-8): 1e-6 still
#: separates exact from wrong (a wrong widening is off by O(1))
TOL = {torch.float64: 1e-6, torch.float32: 1e-4}
#: torch._grouped_mm (the experts) has no float64 kernel
FLOAT32 = {"mixtral"}


@pytest.mark.parametrize("model_type", SAMPLE)
def test_sampled_architecture_grows_exactly(model_type):
    dtype = torch.float32 if model_type in FLOAT32 else torch.float64
    case = zoo.build_hf(model_type, dtype=dtype)
    zoo_hf.check_deterministic(case, 1e-12)
    r = zoo.check_exact(case.model, case.example, [case.inputs(1)], tol=TOL[dtype],
                        call=zoo_hf.call)
    assert r["errors"], "every sampled model has a group to grow"


def test_the_config_is_small():
    cfg = small_config("llama")
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size) == (64, 2, 128)
    assert choose_class("llama", cfg)[1] == "LlamaForCausalLM"
    assert "bert" in model_types()


def test_fresh_inputs_have_the_example_shapes():
    case = zoo.build_hf("bert")
    fresh = case.inputs(1)
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in case.example.items()}
    assert not torch.equal(fresh["input_ids"], case.example["input_ids"])
