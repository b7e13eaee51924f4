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

        def big():
            return nn.Sequential(nn.Linear(32, 40), nn.ReLU(), nn.Linear(40, 4))

        def not_a_model():
            return 3

        NUMBER = 3
    """))
    return path


def test_demo(capsys):
    assert main(["demo", "--width", "4"]) == 0
    out = capsys.readouterr().out
    assert "function preserved: yes" in out and "group 1" in out
    assert "\ndeepened: verify: OK" in out and "\ndeepened, then widened: verify: OK" in out


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


@pytest.mark.parametrize("init", ["net2net", "split"])
def test_grow_into_fills_and_saves_the_target(mlp_file, tmp_path, init, capsys):
    weights, out = tmp_path / "small.pt", tmp_path / "big.pt"
    import importlib.util
    spec = importlib.util.spec_from_file_location("my_models", mlp_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    small = mod.build().eval()
    torch.save(small.state_dict(), weights)
    assert main(["grow-into", f"{mlp_file}:build", f"{mlp_file}:big", "--input-shape", "8,32",
                 "--weights", str(weights), "--init", init, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "verify: OK" in text and "parameters) into" in text
    big = mod.big().eval()
    big.load_state_dict(torch.load(out, weights_only=True))
    x = torch.randn(6, 32)
    assert torch.allclose(big(x), small(x), rtol=1e-5, atol=1e-6)


def test_grow_into_refuses_a_narrower_target(mlp_file, capsys):
    assert main(["grow-into", f"{mlp_file}:big", f"{mlp_file}:build", "--input-shape",
                 "8,32"]) == 2
    assert "grow_into only grows" in capsys.readouterr().err


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


# -- arguments checked before any work ---------------------------------------------
MLP = ["--input-shape", "8,32"]


@pytest.mark.parametrize("extra", [
    ["--factor", "nan"], ["--factor", "inf"], ["--factor", "0.5"], ["--factor", "two"],
    ["--input-shape", "4,x"], ["--input-shape", "0,8"], ["--input-shape", "4x"],
    ["--input-shape", "4,8x2"], ["--max-int", "0"], ["--seed", "9" * 25], ["--seed", "-1"],
], ids=" ".join)
def test_bad_values_are_usage_errors_without_a_traceback(extra, mlp_file, capsys):
    argv = ["widen", f"{mlp_file}:build", *MLP, *extra]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage:" in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("fxgrow widen: error: argument")


@pytest.mark.parametrize("argv", [["demo", "--width", "-3"], ["demo", "--width", "0"],
                                  ["demo", "--factor", "nan"]], ids=" ".join)
def test_bad_demo_values_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "fxgrow demo: error: argument" in capsys.readouterr().err


def test_shapes_take_one_separator():
    from fxgrow.cli import _shape
    assert _shape("4,8") == _shape("4x8") == (4, 8) and _shape("1, 3, 7") == (1, 3, 7)


@pytest.mark.parametrize("argv, message", [
    (["widen", "-o", "{tmp}/missing/x.pt"], "folder"),
    (["widen", "--draw", "{tmp}/missing/x.html"], "folder"),
    (["widen", "--draw", "{tmp}/x.png"], ".html, .htm, .dot, .gv"),
    (["draw", "-o", "{tmp}/missing/x.html"], "folder"),
    (["draw", "-o", "{tmp}/x.png"], "must end in one of .html, .htm, .dot, .gv"),
    (["draw", "-o", "{tmp}/folder.html"], "is a folder"),
])
def test_output_paths_are_checked_before_the_work(argv, message, mlp_file, tmp_path, capsys,
                                                   monkeypatch):
    import fxgrow.cli as cli

    def no_work(args):
        raise AssertionError("the model was analysed before the path was checked")

    monkeypatch.setattr(cli, "_prepare", no_work)
    (tmp_path / "folder.html").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main([argv[0], f"{mlp_file}:build", *MLP, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxgrow: error:") and message in err and len(err.splitlines()) == 1


def test_an_os_error_while_saving_is_one_line(mlp_file, tmp_path, capsys, monkeypatch):
    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    assert main(["widen", f"{mlp_file}:build", *MLP, "-o", str(tmp_path / "g.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fxgrow: error: cannot write") and "No space left" in err
    assert len(err.splitlines()) == 1


def test_spec_keys_naming_a_module_are_module_names(mlp_file, capsys):
    # build() is an nn.Sequential: "0" is its first Linear, "#1" group 1
    assert main(["widen", f"{mlp_file}:build", *MLP, "--spec", '{"0": 20}']) == 0
    assert "group 1: 16 -> 20  (0)" in capsys.readouterr().out
    assert main(["widen", f"{mlp_file}:build", *MLP, "--spec", '{"#1": 24}']) == 0
    assert "group 1: 16 -> 24" in capsys.readouterr().out
    assert main(["widen", f"{mlp_file}:build", *MLP, "--spec", '{"group:1": 18}']) == 0
    assert "group 1: 16 -> 18" in capsys.readouterr().out


def test_a_digit_key_read_as_a_module_says_so(mlp_file, capsys):
    assert main(["widen", f"{mlp_file}:build", *MLP, "--spec", '{"2": 8}']) == 2
    err = capsys.readouterr().err
    assert "is fixed" in err and "were read as module names" in err and '"#2"' in err


def test_help_has_a_description_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and "without changing what" in out and "examples:" in out
    assert "fxgrow draw torchvision.models:resnet18" in out
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "tiny ResNet" in capsys.readouterr().out


def test_a_missing_package_says_what_to_install(tmp_path, capsys):
    path = tmp_path / "needs_pkg.py"
    path.write_text("import no_such_dependency_xyz\n\ndef build():\n    return None\n")
    assert main(["analyze", f"{path}:build", "--input-shape", "1"]) == 2
    assert "No module named 'no_such_dependency_xyz': pip install no_such_dependency_xyz" in \
        capsys.readouterr().err


def test_pip_names_differ_from_import_names(monkeypatch):
    import sys

    from fxgrow.cli import ModelSpecError, load_model
    for name in ("PIL", "PIL.Image"):  # importing them fails as if not installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ModelSpecError, match="No module named 'PIL.*': pip install pillow"):
        load_model("PIL.Image:new")
