"""The ``x3dsearch`` command line: one subcommand per job, user mistakes as one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

from .config import X3DConfig, preset, preset_names
from .cost import cost_breakdown, count_flops, count_params
from .errors import UserError

__all__ = ["main"]

_Handler = Callable[[argparse.Namespace], int]


def _config_from_args(args: argparse.Namespace) -> X3DConfig:
    if getattr(args, "config", None):
        return X3DConfig.from_yaml(args.config)
    return preset(args.preset or "X2D")


def _cmd_flops(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    parts = cost_breakdown(config)
    total_flops, total_params = count_flops(config), count_params(config)
    if args.json:
        print(json.dumps({"config": config.to_dict(), "flops": total_flops, "gflops": total_flops / 1e9,
                          "params": total_params,
                          "parts": {k: {"flops": f, "params": p} for k, (f, p) in parts.items()}},
                         indent=2))
        return 0
    print(f"{config.short}  ({config.frames} frames x stride {config.stride}, {config.crop}x{config.crop}, "
          f"{config.num_classes} classes)")
    print(f"{'part':<6} {'GFLOPs':>10} {'share':>7} {'params':>12}")
    for name, (flops, params) in parts.items():
        print(f"{name:<6} {flops / 1e9:>10.4f} {flops / total_flops:>7.1%} {params:>12,}")
    print(f"{'total':<6} {total_flops / 1e9:>10.4f} {'':>7} {total_params:>12,}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    rows = []
    for name in preset_names():
        c = preset(name)
        rows.append({"preset": name, "frames_x_stride": f"{c.frames}x{c.stride}", "crop": c.crop,
                     "width": c.width, "bottleneck": c.bottleneck, "depth": c.depth,
                     "gflops": round(count_flops(c) / 1e9, 4), "params": count_params(c)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'preset':<7}{'frames x stride':>16}{'crop':>6}{'γw':>6}{'γb':>6}{'γd':>6}{'GFLOPs':>10}{'params':>12}")
    for r in rows:
        print(f"{r['preset']:<7}{r['frames_x_stride']:>16}{r['crop']:>6}{r['width']:>6g}{r['bottleneck']:>6g}"
              f"{r['depth']:>6g}{r['gflops']:>10.3f}{r['params']:>12,}")
    return 0


def _add_model_source(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset", help=f"a named preset: {', '.join(preset_names())} (default X2D)")
    group.add_argument("--config", metavar="FILE", help="an X3D config YAML (e.g. an exported model)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="x3dsearch",
        description="Find the best X3D video network for a compute budget by progressive expansion "
                    "(Feichtenhofer, CVPR 2020).",
        epilog="Run 'x3dsearch COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("flops", help="cost of a preset or config: GFLOPs, params, per-stage breakdown",
                       description="Closed-form multiply-adds (conv + linear, 1 MAC = 1 FLOP) and parameters "
                                   "of one clip at the config's own frames and crop.")
    _add_model_source(p)
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_flops)

    p = sub.add_parser("presets", help="table of the X3D presets (X2D, XS, S, M, L, XL)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(handler=_cmd_presets)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``x3dsearch`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: _Handler = args.handler
    try:
        return handler(args)
    except UserError as err:
        print(f"x3dsearch {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"x3dsearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
