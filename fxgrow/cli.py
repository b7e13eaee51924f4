"""The ``fxgrow`` command line: analyse, draw and widen a model without writing code.

``fxgrow demo`` analyses the built-in tiny ResNet, prints its group table,
widens it and prints the equivalence report.  The other subcommands take a
model named as ``package.module:callable`` or ``path/to/file.py:callable``
(called with no arguments; it must return an ``nn.Module``, which is put in
eval mode) and a random example input of ``--input-shape``:

* ``fxgrow analyze MODEL --input-shape 1,3,224,224`` prints the group table;
* ``fxgrow draw MODEL --input-shape ... -o out.html`` writes the HTML page
  (or DOT text, for a ``.dot`` or ``.gv`` file) of :mod:`fxgrow.viz`;
* ``fxgrow widen MODEL --input-shape 8,32 --factor 2 -o grown.pt`` widens,
  verifies and saves the grown ``GraphModule`` with ``torch.save``
  (``--init split`` or ``--init zero_out`` for the exact symmetry-breaking
  initialisers);
* ``fxgrow grow-into MODEL TARGET --input-shape ... -o big.pt`` fills the bigger
  TARGET with MODEL grown (:func:`fxgrow.grow_into`), verifies it and saves its
  ``state_dict`` (``--weights`` loads MODEL's trained weights first).

Keys of ``--spec`` are module names where the model has a module of that name
(``"0"`` of an ``nn.Sequential``); group ids are written ``"#3"`` or
``"group:3"``, or as plain digits where no module has that name.

Bad arguments, errors fxgrow raises on purpose and files that cannot be
written exit with status 2 and a message (one line for the arguments and
paths), never a traceback; output paths are checked before any work is done.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Set, Tuple

import torch

from fxgrow import checks, meta
from fxgrow.errors import FxGrowError, SpecError
from fxgrow.widen.apply import EXACT, INITS

__all__ = ["main", "build_parser", "load_model", "ModelSpecError"]


def _demo(args: argparse.Namespace) -> int:
    import fxgrow
    from fxgrow.testing.models import tiny_resnet

    torch.manual_seed(args.seed)
    model = tiny_resnet(width=args.width)
    x = torch.randn(4, 3, 32, 32)
    print(f"== fxgrow demo: a tiny ResNet ({sum(p.numel() for p in model.parameters()):,} "
          "parameters), eval mode\n")
    analysis = fxgrow.analyze(model, x)
    print(analysis, "\n")
    print(f"== widen every growable group x{args.factor} (Net2WiderNet)")
    wide = fxgrow.widen(analysis, x, args.factor, seed=args.seed)
    for gid, (old, new) in wide.meta[meta.PLAN].items():
        prods = ", ".join(analysis.group(gid).producers)
        print(f"  group {gid}: {old} -> {new}  ({prods})")
    print(f"  parameters: {sum(p.numel() for p in wide.parameters()):,}")
    print(wide.meta[meta.REPORT], "\n")
    target = {"layer1.0.conv1": 2 * args.width + 3}
    print(f"== widen one group to an arbitrary size: {target}")
    one = fxgrow.widen(analysis, x, target, seed=args.seed)
    print(one.meta[meta.REPORT], "\n")
    print("== baselines (not function preserving, shown for comparison)")
    for init in ("random_pad", "random_init"):
        g = fxgrow.widen(analysis, x, args.factor, init=init, seed=args.seed)
        print(f"  {init:<11} max rel error {fxgrow.verify(model, g, x).max_rel:.3g}")
    where = ["layer1.0.relu", "layer2.1.relu"]  # each called twice: 4 new blocks
    print(f"\n== deepen after {where} (Net2DeeperNet), then widen the result")
    deep = fxgrow.deepen(model, x, where, method="auto", calibration=torch.randn(16, 3, 32, 32),
                         seed=args.seed)
    for rec in deep.meta[meta.DEEPEN]:
        parts = [rec["layer"]] + ["BN"] * rec["batchnorm"] + [rec["activation"] or "no act"]
        print(f"  {rec['module']:<24} {rec['method']:<8} {' -> '.join(parts)}")
    deep_wide = fxgrow.widen(deep, x, args.factor, seed=args.seed)
    print("deepened:", deep.meta[meta.REPORT])
    print("deepened, then widened:", deep_wide.meta[meta.REPORT])
    ok = all(g.meta[meta.REPORT].ok for g in (wide, one, deep, deep_wide))
    print("\nfunction preserved:", "yes" if ok else "NO")
    return 0 if ok else 1


#: pip names of packages imported under another name
_PIP_NAMES = {"sklearn": "scikit-learn", "PIL": "pillow", "cv2": "opencv-python",
              "yaml": "pyyaml", "torch_pruning": "torch-pruning"}


class ModelSpecError(FxGrowError):
    """The MODEL argument does not name a callable that builds an ``nn.Module``."""


def load_model(spec: str) -> torch.nn.Module:
    """Build the model named ``package.module:callable`` or ``file.py:callable``.

    Examples
    --------
    >>> load_model("fxgrow.testing.models:tiny_resnet").training
    False
    >>> load_model("fxgrow.testing.models")
    Traceback (most recent call last):
    ...
    fxgrow.cli.ModelSpecError: MODEL must look like `package.module:callable` or `path/to/file.py:callable`, got 'fxgrow.testing.models'
    """
    import importlib
    import importlib.util

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ModelSpecError("MODEL must look like `package.module:callable` or "
                             f"`path/to/file.py:callable`, got {spec!r}")
    try:
        if where.endswith(".py") or os.sep in where or "/" in where:
            if not os.path.isfile(where):
                raise ModelSpecError(f"no such file: {where}")
            mod_name = "_fxgrow_cli_" + os.path.splitext(os.path.basename(where))[0]
            loader = importlib.util.spec_from_file_location(mod_name, where)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except ModelSpecError:
        raise
    except ModuleNotFoundError as e:
        top = (e.name or where).split(".")[0]
        hint = f"pip install {_PIP_NAMES.get(top, top)}"
        if top == where.split(".")[0]:  # the MODEL's own package
            hint += " (or, for your own module, run from the folder holding it or give " \
                    "path/to/file.py:callable)"
        raise ModelSpecError(f"cannot import `{where}`: No module named {e.name!r}: {hint}") from e
    except Exception as e:
        raise ModelSpecError(f"cannot import `{where}`: {type(e).__name__}: {e}") from e
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"`{where}` has no attribute `{name}`")
        obj = getattr(obj, part)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise ModelSpecError(f"`{spec}` is neither an nn.Module nor callable")
        try:
            obj = obj()
        except Exception as e:
            raise ModelSpecError(f"calling `{spec}()` failed: {type(e).__name__}: {e}") from e
    if not isinstance(obj, torch.nn.Module):
        raise ModelSpecError(f"`{spec}` gave a {type(obj).__name__}, not an nn.Module")
    return obj.eval()


def _shape(text: str) -> tuple:
    """``"1,3,224,224"`` or ``"1x3x224x224"``: every piece a size >= 1."""
    sep = "," if "," in text else "x"
    pieces = [v.strip() for v in text.split(sep)]
    if not all(v.isdigit() for v in pieces) or any(int(v) < 1 for v in pieces):
        raise argparse.ArgumentTypeError(
            f"expected sizes >= 1 like 1,3,224,224 (or 1x3x224x224), got {text!r}")
    return tuple(int(v) for v in pieces)


def _bounded_int(lo: int, hi: Optional[int] = None):
    """An argparse type: an int in ``[lo, hi)``."""
    def parse(text: str) -> int:
        try:
            value: Any = int(text)
        except ValueError:
            value = text
        try:
            return checks.integer(value, "the value", minimum=lo, maximum=hi)
        except SpecError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise argparse.ArgumentTypeError(f"expected a finite factor >= 1 such as 2 or 1.5, "
                                         f"got {text!r}")
    return value


_seed = _bounded_int(0, checks.SEED_MAX)  # [0, 2**63)
_DRAWN = (".html", ".htm", ".dot", ".gv")


def _dtype(text: str) -> torch.dtype:
    dt = getattr(torch, text, None)
    if not isinstance(dt, torch.dtype):
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r} (e.g. float32, float64, int64)")
    return dt


def _example(args: argparse.Namespace):
    torch.manual_seed(args.seed)
    inputs = []
    for shape in args.input_shape:
        if args.dtype.is_floating_point or args.dtype.is_complex:
            inputs.append(torch.randn(shape, dtype=args.dtype))
        else:
            inputs.append(torch.randint(0, args.max_int, shape, dtype=args.dtype))
    return inputs[0] if len(inputs) == 1 else tuple(inputs)


def _prepare(args: argparse.Namespace, analyse: bool = True):
    import fxgrow

    model = load_model(args.model)
    if args.dtype.is_floating_point:
        model = model.to(args.dtype)
    x = _example(args)
    return model, x, (fxgrow.analyze(model, x) if analyse else None)


def _analyze(args: argparse.Namespace) -> int:
    _, _, analysis = _prepare(args)
    print(analysis)
    if args.members:
        for g in analysis.groups:
            print(f"\n{g}")
            for m in g.members:
                print(f"  {m.tensor}[{m.dim}]  {m.role}")
    return 0


def _draw(args: argparse.Namespace) -> int:
    out = checks.output_path(args.output, "-o", suffixes=_DRAWN)  # before the work
    _, _, analysis = _prepare(args)
    if out.lower().endswith((".dot", ".gv")):
        analysis.to_dot(out)
    else:
        analysis.draw(out)
    print(f"wrote {out} ({len(analysis.groups)} groups, "
          f"{len(analysis.graph_module.graph.nodes)} nodes)")
    return 0


def _spec_keys(spec: Dict[str, Any], modules: Set[str]) -> Tuple[Dict[Any, Any], List[str]]:
    """JSON keys as widen reads them, and the digit keys read as module names.

    A key naming a module is that module; ``"#3"`` and ``"group:3"`` are group 3;
    other digit keys are group ids.

    >>> _spec_keys({"0": 32, "#0": 2.0, "group:4": 9, "7": 1.5, "fc": 3}, {"0", "fc"})
    ({'0': 32, 0: 2.0, 4: 9, 7: 1.5, 'fc': 3}, ['0'])
    """
    out: Dict[Any, Any] = {}
    as_modules = []
    for key, value in spec.items():
        for prefix in ("#", "group:"):
            if key.startswith(prefix) and key[len(prefix):].isdigit():
                key = int(key[len(prefix):])
                break
        else:
            if key.isdigit():
                if key in modules:
                    as_modules.append(key)
                else:
                    key = int(key)
        if key in out:
            raise SpecError(f"--spec names {key!r} twice")
        out[key] = value
    return out, as_modules


def _parse_spec(text: str) -> Dict[str, Any]:
    try:
        spec = json.loads(text)
    except ValueError as e:
        raise SpecError(f"--spec is not valid JSON: {e}") from e
    if not isinstance(spec, dict):
        raise SpecError("--spec must be a JSON object such as "
                        '\'{"layer1.0.conv1": 96, "#3": 2.0}\'')
    return spec


def _widen(args: argparse.Namespace) -> int:
    import fxgrow

    spec: Any = _parse_spec(args.spec) if args.spec is not None else args.factor
    for path, flag in ((args.output, "-o"), (args.draw, "--draw")):  # before the work
        if path:
            checks.output_path(path, flag, suffixes=_DRAWN if flag == "--draw" else None)
    model, x, analysis = _prepare(args)
    as_modules: List[str] = []
    if isinstance(spec, dict):
        spec, as_modules = _spec_keys(spec, {n for n, _ in model.named_modules() if n})
    try:
        grown = fxgrow.widen(analysis, x, spec, init=args.init, seed=args.seed)
    except SpecError as e:
        if as_modules:  # say how the digit keys were read
            e.args = (f"{e.args[0]} (--spec keys {as_modules} were read as module names; "
                      f"write \"#{as_modules[0]}\" for group {as_modules[0]})",) + e.args[1:]
        raise
    plan = grown.meta[meta.PLAN]
    for gid, (old, new) in plan.items():
        prods = ", ".join(analysis.group(gid).producers) or "-"
        print(f"group {gid}: {old} -> {new}  ({prods})")
    report = grown.meta.get(meta.REPORT)
    if report is not None:
        print(report)
    if args.output:
        _save(grown, args.output)
        print(f"saved the grown model to {args.output} (load it with torch.load(path, "
              "weights_only=False))")
    if args.draw:
        analysis.draw(args.draw, plan=plan)
        print(f"wrote {args.draw}")
    return 0 if report is None or report.ok else 1


def _save(obj: Any, path: str) -> None:
    try:
        torch.save(obj, path)
    except (OSError, RuntimeError) as e:  # torch.save wraps some OSErrors
        raise OSError(f"cannot write {path!r}: {e}") from e


def _grow_into(args: argparse.Namespace) -> int:
    import fxgrow

    if args.output:
        checks.output_path(args.output, "-o")  # before the work
    layers = _parse_spec(args.layers) if args.layers is not None else None
    model, x, _ = _prepare(args, analyse=False)
    if args.weights:
        try:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, ValueError) as e:
            raise SpecError(f"--weights {args.weights!r} is not a loadable state_dict: {e}") from e
        model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    target = load_model(args.target)
    if args.dtype.is_floating_point:
        target = target.to(args.dtype)
    fxgrow.grow_into(model, target, x, layers=layers, init=args.init, seed=args.seed,
                     verify=False)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in target.parameters())
    print(f"grew {args.model} ({before:,} parameters) into {args.target} ({after:,})")
    report = fxgrow.verify(model, target.eval(), x) if args.init in EXACT else None
    if report is not None:
        print(report)
    if args.output:
        _save(target.state_dict(), args.output)
        print(f"saved the target's state_dict to {args.output}")
    return 0 if report is None or report.ok else 1


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="package.module:callable or path/to/file.py:callable returning an "
                        "nn.Module (put in eval mode)")
    p.add_argument("--input-shape", type=_shape, action="append", required=True,
                   metavar="N,C,...", help="shape of the random example input, e.g. 1,3,224,224 "
                                           "or 1x3x224x224 (repeat it for a model with several "
                                           "inputs)")
    p.add_argument("--dtype", type=_dtype, default=torch.float32,
                   help="dtype of the example input (default float32); a floating dtype also "
                        "converts the model, an integer dtype (token ids) gives random ints in "
                        "[0, --max-int)")
    p.add_argument("--max-int", type=_bounded_int(1), default=2, metavar="N",
                   help="upper bound (exclusive, >= 1) of integer inputs (default 2)")
    p.add_argument("--seed", type=_seed, default=0, help="seeds the input and the index maps")


_DESCRIPTION = ("Grow trained PyTorch networks, wider and deeper, without changing what\n"
                "they compute (Net2Net on the model's torch.fx graph).")

_EPILOG = """examples:
  fxgrow demo                                            analyse, widen, deepen a tiny ResNet
  fxgrow analyze torchvision.models:resnet18 --input-shape 1,3,224,224
  fxgrow draw torchvision.models:resnet18 --input-shape 1,3,224,224 -o resnet18.html
  fxgrow widen my_models.py:build --input-shape 8,32 --factor 2 -o grown.pt --draw grown.html
  fxgrow widen my_models.py:build --input-shape 8,32 --spec '{"0": 64, "#3": 1.5}'
  fxgrow grow-into torchvision.models:resnet50 torchvision.models:wide_resnet50_2 \\
      --input-shape 1,3,64,64 --weights resnet50.pt -o wide.pt

MODEL is package.module:callable or path/to/file.py:callable (torchvision models need
`pip install torchvision`). Errors exit with status 2 and a message, no traceback.
See `fxgrow COMMAND --help` and docs/visualize.md."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxgrow", description=_DESCRIPTION, epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser("demo", help="analyse, widen, deepen and verify a built-in tiny ResNet",
                       description="Analyse the built-in tiny ResNet (random weights, eval "
                                   "mode), print its group table, widen every growable group "
                                   "and one group to an arbitrary size, compare with the "
                                   "random baselines, deepen it and widen the result; every "
                                   "step is verified against the original.")
    d.add_argument("--width", type=_bounded_int(1, 1025), default=16,
                   help="base width of the demo ResNet (1 to 1024, default 16)")
    d.add_argument("--factor", type=_factor, default=2.0, help="widening factor (default 2)")
    d.add_argument("--seed", type=_seed, default=0)
    d.set_defaults(func=_demo)

    a = sub.add_parser("analyze", help="print the groups of a model",
                       description="Trace MODEL on a random input and print its group table: "
                                   "which neurons must grow together, and why a group is "
                                   "fixed or blocked.")
    _model_args(a)
    a.add_argument("--members", action="store_true", help="also list every group's members")
    a.set_defaults(func=_analyze)

    g = sub.add_parser("draw", help="write the graph picture (HTML, or DOT for a .dot file)",
                       description="Write the analysed graph as a self-contained HTML page "
                                   "(.html, .htm) or Graphviz DOT text (.dot, .gv).")
    _model_args(g)
    g.add_argument("-o", "--output", required=True, help="out.html, out.htm, out.dot or out.gv")
    g.set_defaults(func=_draw)

    w = sub.add_parser("widen", help="widen a model, verify it and save it",
                       description="Widen MODEL (every growable group by --factor, or the "
                                   "groups --spec names), verify the result against the "
                                   "original and optionally save and draw it.")
    _model_args(w)
    how = w.add_mutually_exclusive_group()
    how.add_argument("--factor", type=_factor, default=2.0,
                     help="grow every growable group by this factor (default 2)")
    how.add_argument("--spec", help='JSON object {module name or "#group id": new size (int) or '
                                   'factor (float)}, e.g. \'{"0": 32, "fc1": 1.5, "#3": 2.0}\'; '
                                   "a key naming a module is that module, other digit keys are "
                                   "group ids")
    w.add_argument("--init", default="net2net", choices=INITS,
                   help="net2net (default: copies, consumers divided by the counts); split "
                        "(copies with unequal shares of the outgoing weights) and zero_out "
                        "(fresh neurons with zero outgoing weights), exact and symmetry "
                        "breaking; random_pad, random_init (baselines, not exact)")
    w.add_argument("-o", "--output", help="where to torch.save the grown GraphModule")
    w.add_argument("--draw", metavar="HTML", help="also draw the graph with old -> new sizes "
                                                  "(.html, .htm, .dot or .gv)")
    w.set_defaults(func=_widen)

    gi = sub.add_parser("grow-into", help="grow a model into a bigger one built by your code",
                        description="Fill TARGET (built by its callable, e.g. a bigger config) "
                                    "with MODEL grown (fxgrow.grow_into), verify it against "
                                    "MODEL and optionally save the target's state_dict.")
    _model_args(gi)
    gi.add_argument("target", metavar="TARGET", help="the bigger model, named like MODEL")
    gi.add_argument("--weights", help="a state_dict file (torch.save) to load into MODEL first")
    gi.add_argument("--layers", help='JSON {target module: source module or null}, e.g. '
                                     '\'{"blocks.1": null, "blocks.2": "blocks.1"}\'')
    gi.add_argument("--init", default="net2net", choices=INITS, help="as for widen")
    gi.add_argument("-o", "--output", help="where to torch.save the target's state_dict")
    gi.set_defaults(func=_grow_into)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FxGrowError as e:
        print(f"fxgrow: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that cannot be read or written
        print(f"fxgrow: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
