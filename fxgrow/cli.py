"""The ``fxgrow`` command line.

``fxgrow demo`` analyses the built-in tiny ResNet, prints its group table,
widens it and prints the equivalence report.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

__all__ = ["main", "build_parser"]


def _demo(args: argparse.Namespace) -> int:
    import fxgrow
    from fxgrow.models import tiny_resnet

    torch.manual_seed(args.seed)
    model = tiny_resnet(width=args.width)
    x = torch.randn(4, 3, 32, 32)
    print(f"== fxgrow demo: a tiny ResNet ({sum(p.numel() for p in model.parameters()):,} "
          "parameters), eval mode\n")
    analysis = fxgrow.analyze(model, x)
    print(analysis, "\n")
    print(f"== widen every growable group x{args.factor} (Net2WiderNet)")
    wide = fxgrow.widen(analysis, x, args.factor, seed=args.seed)
    for gid, (old, new) in wide.meta["fxgrow.plan"].items():
        prods = ", ".join(analysis.group(gid).producers)
        print(f"  group {gid}: {old} -> {new}  ({prods})")
    print(f"  parameters: {sum(p.numel() for p in wide.parameters()):,}")
    print(wide.meta["fxgrow.report"], "\n")
    target = {"layer1.0.conv1": 2 * args.width + 3}
    print(f"== widen one group to an arbitrary size: {target}")
    one = fxgrow.widen(analysis, x, target, seed=args.seed)
    print(one.meta["fxgrow.report"], "\n")
    print("== baselines (not function preserving, shown for comparison)")
    for init in ("random_pad", "random_init"):
        g = fxgrow.widen(analysis, x, args.factor, init=init, seed=args.seed)
        print(f"  {init:<11} max rel error {fxgrow.verify(model, g, x).max_rel:.3g}")
    ok = wide.meta["fxgrow.report"].ok and one.meta["fxgrow.report"].ok
    print("\nfunction preserved:", "yes" if ok else "NO")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxgrow", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="analyse, widen and verify a built-in tiny ResNet")
    d.add_argument("--width", type=int, default=16, help="base width of the demo ResNet")
    d.add_argument("--factor", type=float, default=2.0, help="widening factor")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
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
