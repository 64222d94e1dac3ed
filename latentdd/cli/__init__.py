"""The `latentdd` command: one module per subcommand (`latentdd/cli/<command>.py`: its own flags and body),
the flags of every config key generated from the config registry (`latentdd.cli.settings`), and the sections
built from a YAML file and those flags (`latentdd.cli.sections`).

Settings come from dataclass defaults, then a YAML file (--config), then flags (every config key is one,
`--SECTION.KEY VALUE`; the short flags are aliases); the resolved settings are saved beside every output.
"""

from __future__ import annotations

import argparse
import logging
import sys

from latentdd.cli import (
    baseline,
    calibrate,
    compare,
    datasets,
    distill,
    encode,
    evaluate,
    fit_prior,
    fit_teacher,
    fit_vae,
    render,
    run,
)
from latentdd.cli.run import run_setup
from latentdd.cli.sections import (
    COMPARE_DEFAULTS,
    SECTIONS,
    data_config,
    decoder_config,
    eval_config,
    latent_config,
    teacher_config,
)
from latentdd.cli.settings import CommandParser, add_settings, resolve
from latentdd.config import check_sections, load_yaml
from latentdd.errors import LatentDDError

__all__ = ["COMPARE_DEFAULTS", "SECTIONS", "data_config", "decoder_config", "eval_config", "latent_config", "main",
           "make_parser", "run_setup", "teacher_config"]

# The subcommands in --help's order: name -> module (ABOUT, EXAMPLES, command, and add_arguments when it has flags
# that are not config keys).
COMMANDS = {"datasets": datasets, "baseline": baseline, "evaluate": evaluate, "fit-teacher": fit_teacher,
            "fit-vae": fit_vae, "fit-prior": fit_prior, "encode": encode, "distill": distill, "render": render,
            "run": run, "compare": compare, "calibrate": calibrate}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdd", description="Dataset distillation in latent space.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, module in COMMANDS.items():
        p = sub.add_parser(name, help=module.ABOUT, description=module.ABOUT, epilog=module.EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="YAML file with sections (dataset:, evaluator:, ...); flags override it")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        add_settings(p, name, SECTIONS)
        if hasattr(module, "add_arguments"):
            module.add_arguments(p)
        p.set_defaults(func=module.command)
    return parser


def _version() -> str:
    from latentdd import __version__

    return f"latentdd {__version__}"


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING, format="%(levelname)s %(message)s")
    # torch's C++ builder warns about CUDA on every CPU-only machine; it is not ours to act on.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # faiss logs which CPU build it loaded (four lines) at INFO on import; only its warnings concern a user.
    logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        raw = load_yaml(args.config)
        check_sections(raw, SECTIONS[args.command], args.command)
        resolve(args, SECTIONS)  # every flag's key known and value read, before any work
        return args.func(args, raw)
    except LatentDDError as err:
        print(f"latentdd {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentdd {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
