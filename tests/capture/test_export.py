"""The torch.export front end: ``capture="export"``, ExportedPrograms, ATen rules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fxgrow
from helpers import assert_same_function, assert_unchanged, every_group, exact_or_refused, snapshot
from fxgrow.errors import ConstraintError, SpecError, TraceError
from fxgrow.rules import lookup
from fxgrow.ops.aten import canonical_target
from models import ALL

aten = torch.ops.aten


def growable(analysis):
    return sorted(g.size for g in analysis.groups if g.status == "growable")


def group_of(analysis, module, size):
    (g,) = [g for g in analysis.groups if module in g.producers and g.size == size]
    return g


# -- the core models ----------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALL))
def test_core_models_widen_exactly_through_export(name):
    model, x = ALL[name]()
    snap = snapshot(model)
    a = fxgrow.analyze(model, x, capture="export")
    how = a.graph_module.meta["fxgrow.capture"]
    assert (how["method"], how["fallback_reason"]) == ("export", None)
    assert any(isinstance(n.target, torch._ops.OpOverload) for n in a.graph_module.graph.nodes)
    if name != "mobilenet_block":  # functional depthwise conv: see docs/export.md
        assert growable(a) == growable(fxgrow.analyze(model, x, capture="fx"))
    g = fxgrow.widen(a, x, 2.0)
    assert_unchanged(model, snap)
    assert_same_function(model, g, x)
    assert list(g.state_dict()) == list(model.state_dict())


def test_exported_program_and_its_module_are_accepted():
    model, x = ALL["resnet"]()
    ep = torch.export.export(model, (x,), strict=False)
    for given in (ep, ep.module()):
        g = fxgrow.widen(given, x, 2.0)
        assert_same_function(model, g, x)
        assert list(g.state_dict()) == list(model.state_dict())
        assert g.get_parameter("conv1.weight").shape[0] == 16
    with pytest.raises(TraceError, match="ExportedProgram"):
        fxgrow.analyze(ep, x, capture="fx")
    with pytest.raises(SpecError, match="capture"):
        fxgrow.analyze(model, x, capture="dynamo")


class ShapeBranch(nn.Module):
    """Python control flow on a shape: torch.fx cannot trace it, torch.export can."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        if h.shape[0] > 2:
            h = h * 2
        return {"y": self.b(h), "h0": h[:, :1]}


def test_auto_falls_back_to_export_and_says_why():
    model, x = ShapeBranch(), torch.randn(4, 6)
    with pytest.raises(TraceError, match="torch.fx could not trace"):
        fxgrow.analyze(model, x, capture="fx")
    a = fxgrow.analyze(model, x)
    how = a.graph_module.meta["fxgrow.capture"]
    assert how["method"] == "export" and "torch.fx could not trace" in how["fallback_reason"]
    # h[:, :1] cuts the hidden space (aten.slice): that neuron reaches the output, 15 grow
    g = fxgrow.widen(model, x, 2.0)
    assert_same_function(model, g, x)
    out = g(x)
    assert set(out) == {"y", "h0"} and g.get_parameter("a.weight").shape == (31, 6)


class DataDependent(nn.Module):
    def forward(self, x):
        return x * 2 if x.sum() > 0 else x


def test_export_failure_is_a_trace_error_naming_the_cause():
    with pytest.raises(TraceError, match=r"torch.export could not capture DataDependent"):
        fxgrow.analyze(DataDependent(), torch.randn(3), capture="export")


def test_dynamic_batch_dim_asserts_block_nothing():
    model, x = ALL["mlp"]()
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(model, (x,), dynamic_shapes=({0: batch},), strict=False)
    a = fxgrow.analyze(ep, x)
    assert growable(a) == [24, 32]
    assert_same_function(model, fxgrow.widen(a, x, 3.0), x)


class Sliced(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 12)
        self.o1, self.o2 = nn.Linear(4, 3), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.fc(x))
        return self.o1(h[:, :4]) + self.o2(h[:, 4:]) + h.select(1, 11).unsqueeze(1)


def test_slice_and_select_refine_and_are_rewritten():
    model, x = Sliced(), torch.randn(6, 5)
    a = fxgrow.analyze(model, x, capture="export")
    ops = {n.target for n in a.graph_module.graph.nodes}
    assert aten.slice.Tensor in ops and aten.select.int in ops
    g = fxgrow.widen(a, x, 2.0)
    assert_same_function(model, g, x)
    assert g.get_parameter("fc.weight").shape[0] > 12


def test_aten_ops_run_the_canonical_rules():
    assert lookup(aten.linear.default).name.startswith("linear_functional")
    assert lookup(aten.view.default).name.startswith("reshape")
    assert lookup(aten.relu_.default).name.startswith("elementwise")
    assert lookup(aten.kron.default) is None  # no rule: blocks, never guesses
    gm = torch.export.export(nn.Sequential(nn.ReLU()), (torch.randn(2),)).module()
    (relu,) = [n for n in gm.graph.nodes if n.op == "call_function"
               and n.target in (aten.relu.default, aten.relu_.default)]
    assert canonical_target(relu) is torch.relu


# -- deepen -------------------------------------------------------------------------

def test_deepen_through_export():
    relu_mlp = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 10), nn.GELU(),
                             nn.Linear(10, 3))
    x = torch.randn(7, 6)
    g = fxgrow.deepen(relu_mlp, x, after=["relu", "gelu"], method="residual", capture="export")
    assert_same_function(relu_mlp, g, x)
    assert [r["method"] for r in g.meta["fxgrow.deepen"]] == ["residual", "residual"]
    g2 = fxgrow.deepen(relu_mlp, x, after="relu", method="identity", capture="export")
    assert_same_function(relu_mlp, g2, x)
    assert_same_function(relu_mlp, fxgrow.widen(g, x, 2.0), x)  # the new layers grow


def test_deepen_resnet_through_export():
    model, x = ALL["resnet"]()
    g = fxgrow.deepen(model, x, after=["relu_", "add"], method="residual", capture="export")
    assert_same_function(model, g, x)
    assert [r["layer"] for r in g.meta["fxgrow.deepen"]] == ["conv2d", "conv2d"]


# -- a LLaMA-style decoder in plain PyTorch --------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.rand(d) + 0.5), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, d, heads, kv_heads):
        super().__init__()
        self.h, self.kv, self.hd = heads, kv_heads, d // heads
        self.q = nn.Linear(d, heads * self.hd, bias=False)
        self.k = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.v = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.o = nn.Linear(heads * self.hd, d, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.kv, self.hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        r = self.h // self.kv
        k = k.repeat_interleave(r, dim=1)                                  # GQA, two ways
        v = v[:, :, None].expand(B, self.kv, r, T, self.hd).reshape(B, self.h, T, self.hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


class Block(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn):
        super().__init__()
        self.n1, self.attn, self.n2 = RMSNorm(d), Attention(d, heads, kv_heads), RMSNorm(d)
        self.gate = nn.Linear(d, ffn, bias=False)
        self.up = nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.n1(x), cos, sin)
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class TinyLlama(nn.Module):
    def __init__(self, vocab=50, d=32, heads=4, kv_heads=2, ffn=48, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, kv_heads, ffn) for _ in range(layers))
        self.norm, self.head = RMSNorm(d), nn.Linear(d, vocab, bias=False)
        hd = d // heads
        inv = 1.0 / (10000 ** (torch.arange(0, hd, 2).float() / hd))
        self.register_buffer("inv_freq", inv, persistent=False)

    def forward(self, ids):
        t = torch.arange(ids.shape[1], device=ids.device).float()
        freqs = torch.outer(t, self.inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x))


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    model, ids = TinyLlama().eval(), torch.randint(0, 50, (2, 7))
    return model, ids, fxgrow.analyze(model, ids, capture="export")


def test_llama_analysis_matches_fx(llama):
    model, ids, a = llama
    assert growable(a) == growable(fxgrow.analyze(model, ids, capture="fx"))


def test_llama_mlp_width_exact(llama):
    model, ids, a = llama
    g = fxgrow.widen(a, ids, {"blocks.0.gate": 80, "blocks.1.up": 64})
    assert_same_function(model, g, ids)
    assert g.get_parameter("blocks.0.down.weight").shape == (32, 80)
    assert g.get_parameter("blocks.1.gate.weight").shape == (64, 32)
    assert list(g.state_dict()) == list(model.state_dict())


def test_llama_heads_grow_with_kv_groups_consistent(llama):
    model, ids, a = llama
    kv = group_of(a, "blocks.0.attn.k", 2)  # kv heads; query heads = kv heads x 2
    assert kv.status == "growable" and "blocks.0.attn.q" in kv.producers
    g = fxgrow.widen(a, ids, {kv.id: 3})
    assert_same_function(model, g, ids)
    assert g.get_parameter("blocks.0.attn.k.weight").shape == (3 * 8, 32)
    assert g.get_parameter("blocks.0.attn.q.weight").shape == (6 * 8, 32)
    assert g.get_parameter("blocks.0.attn.o.weight").shape == (32, 6 * 8)
    assert g.get_parameter("blocks.1.attn.q.weight").shape == (4 * 8, 32)


def test_llama_whole_model_doubles_exactly(llama):
    model, ids, a = llama
    g = fxgrow.widen(a, ids, 2.0)
    assert_same_function(model, g, ids)
    assert g.get_parameter("emb.weight").shape == (50, 64)


@pytest.mark.parametrize("capture", ["export", "fx"])
def test_llama_rotary_head_dim_grows(llama, capture):
    model, ids, _ = llama
    a = fxgrow.analyze(model, ids, capture=capture)
    # rotary pairs (i, i + d/2) mix the halves of the head dim through cos/sin of
    # outer(positions, inv_freq), one table for every layer's q and k: one space on
    # both sides of each SDPA, whose rows are divided by sqrt(count)
    (gid,) = a.halved
    rotary = a.group(gid)
    assert rotary.growable and rotary.size == 4  # half the head dim
    assert {"blocks.0.attn.q", "blocks.1.attn.k"} <= set(rotary.producers)
    assert "inv_freq" in {m.tensor for m in rotary.members}
    g = fxgrow.widen(a, ids, {gid: 7})  # head dim 8 -> 14, frequencies copied
    assert_same_function(model, g, ids)
    assert g.get_parameter("blocks.0.attn.q.weight").shape == (4 * 14, 32)
    assert g.get_parameter("blocks.0.attn.v.weight").shape == (2 * 8, 32)


@pytest.mark.parametrize("capture", ["export", "fx"])
def test_llama_written_rmsnorm_zero_pads(llama, capture):
    model, ids, _ = llama
    a = fxgrow.analyze(model, ids, capture=capture)
    # the RMSNorm written out (x * rsqrt(mean(x²) + eps) * w) averages over the model dim:
    # zero-padded, its eps literal and weight rescaled
    d_model = group_of(a, "emb", 32)
    assert "mean" in " ".join(d_model.uniform)
    g = fxgrow.widen(a, ids, {d_model.id: 40})
    assert_same_function(model, g, ids)
    assert g.get_parameter("emb.weight").shape == (50, 40)
    assert torch.count_nonzero(g.get_parameter("emb.weight")[:, 32:]) == 0


def test_llama_deepened_with_zero_residual_blocks(llama):
    model, ids, a = llama
    adds = [n.name for n in a.graph_module.graph.nodes
            if n.target is aten.add.Tensor and n.meta["fxgrow.shape"].shape == (2, 7, 32)
            and all(isinstance(x, torch.fx.Node) for x in n.args)]
    g = fxgrow.deepen(model, ids, after=adds[1::2], method="residual", capture="export")
    assert len(g.meta["fxgrow.deepen"]) == 2
    assert_same_function(model, g, ids)
    assert_same_function(model, fxgrow.widen(g, ids, 2.0), ids)


# -- HuggingFace models from tiny configs (optional) -----------------------------------

def _hf_models():
    transformers = pytest.importorskip("transformers")
    c = dict(vocab_size=64, max_position_embeddings=32)
    return {
        "bert": lambda: transformers.BertModel(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            **c)),
        "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, use_cache=False)),
        "llama": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, use_cache=False, **c)),
        "llama_tied": lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, use_cache=False, tie_word_embeddings=True, **c)),
        "gemma": lambda: transformers.GemmaForCausalLM(transformers.GemmaConfig(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, use_cache=False, **c)),
        "gemma2": lambda: transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
            hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, use_cache=False, **c)),
    }


def _perturbed(model):
    """Norm gains away from their init (Gemma's `1 + w` starts at w = 0)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_huggingface_models_widen_exactly(name):
    torch.manual_seed(0)
    model = _hf_models()[name]().eval()
    ids = {"input_ids": torch.randint(0, 64, (2, 7))}
    a = fxgrow.analyze(model, ids, capture="export")
    grow = [g for g in a.groups if g.status == "growable"]
    assert len(grow) >= 4  # heads, value dims and MLP widths of both layers at least
    g = fxgrow.widen(a, ids, 2.0)  # every growable group, verified
    assert_same_function(model, g, ids)
    assert set(g.state_dict()) == set(model.state_dict())
    for group in grow:  # and each one alone
        assert_same_function(model, fxgrow.widen(a, ids, {group.id: group.size + 1}
                                                 if not group.uniform else {group.id: 2.0}),
                             ids, trials=1)


@pytest.mark.slow
@pytest.mark.parametrize("name, padded", [("gpt2", True), ("llama_tied", True), ("gemma", True),
                                          ("gemma2", False)])
def test_huggingface_tied_embeddings_grow_through_export(name, padded):
    # the head's 1/count moves onto the final norm's gain: a functional layer_norm's
    # (GPT-2), a written-out RMSNorm's weight (LLaMA), Gemma's (1 + w), with the
    # embedding scaled by sqrt(hidden); any width by mean- or zero-padding (Gemma-2's
    # norms after each sublayer are not on a linear path: integer factors)
    torch.manual_seed(0)
    model = _perturbed(_hf_models()[name]().eval())
    ids = {"input_ids": torch.randint(0, 64, (2, 7))}
    a = fxgrow.analyze(model, ids, capture="export")
    emb = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is emb  # tied
    (width,) = [g for g in a.groups if any(m.dim == 1 and model.state_dict()[m.tensor].data_ptr()
                                           == emb.data_ptr() for m in g.members)]
    assert width.growable, width.reason
    for spec in ({width.id: 64}, {width.id: 45}):
        if spec[width.id] == 45 and not padded:
            with pytest.raises(ConstraintError, match="integer factor"):
                fxgrow.widen(a, ids, spec)
            continue
        g = fxgrow.widen(a, ids, spec, verify=False)
        assert_same_function(model, g, ids, trials=2)


def test_gpt_heads_grow_through_export():
    """A resized view after SDPA's transpose becomes a reshape (export drops `.contiguous()`)."""
    from transformer_models import GPT

    m, idx = GPT().eval(), torch.randint(0, 50, (2, 12))
    grown = fxgrow.widen(m, idx, 2.0, capture="export")
    assert grown.meta["fxgrow.report"].ok


@pytest.mark.skipif(not hasattr(nn, "RMSNorm"), reason="nn.RMSNorm needs torch 2.4")
def test_rms_norm_through_export_is_zero_padded():
    # export turns nn.RMSNorm into aten.rms_norm(x, [6], w, None): its eps is made explicit
    m, x = nn.Sequential(nn.Linear(3, 6), nn.RMSNorm(6), nn.Linear(6, 2)).eval(), torch.randn(4, 3)
    a = fxgrow.analyze(m, x, capture="export")
    assert_same_function(m, fxgrow.widen(a, x, 2.0), x)
    g = fxgrow.widen(a, x, 1.5, verify=False)
    assert_same_function(m, g, x)
    (norm,) = [n for n in g.graph.nodes if n.target is aten.rms_norm.default]
    assert norm.kwargs["eps"] == pytest.approx(torch.finfo(torch.float32).eps * 6 / 9)


def test_a_constant_like_a_tensor_is_not_a_move_of_it():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(5, 2)

        def forward(self, x):
            k = self.k(x)
            return self.o(self.q(x) @ (k + torch.ones_like(k)).transpose(-1, -2))

    m = Attn().double().eval()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    for capture in ("fx", "export"):
        # `k + ones_like(k)` is not k divided by the counts: only q's side may be divided
        a = fxgrow.analyze(m, x, capture=capture)
        assert a.group("k").id not in a.partners, capture
        grown = exact_or_refused(m, x, every_group(a), capture=capture)
        assert not isinstance(grown, Exception) and grown.meta["fxgrow.plan"], capture


def test_export_leaves_no_markings_on_the_example_tensors():
    # torch.export marks the tensors it exports with dynamic dims, and a failed attempt
    # leaves the marks: they changed the user's tensors, and made the retry with static
    # shapes on the same tensors dynamic again, so it failed the same way
    class OnlyStatic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x, y):
            if isinstance(x.shape[0], torch.SymInt):  # what a blow-up in sympy looks like
                raise NotImplementedError("no symbolic sizes here")
            return self.b(torch.tanh(self.a(x))) + y

    torch.manual_seed(0)
    model = OnlyStatic().double()
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    y.my_tag = "kept"
    with pytest.warns(UserWarning, match="could not keep the input sizes.*no symbolic sizes"):
        grown = fxgrow.widen(model, (x, y), 2.0, verify=False, capture="export")
    assert vars(x) == {} and vars(y) == {"my_tag": "kept"}
    assert grown.get_submodule("a").weight.shape[0] == 16
    assert_same_function(model, grown, (x, y))
