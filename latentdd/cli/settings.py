"""The command line's settings flags, generated from the config registry (`latentdd.configs`).

Every key of every section a command reads is a flag `--SECTION.KEY VALUE` (`--evaluator.epochs 300`,
`--latent.fit.max_steps 3000`, `--decoder.prior.lr 1e-3`); a section's free-form mapping takes any name
(`--distill.params.lr 0.5`). The short flags users type (`--epochs`, `--ipc`, `--dataset`, ...) are entries of
one table, `ALIASES`, each naming the key it sets; `--set`, `--param` and `--prior-set KEY=VALUE` are aliases of
`--latent.fit.KEY`, `--distill.params.KEY` and `--decoder.prior.KEY`.

A flag only records what was typed (`args.settings`: (flag, key, text, hint) in order, dotted flags last, so
they win over a short alias of the same key); `resolve` reads the values as YAML (text for a string key),
refuses an unknown key naming the closest known one, and the config machinery (`latentdd.config.build`)
coerces and checks each value as it does a config file's, so that the messages are the config's. Layering:
dataclass defaults < YAML file (--config) < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

from latentdd.config import bare_type, check_key, did_you_mean, safe_yaml, type_text
from latentdd.configs import CONFIG_SECTIONS, config_class
from latentdd.errors import DataError

# The commands that read a section, for aliases that only some of them take.
_WITH_VAE = ("fit-prior", "encode", "distill", "render", "run", "compare")  # all latent readers but fit-vae
_SAMPLING = ("distill", "render", "run", "compare")  # all decoder readers but fit-prior


@dataclass(frozen=True)
class Alias:
    """A short flag that sets one key: `flag` -> `key` in the commands that read the key's section (or only in
    `commands`). hint: None (a value, read as the key's type), "list" (comma-separated names, e.g. `example`),
    "true" / "false" (a switch setting the key to that), "bool" (`--flag` / `--no-flag`). help: a str, or a
    callable giving it (for help that names a registry); None: the key's type and default."""

    flag: str
    key: str
    help: Any = None
    hint: str | None = None
    commands: tuple[str, ...] = ()
    metavar: str | None = None
    example: str = ""


def _protocol_help(command: str) -> str:
    from latentdd.evaluate.protocols import PROTOCOLS, describe

    return "the evaluation protocol (default dsa): " + "; ".join(map(describe, PROTOCOLS))


def _models_help(what: str) -> typing.Callable[[], str]:
    def text(command: str) -> str:
        from latentdd.nn.convnet import MODELS

        return f"{what}: {', '.join(MODELS)}"
    return text


def _norm_metavar(command: str) -> str:
    from latentdd.nn.convnet import CONVNET_NORMS

    return "{" + ",".join(CONVNET_NORMS) + "}"


def _by_decoder(key: str) -> str:
    from latentdd.render import DECODERS, decoder_defaults

    return ", ".join(f"{name} {d[key]:g}" for name in DECODERS if key in (d := decoder_defaults(name)))


def _decoder_help(command: str) -> str:
    from latentdd.render import DECODERS

    return (f"{', '.join(DECODERS)} (default vae). vae: decode latents directly; diffusion: img2img with the fitted "
            "prior first; dit / sd-img2img: img2img with a pretrained DiT / Stable Diffusion (--prior)")


def _distill_method_help(command: str) -> str:
    from latentdd.config import DistillConfig
    from latentdd.distill import DISTILLERS

    return f"distiller (default {DistillConfig.method}): {', '.join(DISTILLERS)}"


def _run_default(command: str, key: str) -> list:
    from latentdd.cli.sections import COMPARE_DEFAULTS
    from latentdd.pipelines.run_config import RunConfig

    return (COMPARE_DEFAULTS if command == "compare" else {}).get(key, getattr(RunConfig(), key))


def _methods_help(command: str) -> str:
    from latentdd.distill import DISTILLERS

    return (f"comma-separated distillers (default {','.join(_run_default(command, 'methods'))}), each with its "
            "default preset (see --preset of `latentdd distill`; a config's run.methods entry may name another): "
            f"{', '.join(DISTILLERS)}")


def _ipcs_help(command: str) -> str:
    return f"comma-separated IPCs (default {','.join(map(str, _run_default(command, 'ipcs')))})"


def _students_help(command: str) -> str:
    from latentdd.pipelines.cross_arch import STUDENT_PRESETS

    return ("also evaluate every set and random-real subset on these students and write cross_arch.md / .json "
            f"(presets: {', '.join(STUDENT_PRESETS)}; mappings of evaluator settings in the config's run.students)")


def _teacher_preset_help(command: str) -> str:
    from latentdd.evaluate.teacher import DEFAULT_TEACHER_PRESET, TEACHER_PRESETS

    def one(name: str, p: dict) -> str:
        augment = ", ".join(([f"crop {p['crop_scale'][0]}-{p['crop_scale'][1]}"] if p["crop_scale"] else []) +
                            (["flip"] if p["hflip"] else [])) or "no augmentation"
        return f"{name}: {p['model']} width {p['width']}, {p['epochs']} epochs, {augment}"

    return (f"the fitted teacher's recipe, each --width/--epochs/... given overriding one setting (default "
            f"{DEFAULT_TEACHER_PRESET}): " + "; ".join(one(n, p) for n, p in TEACHER_PRESETS.items()))


def _preset_help(command: str) -> str:
    from latentdd.presets import all_preset_names, presets

    measured = "; ".join(f"{method} at IPC {', '.join(map(str, preset['ipc']))}"
                         for method, named in presets().items() for preset in named.values())
    return (f"{', '.join(all_preset_names())}: where a method's parameters start, --param merging over them. "
            f"default (the default): the settings latentdd's measured rows use ({measured}; latentdd/presets.yaml "
            "says how each was chosen), else the reference; reference: the method's public code")


# The short flags: for each command, the first entry of a flag whose section the command reads (and that lists
# the command, if it lists any) makes the flag.
ALIASES: tuple[Alias, ...] = (
    # dataset
    Alias("--dataset", "dataset.name", "registered dataset name (see `latentdd datasets`)"),
    Alias("--root", "dataset.root", "folder holding the dataset (default: the standard places)"),
    Alias("--image-size", "dataset.image_size", "resize/pad images to this size"),
    Alias("--channels", "dataset.channels", "convert images to 1 or 3 channels"),
    Alias("--resize", "dataset.resize", "how to reach --image-size (default {default})"),
    Alias("--download", "dataset.download", "let torchvision download cifar10/cifar100/svhn", hint="true"),
    Alias("--validation", "dataset.validation", "hold this fraction of each class of train out as the val split "
          "(e.g. 0.1; default {default})"),
    # evaluator (evaluate, run, compare); fit-teacher's like-named flags set the teacher's
    Alias("--protocol", "evaluator.protocol", _protocol_help),
    Alias("--model", "evaluator.model", _models_help("student architecture (default convnet)")),
    Alias("--model", "teacher.model", _models_help("architecture (default: the preset's, convnet)"),
          commands=("fit-teacher",)),
    Alias("--depth", "evaluator.depth", "ConvNet depth (default by image size)"),
    Alias("--depth", "teacher.depth", "ConvNet depth (default by image size)", commands=("fit-teacher",)),
    Alias("--width", "evaluator.width", "channels of the first stage (default: the model's)"),
    Alias("--width", "teacher.width", "first-stage channels (default: the preset's)", commands=("fit-teacher",)),
    Alias("--norm", "evaluator.norm", "default: the model's (instancenorm)", metavar=_norm_metavar),
    Alias("--norm", "teacher.norm", "default: the model's", commands=("fit-teacher",)),
    Alias("--loss", "evaluator.loss", "ce: cross-entropy on the set's labels; teacher_kl: a teacher's soft labels on "
          "every augmented batch, e.g. with --protocol dsa; static_kl: one fixed soft label per image, the set's or "
          "else the teacher's (default: the protocol's)"),
    Alias("--temperature", "evaluator.temperature",
          "teacher_kl, static_kl: the KL's temperature T (default: the protocol's, 4)"),
    Alias("--relabel", "evaluator.relabel",
          "teacher_kl: K > 0 labels K epochs of augmented views once (cached) and every training replays them, with "
          "no teacher at training time (FKD); 0 (default): the teacher labels every batch"),
    Alias("--epochs", "evaluator.epochs", "training epochs (default: the protocol's)"),
    Alias("--epochs", "teacher.epochs", "epochs over the train split (default: the preset's)",
          commands=("fit-teacher",)),
    Alias("--lr", "evaluator.lr", "learning rate (default: the protocol's)"),
    Alias("--lr", "teacher.lr", "learning rate (default: the preset's)", commands=("fit-teacher",)),
    Alias("--batch-size", "evaluator.batch_size", "batch size (default: the protocol's)"),
    Alias("--batch-size", "teacher.batch_size", "batch size (default: the preset's)", commands=("fit-teacher",)),
    Alias("--num-eval", "evaluator.num_eval", "independent training runs (mean ± std)"),
    Alias("--dsa", "evaluator.dsa", "DSA augmentation while training", hint="bool"),
    Alias("--use-weights", "evaluator.use_weights", "weight each image's loss by the set's per-sample weights",
          hint="true"),
    Alias("--use-soft-labels", "evaluator.use_soft_labels", "train on the set's soft labels", hint="true"),
    Alias("--compile", "evaluator.compile",
          "torch.compile the training step (auto: fall back to eager if it fails)"),
    Alias("--compile", "calibrate.evaluator.compile", "torch.compile the training step (auto: fall back to eager "
          "if it fails)", metavar="{auto,on,off}"),
    Alias("--full-data-epochs", "calibrate.full_data_epochs", "epochs on the whole train split (0 skips; default {default})"),
    # the jobs' own sections: their method, IPC and seed
    Alias("--method", "baseline.method", "baseline selection (default {default})"),
    Alias("--method", "distill.method", _distill_method_help, metavar="METHOD"),
    Alias("--preset", "distill.preset", _preset_help, metavar="PRESET"),
    Alias("--ipc", "baseline.ipc", "images per class"),
    Alias("--ipc", "distill.ipc", "images per class"),
    Alias("--ipc", "run.ipcs", _ipcs_help, hint="list", example="1,10"),
    Alias("--seed", "baseline.seed", "selection seed (default {default})"),
    Alias("--seed", "distill.seed", "distillation seed (default {default})"),
    Alias("--seed", "evaluator.seed", "run i uses seed + i"),
    Alias("--seed", "teacher.seed", "initialisation and shuffling seed (default {default})", commands=("fit-teacher",)),
    Alias("--latents", "distill.latents", "distil the latent cache `latentdd encode --out DIR` wrote (its train "
          "split, encoded with the --vae given here) instead of encoding", metavar="DIR"),
    # teacher (protocols soft and static, teacher-aware methods)
    Alias("--teacher", "teacher.source", "fit: train one on the train split with the `teacher:` settings (cached); "
          "DIR: a folder `latentdd fit-teacher` wrote; torchvision:resnet18: ImageNet weights (default: fit)",
          commands=("evaluate",), metavar="fit|DIR|torchvision:resnet18"),
    Alias("--teacher-preset", "teacher.preset", _teacher_preset_help),
    Alias("--teacher-class-map", "teacher.class_map", "pretrained teacher: the ImageNet index of each dataset class",
          hint="list", commands=("evaluate",), metavar="I,J,...", example="1,2,3"),
    Alias("--teacher-imagenet-classes", "teacher.imagenet_classes", "pretrained teacher, classes named by WordNet "
          "id: an ImageNet class list (LOC_synset_mapping.txt)", commands=("evaluate",), metavar="FILE"),
    Alias("--teacher-input-size", "teacher.input_size", "pretrained teacher: resize images to this side first, e.g. "
          "224 (default: the dataset's size)", commands=("evaluate",)),
    Alias("--teacher-cache-dir", "teacher.cache_dir", "where fitted teachers are cached (default: the teacher: "
          "section's cache_dir, ~/.cache/latentdd)", commands=("evaluate", "distill", "run", "compare")),
    Alias("--cache-dir", "teacher.cache_dir", "cache root (default {default})", commands=("fit-teacher",)),
    # latent space
    Alias("--vae", "latent.vae", "fit | pixel (the identity space) | taesd:PATH | DIR (diffusers or TAESD weights) "
          "| ORG/NAME hub id (default {default})", commands=_WITH_VAE),
    Alias("--vae-input-size", "latent.input_size", "image side fed to the VAE", commands=_WITH_VAE),
    Alias("--vae-resize", "latent.resize", "how dataset images reach the VAE's input size", commands=_WITH_VAE),
    Alias("--cache-dir", "latent.cache_dir", "fitted VAEs and latent caches (default {default})"),
    Alias("--shard-size", "latent.shard_size", "images per latent-cache shard (default {default})"),
    Alias("--encode-batch-size", "latent.batch_size", "images per encoder call (default {default})"),
    Alias("--encode-workers", "latent.workers", "processes decoding image files while the VAE encodes (default {default}, "
          "decoding in the encoding process)"),
    # decoder
    Alias("--decoder", "decoder.name", _decoder_help, commands=_SAMPLING),
    Alias("--prior", "decoder.prior", "dit / sd-img2img: the pretrained model, a hub id or a downloaded folder; "
          "encode with its VAE (--vae DIR/vae). Unset: facebook/DiT-XL-2-256 or "
          "stable-diffusion-v1-5/stable-diffusion-v1-5", commands=_SAMPLING, metavar="HUB_ID|DIR"),
    Alias("--class-map", "decoder.class_map", "dit: the ImageNet class index of each dataset class, comma-separated",
          hint="list", commands=_SAMPLING, metavar="I,J,...", example="1,2,3"),
    Alias("--imagenet-classes", "decoder.imagenet_classes", "dit: an ImageNet class list (e.g. "
          "LOC_synset_mapping.txt), for classes named by WordNet id", commands=_SAMPLING, metavar="FILE"),
    Alias("--prompt", "decoder.prompt", "sd-img2img: a class's prompt, {} standing for the class name (unset: the "
          "class name)", commands=_SAMPLING, metavar="TEXT"),
    Alias("--strength", "decoder.strength", lambda _: "img2img decoders: share of the steps run from the latent, 0..1; "
          f"0 = vae (default: the decoder's, {_by_decoder('strength')})", commands=_SAMPLING),
    Alias("--steps", "decoder.num_inference_steps", lambda _: "img2img decoders: inference steps (default: the "
          f"decoder's, {_by_decoder('num_inference_steps')})", commands=_SAMPLING),
    Alias("--guidance-scale", "decoder.guidance_scale", lambda _: "img2img decoders: classifier-free guidance; 1 = none "
          f"(default: the decoder's, {_by_decoder('guidance_scale')})", commands=_SAMPLING),
    Alias("--eta", "decoder.eta", lambda _: f"img2img decoders: DDIM eta (default: the decoder's, {_by_decoder('eta')})",
          commands=_SAMPLING),
    Alias("--decode-batch-size", "decoder.batch_size", lambda _: "latents per decoder call (default: the decoder's, "
          f"{_by_decoder('batch_size')})", commands=_SAMPLING),
    # run / compare
    Alias("--methods", "run.methods", _methods_help, hint="list", example="dm,kmeans"),
    Alias("--eval-split", "run.eval_split", "evaluate on the test split (default) or the val split (needs "
          "--validation)"),
    Alias("--latents-from", "run.latents_from", "an earlier run's folder: render its synthetic latents where method, "
          "parameters, IPC, seed and VAE match, instead of distilling again (e.g. another --decoder)", metavar="DIR"),
    Alias("--latents", "run.latents_dir", "the train latent cache `latentdd encode --out DIR` wrote (its train "
          "split, encoded with the --vae given here), read instead of encoding", metavar="DIR"),
    Alias("--consistency", "run.consistency", "also report each set's class consistency (the share of its images a "
          "ConvNet trained on the real train split calls their class)", hint="true"),
    Alias("--students", "run.students", _students_help, hint="list", metavar="A,B,...",
          example="resnet18,convnet-bn"),
    Alias("--no-random-real", "run.random_real", "skip the random-real subsets (run.random_real: false)",
          hint="false"),
    Alias("--random-real-part", "run.random_real_part", "evaluate only random-real subset K (0-based; seed run.seed "
          "+ K) and no distilled set: one part of a run split across processes, gathered by the whole run's "
          "--reports-from", metavar="K"),
)

# KEY=VALUE flags: each sets keys of one mapping (`--set max_steps=3000` is `--latent.fit.max_steps 3000`).
KEY_VALUE_FLAGS = {
    "--set": ("latent.fit", "a setting of the VAE that --vae fit trains", "max_steps=3000"),
    "--param": ("distill.params", "a distiller parameter, merged over the preset's", "iterations=1000"),
    "--prior-set": ("decoder.prior", "a setting of the fitted diffusion prior (--decoder diffusion)", "max_steps=3000"),
}


def command_sections(command: str, sections: dict[str, tuple[str, ...]]) -> list[str]:
    """The registered sections `command` reads, each followed by its nested ones (`latent`, `latent.fit`)."""
    out = []
    for section in sections[command]:
        if section in CONFIG_SECTIONS:
            out += [section, *(name for name in CONFIG_SECTIONS if name.startswith(section + "."))]
    return out


@functools.lru_cache(maxsize=None)
def _section_keys(section: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """({dotted key: annotation}, free-form mappings) of one registered section: each field is a key, except a
    plain `dict` field, which takes keys of its own (those of its registered section, else any)."""
    cls = config_class(section)
    hints = typing.get_type_hints(cls, include_extras=True)
    keys, free = {}, []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        key, tp = f"{section}.{f.name}", hints[f.name]
        if tp is dict:
            if key not in CONFIG_SECTIONS:
                free.append(key)
            continue
        keys[key] = tp
    return keys, tuple(free)


def settable(command: str, sections: dict[str, tuple[str, ...]]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Every key `command` takes as `--KEY VALUE`, with its annotation, and the mappings that take any key."""
    keys, free = {}, ()
    for section in command_sections(command, sections):
        more, more_free = _section_keys(section)
        keys |= more
        free += more_free
    return keys, free


class _Setting(argparse.Action):
    """Records (flag, key, value, hint, example) in `namespace.settings`; `resolve` reads them."""

    def __init__(self, option_strings, dest, key: str = "", hint: str | None = None, example: str = "", **kwargs):
        self.key, self.hint, self.example = key, hint, example
        super().__init__(option_strings, dest, nargs=0 if hint in ("true", "false", "bool") else None, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.hint in ("true", "false"):
            values = self.hint == "true"
        elif self.hint == "bool":
            values = not option_string.startswith("--no-")
        namespace.settings = [*(getattr(namespace, "settings", None) or []),
                              (option_string, self.key, values, self.hint, self.example)]


def _metavar(tp: Any) -> str | None:
    """{a,b,c} for a choice (argparse's way), None otherwise."""
    options = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, types.UnionType) else [tp]
    if len(options) == 1 and typing.get_origin(options[0]) is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(options[0])) + "}"
    return None


def add_settings(parser: argparse.ArgumentParser, command: str, sections: dict[str, tuple[str, ...]]) -> None:
    """The short flags of `command` (from `ALIASES`), its KEY=VALUE flags, a summary of its `--SECTION.KEY` flags
    and `--help-config`."""
    keys, free = settable(command, sections)
    groups: dict[str, argparse._ArgumentGroup] = {}
    made = set()
    for alias in ALIASES:
        section = alias.key.rsplit(".", 1)[0]
        takes = alias.key in keys or section in free
        if alias.flag in made or not takes or (alias.commands and command not in alias.commands):
            continue
        made.add(alias.flag)
        top = section.split(".")[0]
        group = groups.get(top) or groups.setdefault(top, parser.add_argument_group(_GROUP_TITLES.get(top, top)))
        help_text = alias.help(command) if callable(alias.help) else alias.help
        tp = keys.get(alias.key)
        if help_text is None:
            help_text = type_text(tp)
        if "{default}" in help_text:
            default = key_default(alias.key)
            help_text = help_text.replace("{default}", f"{default:g}" if isinstance(default, float) else f"{default}")
        metavar = alias.metavar(command) if callable(alias.metavar) else alias.metavar
        options = [alias.flag, "--no-" + alias.flag[2:]] if alias.hint == "bool" else [alias.flag]
        group.add_argument(*options, dest="settings", action=_Setting, key=alias.key, hint=alias.hint,
                           example=alias.example, default=None,
                           metavar=None if alias.hint in ("true", "false", "bool") else (metavar or _metavar(tp)
                                                                                          or _upper(alias.flag)),
                           help=f"{help_text} [{alias.key}]")
    for flag, (mapping, about, example) in KEY_VALUE_FLAGS.items():
        if mapping in free or any(key.startswith(mapping + ".") for key in keys):
            group = groups.get(mapping.split(".")[0]) or parser
            key, value = example.split("=", 1)
            group.add_argument(flag, dest="settings", action=_Setting, key=mapping, hint="kv", default=None,
                               metavar="KEY=VALUE", help=f"{about}: {flag} KEY=VALUE is --{mapping}.KEY VALUE, e.g. "
                                                         f"{flag} {example} (--{mapping}.{key} {value})")
    names = command_sections(command, sections)
    if names:
        g = parser.add_argument_group("settings", textwrap.fill(
            f"Every key of the sections {', '.join(names)} is a flag --SECTION.KEY VALUE (e.g. "
            f"--{next(iter(keys))} VALUE); values are read as YAML and checked as a config file's, and override "
            "--config and the short flags above. --help-config lists the keys, their types and defaults "
            "(docs/config.md says what each does).", 96))
        g.add_argument("--help-config", action=_HelpConfig, nargs=0, command=command, sections=sections,
                       help="list every --SECTION.KEY flag of this command and exit")


_GROUP_TITLES = {"latent": "latent space", "teacher": "teacher (protocols soft and static, teacher-aware methods)"}


def key_default(key: str) -> Any:
    """The default of dotted `key` (`latent.shard_size` -> 4096): its field's in the registered section's class."""
    section, name = key.rsplit(".", 1)
    f = next(f for f in dataclasses.fields(config_class(section)) if f.name == name)
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def _upper(flag: str) -> str:
    return flag.lstrip("-").upper().replace("-", "_")


class _HelpConfig(argparse.Action):
    def __init__(self, option_strings, dest, command: str = "", sections=None, **kwargs):
        self.command, self.sections = command, sections
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(config_help(self.command, self.sections))
        parser.exit()


def config_help(command: str, sections: dict[str, tuple[str, ...]]) -> str:
    """Every `--SECTION.KEY` flag of `command` with its type and default, by section."""
    lines = [f"settings of `latentdd {command}` (--SECTION.KEY VALUE; docs/config.md says what each does)"]
    for section in command_sections(command, sections):
        keys, free = _section_keys(section)
        lines += ["", f"{section}:"]
        for key, tp in keys.items():
            lines.append(f"  --{key} {type_text(tp)}  (default {key_default(key)!r})")
        lines += [f"  --{key}.NAME VALUE  (any name)" for key in free]
    return "\n".join(lines)


def extract_dotted(arg_strings: list[str]) -> tuple[list[str], list[tuple]]:
    """`arg_strings` without its `--SECTION.KEY VALUE` (or `--SECTION.KEY=VALUE`) flags, and those as settings."""
    rest, settings, i = [], [], 0
    while i < len(arg_strings):
        arg = arg_strings[i]
        if arg == "--":
            rest += arg_strings[i:]
            break
        name, eq, value = arg.partition("=")
        if name.startswith("--") and "." in name and name[2:3].isalpha():
            if not eq:  # the next argument, unless it is a flag (a negative number is a value)
                value = arg_strings[i + 1] if i + 1 < len(arg_strings) else None
                if value is not None and value.startswith("--"):
                    value = None
                else:
                    i += 1
            settings.append((name, name[2:].replace("-", "_"), value, "dotted", ""))
        else:
            rest.append(arg)
        i += 1
    return rest, settings


def resolve(args: argparse.Namespace, sections: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """{dotted key: value} of the settings flags in `args` (later flags winning); DataError for an unknown key, a
    flag without a value or a value that is not YAML. Cached on `args`."""
    cached = getattr(args, "_resolved", None)
    if cached is not None:
        return cached
    keys, free = settable(args.command, sections)
    out: dict[str, Any] = {}
    for flag, key, value, hint, example in getattr(args, "settings", None) or []:
        if hint == "kv":
            sub, value = _key_value(value, flag)
            key = f"{key}.{sub}"
            if key.rsplit(".", 1)[0] in CONFIG_SECTIONS:  # the section's message, as in a config file
                check_key(sub, [k.rsplit(".", 1)[1] for k in _section_keys(key.rsplit(".", 1)[0])[0]],
                          key.rsplit(".", 1)[0])
            out[key] = value
            continue
        if key not in keys and key.rsplit(".", 1)[0] not in free:
            _unknown(flag, key, keys, free, args.command, sections)
        if value is None:
            raise DataError(f"{flag} needs a value, e.g. {flag} VALUE")
        if hint == "list":
            value = _names(value, flag, example)
        elif hint in ("dotted", None):
            value = _read(keys.get(key), value, flag)
        out[key] = value
    args._resolved = out
    return out


def _unknown(flag, key, keys, free, command, sections) -> None:
    section = key.rsplit(".", 1)[0]
    names = command_sections(command, sections)
    known = [k for k in keys if k.rsplit(".", 1)[0] == section]
    hint = did_you_mean("--" + key, ["--" + k for k in [*keys, *(f + ".NAME" for f in free)]])
    if key in free:
        raise DataError(f"{flag} needs a key: --{key}.NAME VALUE")
    if key in CONFIG_SECTIONS:
        raise DataError(f"{flag} is a section; set its keys: --{key}.KEY VALUE (see --help-config)")
    if known:
        raise DataError(f"unknown flag {flag}: {section} has no key {key.rsplit('.', 1)[1]!r}; its keys: "
                        f"{', '.join(k.rsplit('.', 1)[1] for k in known)}{hint}")
    raise DataError(f"unknown flag {flag}: `latentdd {command}` reads "
                    f"{'the sections ' + ', '.join(names) if names else 'no config section'}{hint}")


def _takes_only_text(tp: Any) -> bool:
    options = typing.get_args(bare_type(tp)) or (bare_type(tp),)
    return all(o in (str, type(None)) for o in options)


def _read(tp: Any, text: str, flag: str) -> Any:
    """`text` as a YAML value (kept as text for a key that takes only text, or that takes text but not the
    YAML's type, such as a folder named 2024)."""
    import yaml

    if tp is not None and _takes_only_text(tp):
        return text
    try:
        value = safe_yaml(text)
    except yaml.YAMLError as err:
        raise DataError(f"{flag} {text!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None
    if tp is not None and value is not None and not isinstance(value, str):
        options = typing.get_args(bare_type(tp)) or (bare_type(tp),)
        if str in options and not any(isinstance(value, o) for o in options if isinstance(o, type)
                                      and (o is not int or not isinstance(value, bool))):
            return text
    return value


def _key_value(pair: str, flag: str) -> tuple[str, Any]:
    """"a=1" -> ("a", 1) (the value read as YAML; its consumer coerces its type)."""
    import yaml

    key, sep, value = pair.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key or not value.strip():
        raise DataError(f"{flag} expects KEY=VALUE (e.g. {flag} max_steps=3000); got {pair!r}")
    try:
        return key, safe_yaml(value)
    except yaml.YAMLError as err:
        raise DataError(f"{flag} {pair!r}: the value is not valid YAML ({str(err).splitlines()[0]})") from None


def _names(value: str, flag: str, example: str) -> list[str]:
    """A comma-separated flag's names; DataError when it names none (e.g. `--students ,`), which would
    otherwise silently mean an empty list."""
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise DataError(f"{flag} {value!r} names nothing; give comma-separated names, e.g. {flag} {example}")
    return names


def flags(args: argparse.Namespace, section: str, sections: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The flags' keys of `section` (its own, not its nested sections'): {key: value}."""
    prefix = section + "."
    return {key[len(prefix):]: value for key, value in resolve(args, sections).items()
            if key.startswith(prefix) and "." not in key[len(prefix):]}


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: takes the `--SECTION.KEY VALUE` flags out before argparse reads the rest."""

    def parse_known_args(self, args=None, namespace=None):
        rest, dotted = extract_dotted(list(args) if args is not None else [])
        namespace, extras = super().parse_known_args(rest, namespace)
        namespace.settings = [*(getattr(namespace, "settings", None) or []), *dotted]
        return namespace, extras
