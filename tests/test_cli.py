"""The command line, run in-process through ``fxgrow.cli.main``."""

from __future__ import annotations

import textwrap

import pytest
import torch

from fxgrow.cli import main

TINY = ["fxgrow.testing.models:tiny_resnet", "--input-shape", "2,3,8,8"]


@pytest.fixture
def mlp_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            return nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))

        def not_a_model():
            return 3

        NUMBER = 3
    """))
    return path


def test_demo(capsys):
    assert main(["demo", "--width", "4"]) == 0
    out = capsys.readouterr().out
    assert "function preserved: yes" in out and "group 1" in out


def test_analyze_prints_the_group_table(capsys):
    assert main(["analyze", *TINY, "--members"]) == 0
    out = capsys.readouterr().out
    assert "8 groups, 6 growable" in out
    assert "layer1.0.conv1" in out and "model input `x`" in out
    assert "conv1.weight[0]  producer" in out


def test_analyze_a_file_and_dtype(mlp_file, capsys):
    assert main(["analyze", f"{mlp_file}:build", "--input-shape", "8,32",
                 "--dtype", "float64"]) == 0
    out = capsys.readouterr().out
    assert "3 groups, 1 growable" in out


def test_draw_html_and_dot(tmp_path, capsys):
    html, dot = tmp_path / "g.html", tmp_path / "g.dot"
    assert main(["draw", *TINY, "-o", str(html)]) == 0
    assert main(["draw", *TINY, "-o", str(dot)]) == 0
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "layer2.0.conv1" in page
    assert dot.read_text(encoding="utf-8").startswith('digraph "_TinyResNet"')
    assert f"wrote {html}" in capsys.readouterr().out


def test_widen_saves_a_grown_model(mlp_file, tmp_path, capsys):
    out, page = tmp_path / "grown.pt", tmp_path / "grown.html"
    args = ["widen", f"{mlp_file}:build", "--input-shape", "8,32", "--factor", "2",
            "-o", str(out), "--draw", str(page)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "16 -> 32" in text and "verify: OK" in text
    grown = torch.load(out, weights_only=False)
    assert grown.get_submodule("0").out_features == 32
    assert grown(torch.randn(5, 32)).shape == (5, 4)
    assert "16 → 32" in page.read_text(encoding="utf-8")


def test_widen_with_a_json_spec(capsys):
    # tiny_resnet() has width 16
    # group 1 is conv1's output (group 0: the input channels)
    assert main(["widen", *TINY, "--spec", '{"layer1.0.conv1": 20, "1": 1.5}']) == 0
    out = capsys.readouterr().out
    assert "16 -> 20  (layer1.0.conv1)" in out and "16 -> 24  (conv1," in out


@pytest.mark.parametrize("init", ["split", "zero_out"])
def test_widen_with_an_exact_symmetry_breaking_init(mlp_file, tmp_path, init, capsys):
    out = tmp_path / "grown.pt"
    assert main(["widen", f"{mlp_file}:build", "--input-shape", "8,32", "--init", init,
                 "-o", str(out)]) == 0
    assert "verify: OK" in capsys.readouterr().out
    w = torch.load(out, weights_only=False).get_submodule("2").weight.detach()
    if init == "zero_out":
        assert torch.count_nonzero(w[:, 16:]) == 0
    else:  # the two copies of a neuron read it with unequal shares: no two columns agree
        assert torch.cdist(w[:, 16:].T, w[:, :16].T).min() > 1e-4


def test_widen_refuses_an_unknown_init(capsys):
    with pytest.raises(SystemExit) as e:
        main(["widen", *TINY, "--init", "zeros"])
    assert e.value.code == 2 and "invalid choice: 'zeros'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["analyze", "fxgrow.testing.models", "--input-shape", "1"], "MODEL must look like"),
    (["analyze", "no_such_pkg_xyz:build", "--input-shape", "1"], "cannot import `no_such_pkg_xyz`"),
    (["analyze", "fxgrow.testing.models:nothing", "--input-shape", "1"], "has no attribute `nothing`"),
    (["analyze", "/no/such/file.py:build", "--input-shape", "1"], "no such file"),
    (["analyze", "fxgrow.testing.models:tiny_resnet", "--input-shape", "2,5"], "fails on the example input"),
    (["widen", *TINY, "--spec", '{"fc": 20}'], "is fixed"),
    (["widen", *TINY, "--spec", "{not json"], "not valid JSON"),
    (["widen", *TINY, "--spec", "[1, 2]"], "must be a JSON object"),
])
def test_errors_exit_2_with_a_message(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxgrow: error:") and message in err


def test_model_spec_errors_from_a_file(mlp_file, capsys):
    assert main(["analyze", f"{mlp_file}:not_a_model", "--input-shape", "1"]) == 2
    assert "gave a int, not an nn.Module" in capsys.readouterr().err
    assert main(["analyze", f"{mlp_file}:NUMBER", "--input-shape", "1"]) == 2
    assert "neither an nn.Module nor callable" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["analyze", *TINY[:1], "--input-shape", "a,b"],
    ["analyze", *TINY, "--dtype", "float99"],
    ["analyze", *TINY[:1]],
])
def test_bad_arguments_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err
