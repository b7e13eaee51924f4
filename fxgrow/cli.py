"""The ``fxgrow`` command line.

``fxgrow demo`` analyses the built-in tiny ResNet, prints its group table,
widens it and prints the equivalence report.  The other subcommands take a
model named as ``package.module:callable`` or ``path/to/file.py:callable``
(called with no arguments; it must return an ``nn.Module``, which is put in
eval mode) and a random example input of ``--input-shape``:

* ``fxgrow analyze MODEL --input-shape 1,3,224,224`` prints the group table;
* ``fxgrow draw MODEL --input-shape ... -o out.html`` writes the HTML page
  (or DOT text, for a ``.dot`` file) of :mod:`fxgrow.viz`;
* ``fxgrow widen MODEL --input-shape 8,32 --factor 2 -o grown.pt`` widens,
  verifies and saves the grown ``GraphModule`` with ``torch.save``
  (``--init split`` or ``--init zero_out`` for the exact symmetry-breaking
  initialisers).

Errors fxgrow raises on purpose exit with status 2 and a one-line message.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

from fxgrow import meta
from fxgrow.errors import FxGrowError, SpecError
from fxgrow.widen.apply import INITS

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
    print(deep.meta[meta.REPORT], "\n", deep_wide.meta[meta.REPORT], sep="")
    ok = all(g.meta[meta.REPORT].ok for g in (wide, one, deep, deep_wide))
    print("\nfunction preserved:", "yes" if ok else "NO")
    return 0 if ok else 1


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
    import os

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
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or any(v < 0 for v in shape):
        raise argparse.ArgumentTypeError(f"expected sizes like 1,3,224,224, got {text!r}")
    return shape


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


def _prepare(args: argparse.Namespace):
    import fxgrow

    model = load_model(args.model)
    if args.dtype.is_floating_point:
        model = model.to(args.dtype)
    x = _example(args)
    return model, x, fxgrow.analyze(model, x)


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
    _, _, analysis = _prepare(args)
    out = str(args.output)
    if out.endswith(".dot") or out.endswith(".gv"):
        analysis.to_dot(out)
    else:
        analysis.draw(out)
    print(f"wrote {out} ({len(analysis.groups)} groups, "
          f"{len(analysis.graph_module.graph.nodes)} nodes)")
    return 0


def _widen(args: argparse.Namespace) -> int:
    import json

    import fxgrow

    if args.spec is not None:
        try:
            spec = json.loads(args.spec)
        except ValueError as e:
            raise SpecError(f"--spec is not valid JSON: {e}") from e
        if not isinstance(spec, dict):
            raise SpecError("--spec must be a JSON object such as "
                            '\'{"layer1.0.conv1": 96, "3": 2.0}\'')
        spec = {int(k) if k.lstrip("-").isdigit() else k: v for k, v in spec.items()}
    else:
        spec = args.factor
    model, x, analysis = _prepare(args)
    grown = fxgrow.widen(analysis, x, spec, init=args.init, seed=args.seed)
    plan = grown.meta[meta.PLAN]
    for gid, (old, new) in plan.items():
        prods = ", ".join(analysis.group(gid).producers) or "-"
        print(f"group {gid}: {old} -> {new}  ({prods})")
    report = grown.meta.get(meta.REPORT)
    if report is not None:
        print(report)
    if args.output:
        torch.save(grown, args.output)
        print(f"saved the grown model to {args.output} (load it with torch.load(path, "
              "weights_only=False))")
    if args.draw:
        analysis.draw(args.draw, plan=plan)
        print(f"wrote {args.draw}")
    return 0 if report is None or report.ok else 1


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="package.module:callable or path/to/file.py:callable returning an "
                        "nn.Module (put in eval mode)")
    p.add_argument("--input-shape", type=_shape, action="append", required=True,
                   metavar="N,C,...", help="shape of the random example input (repeat it for "
                                           "a model with several inputs)")
    p.add_argument("--dtype", type=_dtype, default=torch.float32,
                   help="dtype of the example input (default float32); a floating dtype also "
                        "converts the model, an integer dtype (token ids) gives random ints in "
                        "[0, --max-int)")
    p.add_argument("--max-int", type=int, default=2, metavar="N",
                   help="upper bound (exclusive) of integer inputs (default 2)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxgrow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="analyse, widen and verify a built-in tiny ResNet")
    d.add_argument("--width", type=int, default=16, help="base width of the demo ResNet")
    d.add_argument("--factor", type=float, default=2.0, help="widening factor")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    a = sub.add_parser("analyze", help="print the groups of a model")
    _model_args(a)
    a.add_argument("--members", action="store_true", help="also list every group's members")
    a.set_defaults(func=_analyze)

    g = sub.add_parser("draw", help="write the graph picture (HTML, or DOT for a .dot file)")
    _model_args(g)
    g.add_argument("-o", "--output", required=True, help="out.html (or out.dot)")
    g.set_defaults(func=_draw)

    w = sub.add_parser("widen", help="widen a model, verify it and save it")
    _model_args(w)
    how = w.add_mutually_exclusive_group()
    how.add_argument("--factor", type=float, default=2.0,
                     help="grow every growable group by this factor (default 2)")
    how.add_argument("--spec", help='JSON object {module or group id: new size (int) or factor '
                                   '(float)}, e.g. \'{"0": 32, "fc1": 1.5}\'')
    w.add_argument("--init", default="net2net", choices=INITS,
                   help="net2net (default: copies, consumers divided by the counts); split "
                        "(copies with unequal shares of the outgoing weights) and zero_out "
                        "(fresh neurons with zero outgoing weights), exact and symmetry "
                        "breaking; random_pad, random_init (baselines, not exact)")
    w.add_argument("-o", "--output", help="where to torch.save the grown GraphModule")
    w.add_argument("--draw", metavar="HTML", help="also draw the graph with old -> new sizes")
    w.set_defaults(func=_widen)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from fxgrow.errors import FxGrowError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FxGrowError as e:
        print(f"fxgrow: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
