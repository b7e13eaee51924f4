"""fxgrow.grow_into: the source grown into the bigger model the user built.

Every soundness test runs with ``verify=False`` and compares the filled target with
the source on fresh inputs of other shapes (tests/helpers.py), in eval mode.
"""

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow import (GroupNotGrowableError, NarrowingError, NotIdentityError, SpecError,
                    TargetMismatchError)
from helpers import assert_same_function, assert_unchanged, snapshot
from models import LoopOverBatch


class Block(nn.Module):
    """Pre-norm residual block: x + fc2(act(fc1(norm(x))))."""

    def __init__(self, width, hidden, post_norm=False):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.post_norm = post_norm

    def forward(self, x):
        if self.post_norm:
            return self.norm(x + self.fc2(torch.relu(self.fc1(x))))
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class Net(nn.Module):
    def __init__(self, width=8, hidden=16, depth=2, post_norm=False, act=nn.GELU):
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.blocks = nn.Sequential(*[Block(width, hidden, post_norm) for _ in range(depth)])
        self.act = act()
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        return self.out(self.act(self.blocks(self.inp(x))))


def _trained(model):
    """Weights away from their init (LayerNorm gains and biases too)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def _grow(source, target, x, **kw):
    snap = snapshot(source)
    out = fxgrow.grow_into(source, target, x, verify=False, **kw)
    assert out is target
    assert_unchanged(source, snap)
    return target


def test_wider_own_class_is_exact_at_other_batch_sizes():
    src, x = _trained(Net()), torch.randn(4, 5)
    tgt = _grow(src, Net(width=16, hidden=40), x)
    assert tgt.blocks[0].fc1.weight.shape == (40, 16)
    assert_same_function(src, tgt.eval(), torch.randn(9, 5))


def test_deeper_and_wider_new_blocks_start_as_the_identity():
    src, x = _trained(Net()), torch.randn(4, 5)
    tgt = Net(width=16, hidden=32, depth=4)
    before = tgt.blocks[3].fc1.weight.detach().clone()
    _grow(src, tgt, x)
    for i in (2, 3):  # new: their residual branches end in zeros
        assert torch.count_nonzero(tgt.blocks[i].fc2.weight) == 0
        assert torch.count_nonzero(tgt.blocks[i].fc2.bias) == 0
    # the rest of a new block keeps the target's own initialisation, so it can train
    assert torch.equal(tgt.blocks[3].fc1.weight, before)
    assert_same_function(src, tgt.eval(), torch.randn(7, 5))


class CastBlock(Block):
    """The block's branch in a no-autocast region (as HF rotary embeddings and norms are)."""

    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return super().forward(x)


@pytest.mark.parametrize("capture", ["fx", "export"])
def test_new_blocks_holding_autocast_regions_start_as_the_identity(capture):
    def net(depth):
        m = Net(depth=depth)
        m.blocks = nn.Sequential(*[CastBlock(8, 16) for _ in range(depth)])
        return m
    src, x = _trained(net(2)), torch.randn(4, 5)
    tgt = _grow(src, net(3), x, capture=capture)
    assert_same_function(src, tgt.eval(), torch.randn(6, 5))


class GatedBlock(Block):
    """``s * x + f(x)``: a learned gain on the residual path (Doge, Gemma-4)."""

    def __init__(self, width, hidden):
        super().__init__(width, hidden)
        self.skip_gain = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return self.skip_gain * x + self.fc2(torch.relu(self.fc1(self.norm(x))))


def test_new_blocks_with_a_gain_on_the_residual_path_get_it_set_to_one():
    def net(depth, width=8):
        m = Net(width=width, depth=depth)
        m.blocks = nn.Sequential(*[GatedBlock(width, 16) for _ in range(depth)])
        return m
    src, x = _trained(net(2)), torch.randn(4, 5)
    tgt = _trained(net(3, width=16))  # its new block's gain is not 1 before growth
    _grow(src, tgt, x)
    assert torch.equal(tgt.blocks[2].skip_gain, torch.ones(16))
    assert_same_function(src, tgt.eval(), torch.randn(6, 5))


def test_layers_maps_a_source_block_past_a_new_one():
    src, x = _trained(Net()), torch.randn(4, 5)
    tgt = Net(width=8, hidden=16, depth=3)
    _grow(src, tgt, x, layers={"blocks.1": None, "blocks.2": "blocks.1"})
    assert torch.equal(tgt.blocks[2].fc1.weight, src.blocks[1].fc1.weight)
    assert torch.count_nonzero(tgt.blocks[1].fc2.weight) == 0
    assert_same_function(src, tgt.eval(), torch.randn(6, 5))


def test_post_norm_new_block_is_refused_naming_it():
    src, x = _trained(Net(post_norm=True)), torch.randn(4, 5)
    with pytest.raises(NotIdentityError, match=r"'blocks\.2'.*layer_norm|'blocks\.2'.*norm"):
        fxgrow.grow_into(src, Net(post_norm=True, depth=3), x, verify=False)


def test_non_integer_growth_where_padding_allows_it():
    # a LayerNorm'd width 8 -> 12 is mean-padded: the grown norm's eps is rescaled, which
    # the target's own code does not do, so the call is refused naming the node...
    src, x = _trained(Net()), torch.randn(4, 5)
    with pytest.raises(TargetMismatchError, match="eps"):
        fxgrow.grow_into(src, Net(width=12, hidden=16), x, verify=False)
    # ...while widths outside norms grow to any size
    tgt = _grow(src, Net(width=8, hidden=23), x)
    assert_same_function(src, tgt.eval(), torch.randn(5, 5))


def test_another_op_in_the_target_is_refused_naming_the_node():
    src, x = _trained(Net()), torch.randn(4, 5)
    with pytest.raises(TargetMismatchError, match="does not compute the grown source"):
        fxgrow.grow_into(src, Net(width=16, act=nn.SiLU), x, verify=False)


def test_narrower_or_blocked_targets_are_refused():
    src, x = _trained(Net()), torch.randn(4, 5)
    with pytest.raises(NarrowingError, match="inp.weight|blocks"):
        fxgrow.grow_into(src, Net(width=8, hidden=12), x)

    class Wider(Net):
        def __init__(self):
            super().__init__(width=16)
            self.out = nn.Linear(16, 4)  # the model output grows: no growth explains it
    with pytest.raises(GroupNotGrowableError, match="out.weight"):
        fxgrow.grow_into(src, Wider(), x)


def test_bad_calls_raise_fxgrow_errors():
    src, x = _trained(Net()), torch.randn(4, 5)
    with pytest.raises(SpecError, match="same module"):
        fxgrow.grow_into(src, src, x)
    with pytest.raises(SpecError, match="nn.Module"):
        fxgrow.grow_into(src, "big", x)
    with pytest.raises(SpecError, match="no module"):
        fxgrow.grow_into(src, Net(depth=3), x, layers={"blocks.2": "blocks.7"})
    with pytest.raises(SpecError, match="two places"):
        fxgrow.grow_into(src, Net(depth=3), x, layers={"blocks.2": "blocks.1",
                                                      "blocks.0": "blocks.1"})
    with pytest.raises(fxgrow.UnknownInitError):
        fxgrow.grow_into(src, Net(width=16), x, init="copy")
    tgt = Net(width=16)
    tgt.inp.bias = src.inp.bias
    with pytest.raises(SpecError, match="share tensors"):
        fxgrow.grow_into(src, tgt, x)


def test_target_keeps_its_mode_and_parameters():
    src, x = _trained(Net()), torch.randn(4, 5)
    tgt = Net(width=16)
    params = {k: id(v) for k, v in tgt.named_parameters()}
    fxgrow.grow_into(src, tgt, x)  # verified (default)
    assert tgt.training  # built in train mode, still in it
    assert {k: id(v) for k, v in tgt.named_parameters()} == params  # filled in place


@pytest.mark.parametrize("init", ["split", "zero_out"])
def test_symmetry_breaking_inits_are_exact_too(init):
    src, x = _trained(Net()), torch.randn(4, 5)
    tgt = _grow(src, Net(width=16, hidden=32, depth=3), x, init=init, seed=3)
    assert_same_function(src, tgt.eval(), torch.randn(6, 5))


@pytest.mark.slow
def test_resnet50_into_wide_resnet50_2():
    torchvision = pytest.importorskip("torchvision")
    src = torchvision.models.resnet50()
    with torch.no_grad():  # BatchNorm statistics away from their init
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    src.eval()
    tgt = _grow(src, torchvision.models.wide_resnet50_2(), torch.randn(1, 3, 64, 64))
    assert tgt.layer1[0].conv2.weight.shape == (128, 128, 3, 3)
    assert_same_function(src, tgt.eval(), torch.randn(2, 3, 96, 80), trials=1)


@pytest.mark.slow
@pytest.mark.parametrize("small, big", [("resnet18", "resnet34"),
                                        ("vit_tiny_patch16_224", "vit_small_patch16_224")])
def test_timm_models_into_larger_ones(small, big):
    # resnet34 adds blocks after relu'd stages (zeroed BatchNorm gains, relu idempotent);
    # vit_small doubles the width and the heads of vit_tiny
    timm = pytest.importorskip("timm")
    kw = dict(num_classes=10, **({"img_size": 32, "patch_size": 8} if "vit" in small else {}))
    src = _trained(timm.create_model(small, **kw))
    tgt = _grow(src, timm.create_model(big, **kw), torch.randn(2, 3, 32, 32))
    assert_same_function(src, tgt.eval(), torch.randn(3, 3, 32, 32), trials=1)


# -- HuggingFace (optional) ---------------------------------------------------------------

def _llama(hidden, heads, kv, mlp, layers):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, max_position_embeddings=64, hidden_size=hidden, intermediate_size=mlp,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv))


def _gpt2(n_embd, heads, layers, **kw):
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=64, n_embd=n_embd, n_layer=layers, n_head=heads,
        bos_token_id=0, eos_token_id=0, **kw))


def _hf_checks(src, tgt, tmp_path):
    """Logits at other batch and sequence sizes, a save/load round trip, greedy generate."""
    tgt.eval()
    for shape in ((1, 20), (3, 5)):
        ids = torch.randint(0, 64, shape)
        with torch.no_grad():
            a, b = src(ids).logits, tgt(ids).logits
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    tgt.save_pretrained(tmp_path)
    again = type(tgt).from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 64, (2, 9))
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, src(ids).logits, rtol=1e-4, atol=1e-5)
    prompt = torch.randint(0, 64, (2, 4))
    kw = dict(max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(prompt),
              pad_token_id=0)
    assert torch.equal(src.generate(prompt, **kw), tgt.generate(prompt, **kw))


@pytest.mark.slow
def test_llama_wider_more_heads_and_deeper(tmp_path):
    src = _trained_hf(_llama(64, 4, 2, 128, 2))
    tgt = _llama(128, 8, 4, 256, 4)
    ids = {"input_ids": torch.randint(0, 64, (2, 7)), "use_cache": False}
    _grow(src, tgt, ids)
    assert tgt.model.layers[0].self_attn.k_proj.weight.shape == (64, 128)  # 4 kv heads x 16
    for layer in tgt.model.layers[2:]:
        assert torch.count_nonzero(layer.self_attn.o_proj.weight) == 0
        assert torch.count_nonzero(layer.mlp.down_proj.weight) == 0
    _hf_checks(src, tgt, tmp_path)


@pytest.mark.slow
def test_gpt2_wider_more_heads_and_deeper(tmp_path):
    src = _trained_hf(_gpt2(64, 4, 2))
    tgt = _gpt2(128, 8, 3)
    _grow(src, tgt, {"input_ids": torch.randint(0, 64, (2, 7)), "use_cache": False})
    _hf_checks(src, tgt, tmp_path)


@pytest.mark.slow
def test_gpt2_by_one_and_a_half_with_the_eps_padding_needs():
    # 64 -> 96 is no multiple: LayerNorm is mean-padded, which rescales eps by 64/96; the
    # target built with that eps computes the grown source
    src = _trained_hf(_gpt2(64, 4, 2))
    ids = {"input_ids": torch.randint(0, 64, (2, 7)), "use_cache": False}
    with pytest.raises(TargetMismatchError, match="layer_norm"):
        fxgrow.grow_into(src, _gpt2(96, 6, 2), ids, verify=False)
    tgt = _grow(src, _gpt2(96, 6, 2, layer_norm_epsilon=1e-5 * 64 / 96), ids)
    assert_same_function(src, tgt.eval(), {"input_ids": torch.randint(0, 64, (3, 11)),
                                           "use_cache": False})


@pytest.mark.slow
def test_post_ln_bert_deeper_is_refused_naming_the_layer():
    transformers = pytest.importorskip("transformers")

    def bert(hidden, heads, layers):
        return transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=64, max_position_embeddings=32, hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=heads, intermediate_size=2 * hidden))
    src, ids = bert(32, 4, 2).eval(), {"input_ids": torch.randint(0, 64, (2, 7))}
    with pytest.raises(NotIdentityError, match=r"bert\.encoder\.layer\.2.*layer_norm"):
        fxgrow.grow_into(src, bert(64, 8, 3), ids, verify=False)
    tgt = _grow(src, bert(64, 8, 2), ids)  # wider alone is fine
    assert_same_function(src, tgt.eval(), {"input_ids": torch.randint(0, 64, (1, 12))})


def _trained_hf(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


@pytest.mark.slow
def test_llama_by_one_and_a_half_zero_pads_rmsnorm():
    # 64 -> 96: RMSNorm is zero-padded, its eps rescaled by 64/96 in the grown graph
    src = _trained_hf(_llama(64, 4, 2, 128, 2))
    ids = {"input_ids": torch.randint(0, 64, (2, 7)), "use_cache": False}
    with pytest.raises(TargetMismatchError, match="eps"):
        fxgrow.grow_into(src, _llama(96, 6, 3, 192, 2), ids, verify=False)
    transformers = pytest.importorskip("transformers")
    tgt = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=64, max_position_embeddings=64, hidden_size=96, intermediate_size=192,
        num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
        rms_norm_eps=1e-6 * 64 / 96))
    _grow(src, tgt, ids)
    assert_same_function(src, tgt.eval(), {"input_ids": torch.randint(0, 64, (1, 13)),
                                           "use_cache": False})


def test_tied_weights_read_under_both_names():
    # an embedding and a head sharing one weight, each read by its own module (fx)
    class Tied(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.emb, self.mid, self.head = nn.Embedding(20, d), nn.Linear(d, d), nn.Linear(d, 20)
            self.norm = nn.LayerNorm(d)  # the head's 1/count moves onto its gain
            self.head.weight = self.emb.weight

        def forward(self, ids):
            h = self.emb(ids)
            return self.head(self.norm(h + torch.tanh(self.mid(h))))
    src, ids = _trained(Tied(8)), torch.randint(0, 20, (3, 5))
    tgt = _grow(src, Tied(16), ids)
    assert tgt.head.weight is tgt.emb.weight
    assert_same_function(src, tgt.eval(), torch.randint(0, 20, (2, 9)))


def test_a_target_whose_path_depends_on_the_batch_checks_the_captured_condition():
    # the copies were planned for three layers in a row; at batch 1 the target's own
    # forward feeds layer 1's neurons to `o`, divided for layer 2's copies: silently wrong
    # without the check
    torch.manual_seed(0)
    small, big = LoopOverBatch(8).double(), LoopOverBatch(16).double()
    x = torch.randn(2, 4, dtype=torch.float64)
    snap = snapshot(small)
    for _ in range(2):  # growing into the same target again replaces its check
        out = fxgrow.grow_into(small, big, x, verify=False)
    assert out is big and len(big._forward_pre_hooks) == 1
    assert_unchanged(small, snap)
    for batch in (2, 5):
        fresh = torch.randn(batch, 4, dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(big(fresh), small(fresh), rtol=1e-12, atol=1e-12)
    with pytest.raises(fxgrow.ShapeGuardError, match="x.size\\(\\)\\[0\\] % 3"):
        big(torch.randn(1, 4, dtype=torch.float64))
