"""The Python API: each stage as a function that returns the typed artifact the CLI would write.

    import latentdd

    data = latentdd.DataConfig(name="digits")
    space = latentdd.encode(data, latentdd.LatentSpaceConfig(vae="pixel"))  # LatentSpace: VAE + train latents
    synthetic = latentdd.distill(space, "kmeans", ipc=1)     # SyntheticLatents (the method's default preset)
    images = latentdd.render(synthetic, space)                # SyntheticImages
    report = latentdd.evaluate(images, space, protocol="dc", epochs=20, num_eval=1)   # EvalReport
    print(report.summary())

`latentdd.distill`, `latentdd.render` and `latentdd.evaluate` are also the subpackages that hold those
stages; calling one calls the function of the same name here (see `latentdd._StageModule`).
The CLI is a skin over the same functions: `latentdd distill` = `encode` + `distill` + `render` + an image
folder, and `latentdd.run(config)` is `latentdd run --config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from latentdd.config import DataConfig, build, check_sections, load_yaml
from latentdd.data.base import SyntheticImages
from latentdd.latents.types import SyntheticLatents
from latentdd.presets import DEFAULT

if TYPE_CHECKING:
    from latentdd.pipelines.tables import Row


def encode(data: DataConfig, space=None, *, latents_dir: str | Path | None = None, progress: bool = False):
    """Load `data`, get the VAE of `space` (a `LatentSpaceConfig`; default: the small VAE fitted to the
    data, cached) and the train split's latents (encoded once, cached by content) -> `LatentSpace`
    (`.latents`, `.vae`, `.train`, `.test`, `.record`). latents_dir: a cache `latentdd encode` wrote."""
    from latentdd.pipelines.distill import LatentSpaceConfig, prepare_latent_space

    return prepare_latent_space(data, space or LatentSpaceConfig(), latents_dir=latents_dir, progress=progress)


def distill(space, method: str, ipc: int, *, seed: int = 0, preset: str = DEFAULT,
            checkpoint_dir: str | Path | None = None, progress: bool = False, **params) -> SyntheticLatents:
    """`ipc` synthetic latents per class of `space` (from `encode`) by the registered distiller `method`.

    Its parameters are `preset`'s at this IPC (`latentdd.presets`: "default", the settings chosen on val, or
    "reference", the public code's) with `params` merged over them; `.extras["preset"]` records both.
    checkpoint_dir: where an iterative method checkpoints and resumes (None: never)."""
    from latentdd.distill import coerce_params
    from latentdd.pipelines.distill import distill_latents
    from latentdd.presets import resolve

    resolved = resolve(method, ipc, preset, coerce_params(method, params))
    synthetic = distill_latents(space, method, ipc, seed, params=resolved.params, checkpoint_dir=checkpoint_dir,
                                progress=progress)
    synthetic.extras["preset"] = resolved.record()
    return synthetic


def render(synthetic: SyntheticLatents, space, decoder=None, *, seed: int = 0,
           progress: bool = False) -> SyntheticImages:
    """`synthetic` latents as images at the dataset's shape. decoder: a `DecoderConfig`, or a decoder name
    (`latentdd.render.DECODERS`: vae, diffusion, ...) with its own defaults; default: VAE decoding."""
    from latentdd.pipelines.distill import DecoderConfig, make_decoder
    from latentdd.render import render_set

    config = decoder if isinstance(decoder, DecoderConfig) else DecoderConfig(name=decoder or "vae")
    renderer, _ = make_decoder(config, space, space.cache_dir, progress=progress)
    return render_set(renderer, synthetic, seed=seed)


def evaluate(images: SyntheticImages | str | Path, data, *, protocol: str = "dsa", teacher=None,
             progress: bool = False, **settings):
    """Train `num_eval` students on `images` (a set, or an image folder) under `protocol`
    (`latentdd.evaluate.PROTOCOLS`) and test each on the real test split -> `EvalReport`.

    data: the `LatentSpace` from `encode`, or a `DataConfig`. settings: `EvalConfig` fields over the
    protocol's (e.g. epochs=300, num_eval=5). teacher: a `TeacherConfig` for the soft protocols (default:
    fitted on the train split, cached)."""
    from latentdd.config import check_key
    from latentdd.data import dataset_info
    from latentdd.evaluate.trainer import PROTOCOLS, EvalConfig, channel_stats, evaluate_synthetic
    from latentdd.export import load_image_folder

    check_key(protocol, PROTOCOLS, "protocol", what="protocol")
    config = build(EvalConfig, PROTOCOLS[protocol] | {"protocol": protocol}, settings, section="evaluator")
    if isinstance(data, DataConfig):
        name, train, test = data.name, data.load("train"), data.load("test")
    else:
        name, train, test = data.record["dataset"]["name"], data.train, data.test
    if not isinstance(images, SyntheticImages):
        images = load_image_folder(images, class_names=list(test.class_names))
    labeller = None
    if config.loss == "teacher_kl" or config.loss == "static_kl" and images.soft_labels is None:
        from latentdd.evaluate.teacher import TeacherConfig, resolve_teacher

        labeller = resolve_teacher(teacher or TeacherConfig(), train, test, progress=progress)
    mean, std = channel_stats(train)
    return evaluate_synthetic(images, test, config, mean=mean, std=std, flip=dataset_info(name).flip_augment,
                              progress=progress, teacher=labeller)


def run(config: str | Path | dict, out: str | Path | None = None, *, progress: bool = True) -> list[Row]:
    """The main job, as `latentdd run --config CONFIG --out OUT`: a YAML file's path or its mapping ->
    the table's rows (`latentdd.pipelines.tables.Row`; also written to OUT/results.md, and to results.json as
    `Row.to_json()`)."""
    from latentdd.cli import SECTIONS, run_setup, teacher_config, make_parser
    from latentdd.pipelines.run import run as run_job

    raw = dict(config) if isinstance(config, dict) else load_yaml(config)
    check_sections(raw, SECTIONS["run"], "run")
    args = make_parser().parse_args(["run", *(["--out", str(out)] if out is not None else [])])
    data, space, decoder, evaluator, settings, folder = run_setup(args, raw, run_defaults={},
                                                                   out_default="runs/{dataset}")
    teacher = teacher_config(args, raw)
    return run_job(data, space, settings, evaluator, folder, decoder=decoder, progress=progress, teacher=teacher)
