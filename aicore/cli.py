"""Command line: ``python main.py -c CONFIG.json [-o key.path=VALUE ...]``.

Start-up order matters for "nothing is damaged by a bad input": registries are filled (tasks,
custom_modules/, custom_imports), the config is loaded and validated in full, and only then does
the chosen mode build anything or write to work_dir.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from loguru import logger

from aicore.errors import AICoreError, ComponentError, ConfigError

def import_custom_modules(extra: list[str] | None = None, folder: Path | None = None) -> list[str]:
    """Import every module in custom_modules/ (next to the working directory) and the
    config's custom_imports (dotted module names or .py / folder paths)."""
    imported = []
    folder = folder or Path.cwd() / "custom_modules"
    targets: list[str] = []
    if folder.is_dir():
        targets += [str(p) for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")]
    for item in extra or []:
        p = Path(item)
        if p.is_dir():
            targets += [str(q) for q in sorted(p.glob("*.py")) if not q.name.startswith("_")]
        else:
            targets.append(item)
    for target in targets:
        try:
            if target.endswith(".py"):
                path = Path(target)
                if not path.is_file():
                    raise ConfigError(f"custom_imports: file not found: {target}")
                name = f"aicore_custom_{path.stem}"
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(target)
        except AICoreError:
            raise
        except ModuleNotFoundError as e:
            raise ConfigError(f"custom_imports: cannot import {target!r}: {e}") from None
        except Exception as e:
            raise ConfigError(f"custom module {target} failed to import: "
                              f"{type(e).__name__}: {e}") from e
        imported.append(target)
    return imported


def list_components(kind: str, pattern: str) -> int:
    from aicore.registry import ALL
    from aicore.tasks import import_tasks
    import_tasks()
    import_custom_modules()
    kind = kind.lower()
    if kind not in ALL:
        print(f"unknown registry '{kind}'; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    registry = ALL[kind]
    names = [n for n in registry.list(pattern) if n in registry._entries]
    for n in names:
        print(f"{n:40s} {registry.origin(n)}")
    extra: list[str] = []
    if kind == "models":
        import timm
        extra = timm.list_models(pattern)
        if extra:
            print(f"\ntimm models matching '{pattern}' (use {{\"type\": \"TimmClassifier\", "
                  f"\"name\": NAME}}):")
    elif kind == "transforms":
        extra = [n for n in registry.list(pattern) if n not in registry._entries]
        if extra:
            print(f"\nalbumentations transforms matching '{pattern}':")
    for n in extra:
        print(f"  {n}")
    if not names and not extra:
        print(f"no {kind} match '{pattern}'", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py", description="AICore: train, evaluate, demo and export vision models "
                                    "from one JSON config.")
    p.add_argument("-c", "--config", help="config file (JSON)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value; VALUE is parsed as JSON, else taken as text")
    p.add_argument("--list", nargs="+", metavar=("REGISTRY", "PATTERN"),
                   help="list registered components, e.g. --list models '*resnet*'")
    p.add_argument("--check", action="store_true",
                   help="load and validate the config, print it, and exit")
    p.add_argument("--schema", nargs="?", const="-", metavar="FILE",
                   help="write the JSON Schema of the config (to FILE, default stdout) and exit")
    p.add_argument("--debug", action="store_true",
                   help="print the traceback behind an error")
    return p


def run(config: str, overrides: list[str], check_only: bool = False):
    from aicore import gc_policy
    with gc_policy.startup():  # imports and validation: no collector passes over them
        from aicore import config as C
        from aicore.engine import dist
        from aicore.engine.logging import setup_console
        from aicore.engine.runners import run_demo, run_eval, run_export
        from aicore.tasks import import_tasks
        from aicore.tasks.spec import trainer_class

        setup_console()
        cfg = C.load_config(config, overrides)
        import_tasks([cfg.task] if isinstance(cfg.task, str) else None)  # only the task in use
        C.check_custom_imports(cfg)
        import_custom_modules(list(cfg.custom_imports or []))
        C.validate(cfg)
    if check_only:
        import json
        print(json.dumps(C.to_dict(cfg), indent=2))
        return None
    trainer_cls = trainer_class(cfg)  # train.trainer, else the registered task's

    def run_mode(trainer):
        if trainer.cfg.mode == "trainval":
            return trainer.train()
        if trainer.cfg.mode == "eval":
            return run_eval(trainer)
        if trainer.cfg.mode == "demo":
            return run_demo(trainer)
        return run_export(trainer)

    try:
        # One config may stand for several independent runs (anomaly: one model per product
        # category), each with its own work_dir; the trainer class then summarises them.
        subs = trainer_cls.sub_runs(cfg, cfg.mode)
        if not subs:
            return run_mode(trainer_cls(cfg))
        results = {name: run_mode(trainer_cls(sub)) for name, sub in subs}
        trainer_cls.summarize_runs(cfg, cfg.mode, results)
        return results
    finally:
        dist.cleanup()


def write_schema(target: str) -> int:
    """--schema: the config's JSON Schema from the defaults and every registered component."""
    import json
    from aicore.config_schema import build_schema
    from aicore.tasks import import_tasks
    import_tasks()
    import_custom_modules()
    text = json.dumps(build_schema(), indent=2) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        try:
            Path(target).write_text(text, encoding="utf-8")
        except OSError as e:
            print(f"error: --schema {target}: cannot write: {e.strerror or e}", file=sys.stderr)
            return 2
    return 0


def entry() -> None:
    """main() as the whole process (main.py, the app's jobs): with the command-process GC
    policy of aicore/gc_policy.py."""
    from aicore.gc_policy import command_process
    with command_process():
        main()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.schema:
        sys.exit(write_schema(args.schema))
    if args.list:
        pattern = args.list[1] if len(args.list) > 1 else "*"
        sys.exit(list_components(args.list[0], pattern))
    if not args.config:
        build_parser().print_usage(sys.stderr)
        print("main.py: error: -c CONFIG is required (or --list REGISTRY [PATTERN])",
              file=sys.stderr)
        sys.exit(2)
    try:
        run(args.config, args.override, args.check)
    except AICoreError as e:
        logger.remove()
        if args.debug and (e.__cause__ is not None or isinstance(e, ComponentError)):
            import traceback
            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        # a folder that cannot be written or a full disk met where no step checked it first
        import errno
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                           errno.ENOTDIR, errno.EISDIR):
            raise
        from aicore.engine.checkpoint import describe_os_error
        logger.remove()
        print(f"error: cannot write {e.filename or 'a file'}: {describe_os_error(e)}",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
