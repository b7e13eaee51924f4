"""fxgrow.grow_checkpoint: safetensors in, grown safetensors out, one tensor at a time."""

import json
import os

import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.errors import SpecError, TargetMismatchError
from fxgrow.grow.safetensors_io import ShardedWriter, open_checkpoint, read_tensor


def _save(model, directory, max_shard_bytes=2**30):
    sd = model.state_dict()
    w = ShardedWriter(str(directory), {k: (v.shape, v.dtype) for k, v in sd.items()},
                      max_shard_bytes)
    for k, v in sd.items():
        w.write(k, v)
    w.close()


class Net(nn.Module):
    def __init__(self, width=8, depth=2):
        super().__init__()
        self.inp = nn.Linear(5, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width),
                                                  nn.GELU(), nn.Linear(2 * width, width))
                                    for _ in range(depth))
        self.out = nn.Linear(width, 3)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = h + b(h)
        return self.out(h)


def _trained(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("shard", [2**30, 600])
def test_own_model_grown_from_disk_equals_grow_into(tmp_path, shard):
    src = _trained(Net())
    _save(src, tmp_path / "src", shard)
    with torch.device("meta"):
        s_meta, t_meta = Net(), Net(width=16, depth=3)
    x = torch.randn(4, 5)
    how = fxgrow.grow_checkpoint(s_meta, t_meta, x.to("meta"), src=str(tmp_path / "src"),
                                 dst=str(tmp_path / "dst"), max_shard_size=shard, progress=False)
    assert how["blocks.2.3.weight"] == ("zero", None) and how["blocks.2.1.weight"][0] == "keep"
    loaded = Net(width=16, depth=3).eval()
    got = {k: read_tensor(e) for k, e in open_checkpoint(str(tmp_path / "dst")).items()}
    assert set(got) == set(loaded.state_dict())
    loaded.load_state_dict(got)
    xs = torch.randn(7, 5)
    assert torch.allclose(loaded(xs), src(xs), rtol=1e-5, atol=1e-6)
    # tensor for tensor what grow_into writes (the new block's kept init aside)
    into = fxgrow.grow_into(src, Net(width=16, depth=3), x, verify=False)
    for k, v in into.state_dict().items():
        if how[k][0] != "keep":
            assert torch.equal(v, got[k]), k
    if shard == 600:
        index = json.load(open(tmp_path / "dst" / "model.safetensors.index.json"))
        assert len(set(index["weight_map"].values())) > 1


def test_bad_calls(tmp_path):
    with torch.device("meta"):
        s, t = Net(), Net(width=16)
    x = torch.randn(2, 5, device="meta")
    with pytest.raises(SpecError, match="directory"):
        fxgrow.grow_checkpoint(s, t, x, src=str(tmp_path / "nothing"), dst=str(tmp_path / "d"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(SpecError, match="neither"):
        fxgrow.grow_checkpoint(s, t, x, src=str(tmp_path / "empty"), dst=str(tmp_path / "d"))
    with pytest.raises(SpecError, match="init"):
        fxgrow.grow_checkpoint(s, t, x, src=str(tmp_path / "empty"), dst=str(tmp_path / "d"),
                               init="zero_out")
    _save(nn.Linear(2, 2), tmp_path / "other")
    with pytest.raises(TargetMismatchError, match="not in the checkpoint"):
        fxgrow.grow_checkpoint(s, t, x, src=str(tmp_path / "other"), dst=str(tmp_path / "d"),
                               progress=False)


def test_progress_lines_without_tqdm(tmp_path, monkeypatch, capsys):
    import builtins
    real = builtins.__import__

    def no_tqdm(name, *a, **k):
        if name.startswith("tqdm"):
            raise ImportError(name)
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_tqdm)
    src = _trained(Net())
    _save(src, tmp_path / "src")
    with torch.device("meta"):
        s, t = Net(), Net(width=16)
    fxgrow.grow_checkpoint(s, t, torch.randn(2, 5, device="meta"), src=str(tmp_path / "src"),
                           dst=str(tmp_path / "dst"))
    err = capsys.readouterr().err
    assert f"{len(t.state_dict())}/{len(t.state_dict())} tensors" in err


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_huggingface_checkpoint_grown_and_reloaded(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    if family == "llama":
        def build(h, heads, kv, mlp, layers):
            return transformers.LlamaForCausalLM(transformers.LlamaConfig(
                vocab_size=64, max_position_embeddings=64, hidden_size=h, intermediate_size=mlp,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv))
        small_args, big_args = (64, 4, 2, 128, 2), (128, 8, 4, 256, 3)
    else:
        def build(n, heads, layers):
            return transformers.GPT2LMHeadModel(transformers.GPT2Config(
                vocab_size=64, n_positions=64, n_embd=n, n_layer=layers, n_head=heads,
                bos_token_id=0, eos_token_id=0))
        small_args, big_args = (64, 4, 2), (128, 8, 3)
    small = build(*small_args)
    with torch.no_grad():
        for p in small.parameters():
            p.add_(0.02 * torch.randn_like(p))
    small.eval().save_pretrained(tmp_path / "small", max_shard_size="100KB")  # sharded
    assert os.path.exists(tmp_path / "small" / "model.safetensors.index.json")
    with torch.device("meta"):
        s, t = build(*small_args), build(*big_args)
    ids = torch.randint(0, 64, (2, 7), device="meta")
    fxgrow.grow_checkpoint(s, t, {"input_ids": ids, "use_cache": False},
                           src=str(tmp_path / "small"), dst=str(tmp_path / "big"), progress=False)
    big = type(small).from_pretrained(tmp_path / "big").eval()
    assert big.config.hidden_size == 128 if family == "llama" else big.config.n_embd == 128
    ids = torch.randint(0, 64, (3, 11))
    with torch.no_grad():
        assert torch.allclose(big(ids).logits, small(ids).logits, rtol=1e-4, atol=1e-5)


def test_row_blocks_give_the_same_checkpoint(tmp_path):
    # an embedding-like first layer whose rows do not grow streams in blocks of rows
    class Emb(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.emb, self.out = nn.Embedding(50, width), nn.Linear(width, 3)

        def forward(self, ids):
            return self.out(torch.relu(self.emb(ids)))
    src = _trained(Emb())
    _save(src, tmp_path / "src")
    with torch.device("meta"):
        s, t = Emb(), Emb(width=20)
    ids = torch.randint(0, 50, (2, 6), device="meta")
    for name, chunk in (("whole", 2**30), ("rows", 100)):
        fxgrow.grow_checkpoint(s, t, ids, src=str(tmp_path / "src"), dst=str(tmp_path / name),
                               chunk_bytes=chunk, progress=False)
    whole, rows = (open_checkpoint(str(tmp_path / n)) for n in ("whole", "rows"))
    for k in whole:
        assert torch.equal(read_tensor(whole[k]), read_tensor(rows[k])), k
    big = Emb(width=20).eval()
    big.load_state_dict({k: read_tensor(e) for k, e in rows.items()})
    x = torch.randint(0, 50, (3, 9))
    assert torch.allclose(big(x), src(x), rtol=1e-5, atol=1e-6)


def test_a_growing_weight_norm_is_refused_not_streamed(tmp_path):
    # v and g are re-derived together from the grown weight; one tensor at a time cannot
    class WN(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.inp = nn.Linear(5, width)
            self.mid = nn.utils.parametrizations.weight_norm(nn.Linear(width, width))
            self.out = nn.Linear(width, 3)

        def forward(self, x):
            return self.out(torch.relu(self.mid(torch.relu(self.inp(x)))))

    _save(WN().eval(), tmp_path / "src")
    with torch.device("meta"):
        s, t = WN(), WN(16)
    with pytest.raises(SpecError, match="weight-normed"):
        fxgrow.grow_checkpoint(s, t, torch.randn(2, 5, device="meta"), src=str(tmp_path / "src"),
                               dst=str(tmp_path / "dst"), capture="export", progress=False)
