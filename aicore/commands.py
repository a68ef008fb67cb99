"""The ``aicore`` console command: one sub-command per mode, on top of aicore/cli.py.

    aicore train  -c CONFIG [-o KEY.PATH=VALUE ...]   (mode trainval)
    aicore eval   -c CONFIG [-o ...]                  (mode eval)
    aicore demo   -c CONFIG [-o demo.source=...]      (mode demo)
    aicore export -c CONFIG [-o ...]                  (mode export)
    aicore check  -c CONFIG [-o ...]                  (load, validate, print; nothing is built)
    aicore list   REGISTRY [PATTERN]
    aicore demo-data OUT [--task T]                   (the synthetic data the quickstarts read)
    aicore app [--runs runs] [--data data] [--port 8765]  (the local web app, python -m aicore.app)

CONFIG is a file or the name of a shipped config (``classification/quickstart``; see
``aicore list configs``). Each sub-command is turned into the equivalent ``main.py`` argument
list, so errors, exit codes and output are exactly those of ``python main.py -c``.
"""
from __future__ import annotations

import argparse
import sys

MODES = {"train": "trainval", "eval": "eval", "demo": "demo", "export": "export"}
HELP = {"train": "train a model (mode trainval)",
        "eval": "evaluate a checkpoint on eval.split (mode eval)",
        "demo": "predict on demo.source and write drawn images and predictions.csv",
        "export": "export ONNX / TorchScript with parity checks (mode export)",
        "check": "load and validate the config, print the resolved config, and exit"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aicore", description="AICore: train, evaluate, demo and export vision models from "
                                   "one JSON config. `aicore COMMAND --help` for each command.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in (*MODES, "check"):
        s = sub.add_parser(name, help=HELP[name], description=HELP[name])
        s.add_argument("-c", "--config", required=True,
                       help="config file, or a shipped config name such as "
                            "classification/quickstart (`aicore list configs`)")
        s.add_argument("-o", "--override", action="append", default=[],
                       metavar="KEY.PATH=VALUE",
                       help="override a config value; VALUE is parsed as JSON, else taken as "
                            "text (repeatable)")
    s = sub.add_parser("list", help="list registered components or shipped configs",
                       description="list registered components (models, losses, transforms, "
                                   "...) or the shipped configs, optionally by a glob pattern")
    s.add_argument("registry", help="a registry name (models, losses, ...) or 'configs'")
    s.add_argument("pattern", nargs="?", default="*", help="glob pattern, e.g. '*resnet*'")
    s = sub.add_parser("demo-data", help="write the synthetic data sets the quickstarts read",
                       description="write synthetic data sets to OUT/<task> (the quickstart "
                                   "configs read data/demo/<task>)")
    s.add_argument("out", nargs="?", default="data/demo", help="output folder (data/demo)")
    s.add_argument("--task", default="all",
                   help="all, classification, segmentation, detection or anomaly")
    from aicore.app.__main__ import DESCRIPTION, add_arguments
    s = sub.add_parser("app", help="start the local web app (same as python -m aicore.app)",
                       description=DESCRIPTION)
    add_arguments(s)
    return p


def _list_configs(pattern: str) -> int:
    import fnmatch
    from aicore.shipped import configs_dir, shipped_names
    names = [n for n in shipped_names() if fnmatch.fnmatch(n, pattern)]
    for n in names:
        print(n)
    if not names:
        print(f"no shipped configs match '{pattern}' (in {configs_dir()})", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        sys.exit(2)
    if args.command == "list":
        if args.registry == "configs":
            sys.exit(_list_configs(args.pattern))
        from aicore.cli import list_components
        sys.exit(list_components(args.registry, args.pattern))
    if args.command == "app":
        from aicore.app.__main__ import serve
        serve(args)
        return
    if args.command == "demo-data":
        from aicore.tools.demo_data import main as demo_data
        demo_data([args.out, "--task", args.task])
        return
    from aicore.errors import AICoreError
    from aicore.shipped import resolve_config
    try:
        config = str(resolve_config(args.config))
    except AICoreError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    from aicore.cli import main as cli_main
    forwarded = ["-c", config]
    if args.command == "check":
        forwarded.append("--check")
    else:
        forwarded += ["-o", f"mode={MODES[args.command]}"]
    for text in args.override:
        forwarded += ["-o", text]
    cli_main(forwarded)


def entry() -> None:
    """The console script: main() in a process that exits when it returns."""
    from aicore.gc_policy import command_process
    with command_process():
        main()


if __name__ == "__main__":
    entry()
