"""latentdd: dataset distillation in a generative latent space.

The Python API (`latentdd.api`), one function a stage, each returning a typed artifact:

    space = latentdd.encode(latentdd.DataConfig(name="digits"), latentdd.LatentSpaceConfig(vae="pixel"))
    synthetic = latentdd.distill(space, "kmeans", ipc=1)
    images = latentdd.render(synthetic, space)
    report = latentdd.evaluate(images, space, protocol="dc", epochs=20, num_eval=1)
    rows = latentdd.run("configs/quickstart.yaml")   # the main job, as `latentdd run --config`

Names are loaded on first use, so `import latentdd` stays light.
"""

from __future__ import annotations

import importlib
import types

__version__ = "0.1.0"

# Attribute -> the module that defines it.
_EXPORTS = {
    "encode": "latentdd.api", "run": "latentdd.api",
    "DataConfig": "latentdd.config", "EvalConfig": "latentdd.evaluate.trainer",
    "LatentSpaceConfig": "latentdd.vae.config", "DecoderConfig": "latentdd.render.config",
    "TeacherConfig": "latentdd.evaluate.teacher",
}
# Stages whose subpackage is also the API function of the same name (see _StageModule).
_STAGES = ("distill", "render", "evaluate")

__all__ = sorted([*_EXPORTS, *_STAGES])


class _StageModule(types.ModuleType):
    """A stage's subpackage (latentdd.distill, .render, .evaluate) that is also that stage's API function:
    `latentdd.distill(space, "dm", ipc=10)` calls `latentdd.api.distill`, while `latentdd.distill.make_distiller`
    stays the subpackage's. One name per stage, whichever way a user reaches it."""

    def __call__(self, *args, **kwargs):
        from latentdd import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def __getattr__(name: str):
    if name in _STAGES:
        return importlib.import_module(f"latentdd.{name}")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'latentdd' has no attribute {name!r}")
