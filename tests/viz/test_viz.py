"""The pictures: networkx export, DOT, layout and the HTML page (in a real browser)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import networkx as nx
import pytest
import torch
from torch import nn

import fxgrow
from fxgrow.ir.layout import leaves
from fxgrow.testing.models import tiny_resnet
from fxgrow.viz import collapse, group_colours, to_networkx
from fxgrow.viz.placement import layout_with_routes



@pytest.fixture(scope="module")
def resnet():
    model, x = tiny_resnet(width=4), torch.randn(2, 3, 8, 8)
    return model, x, fxgrow.analyze(model, x)


class Mystery(nn.Module):
    """A leaf module fxgrow has no rule for."""

    def forward(self, x):
        return x.flip(-1)


class _Blocked(nn.Module):
    """An op without a rule blocks the group it reads."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.mystery = Mystery()
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.mystery(self.a(x)))))


@pytest.fixture(scope="module")
def blocked():
    model, x = _Blocked().eval(), torch.randn(4, 6)
    return fxgrow.analyze(model, x, leaf_modules=[Mystery])


# -- networkx ---------------------------------------------------------------------
def test_networkx_nodes_and_edges_follow_the_graph(resnet):
    _, _, a = resnet
    G = a.to_networkx()
    nodes = list(a.graph_module.graph.nodes)
    assert list(G) == [n.name for n in nodes]
    assert set(G.edges) == {(i.name, n.name) for n in nodes for i in n.all_input_nodes}
    assert nx.is_directed_acyclic_graph(G)
    for n in nodes:
        d = G.nodes[n.name]
        assert d["opcode"] == n.op
        spec = n.meta["fxgrow.shape"]
        assert d["shape"] == tuple(spec.shape)
        if "fxgrow.op" in n.meta:
            assert d["op"] == n.meta["fxgrow.op"]
        value = n.meta.get("fxgrow.value")
        if value is not None:
            expected = tuple(tuple(dict.fromkeys(l.space for l in leaves(dim)
                                                 if not a.spaces[l.space][2]))
                             for dim in value.dims)
            assert d["dim_groups"] == expected
        if n.op == "call_module":
            assert d["module"] == n.target
    # every parameter dimension of a called module is listed on its node, with its role
    conv = G.nodes["layer2_0_conv1"]
    mine = {(m.tensor, m.dim, m.role) for m in a.members.values()
            if m.module == "layer2.0.conv1"}
    assert {(t, dim, role) for t, dim, role, _ in conv["params"]} == mine
    assert ("layer2.0.conv1.weight", 0, "producer", (a.group("layer2.0.conv1").id,)) \
        in conv["params"]
    # group table
    for g in a.groups:
        info = G.graph["groups"][g.id]
        assert (info["size"], info["status"], info["producers"]) == (g.size, g.status,
                                                                      g.producers)
    # inputs and outputs are fixed, the stem conv is growable
    assert G.nodes["x"]["status"] == "fixed" and "model input" in G.nodes["x"]["reason"]
    assert G.nodes["fc"]["status"] == "fixed"
    assert G.nodes["conv1"]["status"] == "growable" and G.nodes["conv1"]["reason"] == ""


def test_networkx_marks_the_node_that_blocks(blocked):
    G = blocked.to_networkx()
    cumsum = "mystery"
    d = G.nodes[cumsum]
    assert d["cause"] and d["status"] == "blocked" and "no rule for" in d["reason"]
    assert d["rule"] is None
    assert [n for n, d in G.nodes(data=True) if d["cause"]] == [cumsum]
    # the group the cumsum reads is blocked, and so is the producer's node
    gid = blocked.group("a").id
    assert G.graph["groups"][gid]["status"] == "blocked"
    assert G.nodes["a"]["status"] == "blocked" and not G.nodes["a"]["cause"]
    assert G.nodes["b"]["status"] == "growable"


def test_networkx_with_a_plan_has_new_sizes(resnet):
    model, x, a = resnet
    grown = fxgrow.widen(a, x, 2.0)
    plan = grown.meta["fxgrow.plan"]
    G = to_networkx(a, plan=plan)
    gid = a.group("layer1.0.conv1").id
    assert G.graph["groups"][gid]["new_size"] == plan[gid][1] == 8
    assert G.nodes["layer1_0_conv1"]["new_shape"] == (2, 8, 8, 8)
    assert G.nodes["fc"]["new_shape"] == G.nodes["fc"]["shape"]
    html = a.draw(None, plan=plan)
    assert "4 → 8" in html


def test_collapse_merges_modules(resnet):
    _, _, a = resnet
    G = a.to_networkx()
    C = collapse(G, 1)
    assert {"layer1", "layer2"} <= set(C)
    assert C.nodes["layer1"]["count"] == sum(1 for _, d in G.nodes(data=True)
                                             if d["module"].startswith("layer1."))
    assert ("layer1", "layer2") in C.edges and ("relu", "layer1") in C.edges
    assert sum(d.get("count", 1) for _, d in C.nodes(data=True)) == G.number_of_nodes()
    assert set(C.nodes["layer2"]["groups"]) >= set(G.nodes["layer2_0_conv1"]["groups"])


def test_group_colours_are_distinct_for_growable_groups(resnet):
    _, _, a = resnet
    groups = a.to_networkx().graph["groups"]
    colours = group_colours(groups)
    growable = [colours[g] for g, info in groups.items() if info["status"] == "growable"]
    assert len(set(growable)) == len(growable)
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in colours.values())


# -- layout -------------------------------------------------------------------------
def test_layout_goes_down_and_does_not_overlap(resnet):
    _, _, a = resnet
    G = a.to_networkx()
    width = {n: 1.0 + len(n) / 10 for n in G}
    pos, routes = layout_with_routes(G, width, gap=0.5)
    assert all(pos[u][1] < pos[v][1] for u, v in G.edges)
    rows = {}
    for n, (x, layer) in pos.items():
        rows.setdefault(layer, []).append((x, width[n]))
    for row in rows.values():
        row.sort()
        for (x1, w1), (x2, w2) in zip(row, row[1:]):
            assert x2 - x1 >= (w1 + w2) / 2 + 0.5 - 1e-9
    # the residual edges bend around the blocks they skip
    for (u, v), route in routes.items():
        assert [layer for _, layer in route] == list(range(pos[u][1] + 1, pos[v][1]))
    assert routes, "a ResNet has long (residual) edges"


# -- DOT ----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_dot_parses_with_networkx(resnet, blocked, tmp_path):
    pytest.importorskip("pydot", reason="pydot (the `test` extra) reads DOT back")
    for a in (resnet[2], blocked):
        path = tmp_path / "g.dot"
        text = a.to_dot(path)
        assert path.read_text(encoding="utf-8") == text
        G = a.to_networkx()
        D = nx.nx_pydot.read_dot(str(path))
        assert set(D.nodes) - {"node", "edge", "graph"} == set(G)
        assert {(u, v) for u, v, *_ in D.edges} == set(G.edges)
        for n, d in G.nodes(data=True):
            attrs = {k: str(v).strip('"') for k, v in D.nodes[n].items()}
            assert attrs["fx_status"] == d["status"]
            assert attrs["fx_groups"] == ",".join(map(str, d["groups"]))
            assert attrs["fx_op"] == d["op"]
    cause = next(n for n, d in blocked.to_networkx().nodes(data=True) if d["cause"])
    assert str(D.nodes[cause]["color"]).strip('"') == "#d00000"


# -- HTML ---------------------------------------------------------------------------
def test_html_is_self_contained(resnet, blocked, tmp_path):
    _, _, a = resnet
    html = a.draw(tmp_path / "g.html")
    assert (tmp_path / "g.html").read_text(encoding="utf-8") == html
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") == 1
    assert not re.search(r"<script[^>]+src=|<link |@import|url\((?!#)", html)
    assert re.findall(r"https?://[^\s\"']+", html) == ["http://www.w3.org/2000/svg"]
    view0 = html[html.index('data-v="0"'):html.index('data-v="1"')]
    assert view0.count('<g class="n ') == len(a.graph_module.graph.nodes)
    for g in a.groups:  # the legend lists every group with its producers
        assert f'<tr data-g="{g.id}"' in html
    assert "layer2.0.conv1" in html
    page = blocked.draw()
    assert "✕ no rule for" in page and "cause" in page
    frag = a._repr_html_()
    assert frag.startswith("<div id=\"fxg-") and "<html" not in frag


def test_resnet18_picture(tmp_path):
    tv = pytest.importorskip("torchvision")
    model = tv.models.resnet18().eval()
    a = fxgrow.analyze(model, torch.randn(1, 3, 64, 64))
    G = a.to_networkx()
    assert G.number_of_nodes() == len(a.graph_module.graph.nodes)
    assert sum(1 for g in G.graph["groups"].values() if g["status"] == "growable") >= 10
    html = a.draw(tmp_path / "resnet18.html")
    assert html.count('<g class="view"') >= 2  # full graph and collapsed module views


def _chromium():
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None


_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_page_renders_in_headless_chromium(resnet, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); "
                    "the HTML page was not opened in a browser")
    _, _, a = resnet
    page = tmp_path / "page.html"
    a.draw(page)
    url = page.resolve().as_uri()
    png = tmp_path / "shot.png"
    common = [browser, *_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, f"--screenshot={png}", "--window-size=1200,900", url],
                   capture_output=True, timeout=120)
    assert png.exists(), "chromium wrote no screenshot"
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-ready="1"' in dom, "the page's script did not run to the end"
    assert re.search(r'class="vp" transform="translate\(', dom)

    from torchvision.io import ImageReadMode, read_image
    img = read_image(str(png), ImageReadMode.RGB).permute(1, 2, 0).to(torch.int32)
    assert img.shape[0] == 900 and img.shape[1] == 1200
    canvas = img[150:, :780]  # the drawing (left of the legend, under the header)
    nonwhite = (canvas < 235).any(-1).float().mean().item()
    assert nonwhite > 0.02, f"the graph area is blank ({nonwhite:.2%} non-white)"
    # nodes are filled with their group's colour: that colour covers many pixels
    colours = group_colours(a.to_networkx().graph["groups"])
    for gid in (a.group("conv1").id, a.group("layer1.0.conv1").id):
        rgb = torch.tensor([int(colours[gid][i:i + 2], 16) for i in (1, 3, 5)])
        hits = ((canvas - rgb).abs().max(-1).values <= 3).sum().item()
        assert hits > 1000, f"group {gid}'s colour {colours[gid]} covers only {hits} pixels"


def test_contraction_partners_are_explained():
    import torch.nn.functional as F

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Linear(6, 4) for _ in range(3))
            self.o = nn.Linear(4, 2)

        def forward(self, x):
            return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))

    a = fxgrow.analyze(Attn(), torch.randn(2, 5, 6))
    (k_dim,) = a.partners
    note = to_networkx(a).graph["groups"][k_dim]["contraction"]
    assert f"group {a.partners[k_dim]}" in note and "divided by the counts" in note
    assert "scaled_dot_product_attention" in note
    assert note in a.table(400) and "divided by the counts" in a.draw()


def test_group_fills_are_never_red_ish():
    import colorsys
    groups = {g: {"status": ("growable", "blocked", "fixed")[g % 3]} for g in range(60)}
    for gid, c in group_colours(groups).items():
        r, g, b = (int(c[i:i + 2], 16) / 255 for i in (1, 3, 5))
        hue, _, sat = colorsys.rgb_to_hls(r, g, b)
        if sat > 0.05:  # greys (fixed groups) have no hue
            assert 40 <= hue * 360 <= 300, f"group {gid}: {c} is red-ish"


def test_plan_must_map_groups_to_sizes(resnet):
    _, _, a = resnet
    for bad in ("abc", {1: 5}, {"1": (4, 8)}, [(1, (4, 8))], {1: (4.0, 8)}):
        with pytest.raises(fxgrow.SpecError, match=r"plan must map group ids"):
            a.draw(None, plan=bad)
    with pytest.raises(fxgrow.SpecError, match="plan must map"):
        a.to_dot(None, plan="abc")
    gid = a.growable[0].id
    assert "→" in a.draw(None, plan={gid: (a.growable[0].size, 99)})
    plan = fxgrow.plan_widening(a, 2.0)  # a GrowthPlan is read as its summary
    assert to_networkx(a, plan=plan).graph["groups"][gid]["new_size"] == plan.growth[gid].new


def test_writing_into_a_missing_folder_is_an_output_path_error(resnet, tmp_path):
    _, _, a = resnet
    for write in (a.draw, a.to_dot):
        with pytest.raises(fxgrow.OutputPathError, match="does not exist") as e:
            write(tmp_path / "missing" / "g.html")
        assert isinstance(e.value, OSError)
        with pytest.raises(fxgrow.OutputPathError, match="is a folder"):
            write(tmp_path)
