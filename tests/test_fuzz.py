"""Property-based tests (hypothesis) of everything latentdd parses: config files and KEY=VALUE flags,
image-folder manifests, checkpoints (latentdd.checkpoint), latent caches, and fitted VAE, prior and
teacher cache entries (issue 32, defect 8).

Each property feeds a reader arbitrary or damaged input. Allowed outcomes: a value that passes
the reader's own checks (and, for a damaged file, equals what was stored: damage is never taken
silently), a repair, or a latentdd error (LatentDDError) with a message. Any other exception
fails the property.

The examples are bounded and reproducible (the profile "latentdd-ci": `derandomize=True`, no
example database, no deadline); each property's count is set beside it, so that the whole file
runs in about half a minute on one core (LATENTDD_FUZZ_SCALE=N runs N times as many, new ones on
each run, for a deeper search by hand). Every base file is small (digits-sized or hand-made
tensors) and written once per module.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentdd.cli import main
from latentdd.config import DataConfig, DistillConfig, build, plain
from latentdd.errors import DataError, LatentDDError

settings.register_profile("latentdd-ci", deadline=None, derandomize=True, database=None, print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pytestmark = pytest.mark.fuzz

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# A deeper search by hand: LATENTDD_FUZZ_SCALE=20 runs 20 times the examples, new ones on every run.
SCALE = int(os.environ.get("LATENTDD_FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    """The CI profile with `max_examples` examples (times SCALE)."""
    return settings(settings.get_profile("latentdd-ci"), max_examples=max_examples * SCALE, derandomize=SCALE == 1)


# ---------------------------------------------------------------- what the examples are made of

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))


def json_values(keys=st.text(max_size=8), leaves=scalars):
    """Nested JSON-like values: lists and mappings (keys drawn from `keys`) of scalars."""
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=4)), max_leaves=10)


def _paths(value, at=()):
    """Every path (tuple of keys and indices) into nested `value`, the root's () excluded."""
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        yield (*at, key)
        yield from _paths(child, (*at, key))


@st.composite
def mutations(draw, base, values=json_values()):
    """A deep copy of `base` with one to three fields replaced by arbitrary values (retyped, changed), deleted,
    or moved under another key."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(value))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = value
        for key in path[:-1]:
            parent = parent[key]
        edit = draw(st.sampled_from(["replace", "delete", "rename"]))
        if edit == "replace":
            parent[path[-1]] = draw(values)
        elif edit == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = parent.pop(path[-1])
    return value


def truncated(data: bytes):
    """`data` cut short at a random length."""
    return st.integers(0, len(data) - 1).map(lambda n: data[:n])


def bit_flipped(data: bytes):
    """`data` with one bit flipped."""
    def flip(at: int, bit: int) -> bytes:
        out = bytearray(data)
        out[at] ^= 1 << bit
        return bytes(out)

    return st.builds(flip, st.integers(0, len(data) - 1), st.integers(0, 7))


def damaged(data: bytes):
    """`data` truncated or with one bit flipped (never `data` itself)."""
    return st.one_of(truncated(data), bit_flipped(data))


@contextlib.contextmanager
def logged_warnings():
    """The warnings latentdd logs inside the block, as a list of messages."""
    messages: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("latentdd")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def same(a, b) -> bool:
    """Equality of nested states holding tensors (dtype and bits), dicts, lists and scalars (type included)."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same, a, b))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------- 1. config files (--config)


class _Reached(Exception):
    """Raised where a command would start its work: every setting was parsed and checked by then."""


def _section_keys() -> list[str]:
    """Every section name and every field name of every section's dataclass, for keys that get past the
    first check."""
    from latentdd.cli import SECTIONS
    from latentdd.evaluate.teacher import TeacherConfig
    from latentdd.evaluate.trainer import EvalConfig
    from latentdd.pipelines.calibrate import CalibrateConfig
    from latentdd.pipelines.run import RunConfig
    from latentdd.prior.fit import FitPriorConfig
    from latentdd.render.config import DecoderConfig
    from latentdd.vae.config import LatentSpaceConfig
    from latentdd.vae.fit import FitVAEConfig

    classes = (DataConfig, LatentSpaceConfig, DecoderConfig, EvalConfig, TeacherConfig, RunConfig, DistillConfig,
               CalibrateConfig, FitVAEConfig, FitPriorConfig)
    names = {s for sections in SECTIONS.values() for s in sections}
    return sorted(names | {f.name for cls in classes for f in dataclasses.fields(cls)})


KEYS = _section_keys()
config_values = json_values(keys=st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
                            leaves=st.one_of(scalars, st.sampled_from(["fit", "pixel", "dsa", "dc", "kmeans", "dm",
                                                                       "1e-3", "-1", "0", "[1, 2]", "digits"])))
# Pieces of YAML syntax, for texts that parse into odd structures: anchors and aliases (recursive ones
# too), merge keys, tags, sets, timestamps, non-finite floats, complex keys, directives.
YAML_PIECES = [*KEYS, ": ", "\n", "  ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "&a [*a]", "<<: *a",
               "!!binary ", "!!set ", "!!str ", "!!int ", "!!float ", "!!python/object:os.system ", "? ", "~",
               ".nan", ".inf", "-.inf", "1e3", "0x1f", "0o17", "2026-12-07", "12:30:00", "yes", "off", "'", '"',
               "# ", "|\n", ">\n", "%YAML 1.1\n", "---\n", "...\n", "\t", "1", "-2", "0.5", "null"]

# The commands whose --config is parsed: their arguments before it (OUT and IMAGES stand for paths in a
# temporary folder); and configs each accepts as they are: the shipped ones, and one for distill.
COMMANDS = {
    "run": ["run"], "compare": ["compare"], "evaluate": ["evaluate", "--images", "IMAGES"],
    "calibrate": ["calibrate", "--out", "OUT"], "distill": ["distill", "--out", "OUT"],
}
BASE_CONFIGS = [(command, yaml.safe_load((CONFIGS / name).read_text())) for command, name in (
    ("run", "fashion_mnist.yaml"), ("run", "quickstart.yaml"), ("run", "diffusion_fashion_mnist.yaml"),
    ("run", "cross_arch_fashion_mnist.yaml"), ("run", "taef2_fashion_mnist64.yaml"),
    ("compare", "compare_fashion_mnist.yaml"), ("evaluate", "evaluate_soft.yaml"), ("evaluate", "evaluate_dc.yaml"),
    ("calibrate", "calibrate_fashion_mnist.yaml"))] + [
    ("distill", {"dataset": {"name": "digits", "channels": 1}, "latent": {"vae": "fit", "fit": {"max_steps": 3}},
                 "decoder": {"name": "diffusion", "prior": {"max_steps": 2}, "strength": 0.5},
                 "distill": {"method": "dm", "ipc": 2, "params": {"iterations": 3}}})]


@pytest.fixture(scope="module")
def parse_config(tmp_path_factory):
    """parse_config(command, text or bytes, flags) -> the settings objects the command would start its work with,
    or the exit code with stderr's message when it refuses the config. Nothing is loaded or trained: the
    first step of each command's work raises `_Reached`, carrying the settings it was given."""
    from latentdd import cli

    folder = tmp_path_factory.mktemp("config")
    place = {"OUT": str(folder / "out"), "IMAGES": str(folder / "images")}
    parser = cli.make_parser()  # built once: building it is most of a call's time

    def reach(*args, **kwargs):
        raise _Reached([*args, *kwargs.values()])

    def parse(command: str, text: str | bytes, flags: tuple[str, ...] = ()):
        path = folder / "config.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        argv = [place.get(a, a) for a in COMMANDS[command]] + list(flags)
        err = io.StringIO()
        with mock.patch.object(cli, "make_parser", lambda: parser), mock.patch.object(DataConfig, "load", reach), \
                mock.patch("latentdd.pipelines.run.run", reach), \
                mock.patch("latentdd.pipelines.compare.compare", reach), \
                mock.patch("latentdd.pipelines.calibrate.run_calibration", reach), \
                contextlib.redirect_stderr(err):
            try:
                code = main([*argv, "--config", str(path), "--quiet"])
            except _Reached as reached:
                return reached.args[0]
        return code, err.getvalue()

    return parse


def check_config_outcome(command: str, outcome) -> None:
    """Refused: exit 2 and one `latentdd <command>: error: ...` message. Accepted: every settings object
    holds values that its own checks accept again once saved as YAML (what config.yaml keeps) and read
    back -- the same settings."""
    if isinstance(outcome, tuple):
        code, err = outcome
        prefix = f"latentdd {command}: error: "
        assert code == 2 and err.startswith(prefix) and len(err.strip()) > len(prefix), err
        return
    settings_objects = [v for v in outcome if dataclasses.is_dataclass(v)]
    assert settings_objects, outcome
    for value in settings_objects:
        saved = yaml.safe_load(yaml.safe_dump(plain(value)))
        assert build(type(value), saved) == value, value


@fuzz(200)
@given(command=st.sampled_from(sorted(COMMANDS)), text=st.one_of(
    st.text(max_size=200),
    st.binary(max_size=100),
    st.lists(st.sampled_from(YAML_PIECES), max_size=30).map("".join),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), config_values, max_size=4).map(
        lambda value: yaml.safe_dump(value, allow_unicode=True)),
))
def test_any_config_file_is_parsed_or_refused_clearly(parse_config, command, text):
    """Arbitrary text, bytes, YAML syntax and JSON-like values as --config: parsed and checked, or refused."""
    check_config_outcome(command, parse_config(command, text))


@fuzz(200)
@given(case=st.sampled_from(BASE_CONFIGS).flatmap(
    lambda case: mutations(case[1], config_values).map(lambda config: (case[0], config))))
def test_a_changed_config_is_parsed_or_refused_clearly(parse_config, case):
    """The shipped configs with fields retyped, changed, deleted or renamed: parsed and checked, or refused."""
    command, config = case
    check_config_outcome(command, parse_config(command, yaml.safe_dump(config, allow_unicode=True)))


@fuzz(150)
@given(flag=st.sampled_from(["--param", "--set", "--prior-set"]),
       key=st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
       value=st.one_of(st.text(max_size=20), st.lists(st.sampled_from(YAML_PIECES), max_size=8).map("".join)))
def test_any_key_value_flag_is_parsed_or_refused_clearly(parse_config, flag, key, value):
    """`distill --param / --set / --prior-set KEY=VALUE` (values read as YAML) over the distill base config:
    parsed and checked, or refused."""
    command, config = BASE_CONFIGS[-1]
    check_config_outcome(command, parse_config(command, yaml.safe_dump(config), (f"{flag}={key}={value}",)))


def test_the_base_configs_are_accepted(parse_config):
    """The properties above start from configs that are accepted as they are."""
    for command, config in BASE_CONFIGS:
        outcome = parse_config(command, yaml.safe_dump(config))
        assert isinstance(outcome, list), outcome
        check_config_outcome(command, outcome)


# ---------------------------------------------------------------- 2. image-folder manifests


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A 1-IPC digits image folder (10 PNGs of 8x8 and their manifest.json), its manifest and its images."""
    from latentdd.export import load_image_folder

    folder = tmp_path_factory.mktemp("images") / "set"
    assert main(["baseline", "--dataset", "digits", "--ipc", "1", "--out", str(folder), "--quiet"]) == 0
    return folder, json.loads((folder / "manifest.json").read_text()), load_image_folder(folder)


@pytest.fixture(scope="module")
def read_folder(image_folder, tmp_path_factory):
    """read_folder(manifest_text, damage={file: bytes}) -> what `load_image_folder` gives for a copy of the
    image folder with that manifest.json and those files replaced; a LatentDDError is returned, not raised."""
    from latentdd.export import load_image_folder, read_manifest

    original, _, _ = image_folder
    work = tmp_path_factory.mktemp("images-work") / "set"
    shutil.copytree(original, work)

    def read(text: str, damage: dict[str, bytes] | None = None):
        damage = damage or {}
        (work / "manifest.json").write_text(text, encoding="utf-8", errors="surrogatepass")
        for name, data in damage.items():
            (work / name).write_bytes(data)
        try:
            read_manifest(work)  # every reader of a manifest gets it checked
            return load_image_folder(work, class_names=[str(k) for k in range(10)], image_size=8, channels=1)
        except LatentDDError as err:
            assert str(err), "an error without a message"
            return err
        finally:
            for name in damage:
                shutil.copyfile(original / name, work / name)

    return read


def check_loaded_set(loaded, image_folder) -> None:
    """What loads holds the exported images, each with its own label (a changed manifest pairs no image with
    another label, and loses none); its metadata has the types `SyntheticImages` promises."""
    _, _, exported = image_folder
    if isinstance(loaded, LatentDDError):
        return
    pairs = {(bytes(x.numpy()), int(y)) for x, y in zip(exported.images, exported.labels)}
    assert {(bytes(x.numpy()), int(y)) for x, y in zip(loaded.images, loaded.labels)} <= pairs
    assert len(loaded) == len(exported)
    assert isinstance(loaded.name, str) and isinstance(loaded.split, str) and isinstance(loaded.meta, dict)
    assert loaded.weights is None or bool(torch.isfinite(loaded.weights).all())
    assert loaded.soft_labels is None or loaded.soft_labels.shape == (len(loaded), 10)


@fuzz(150)
@given(text=st.one_of(st.text(max_size=100), json_values().map(json.dumps)))
def test_any_manifest_is_read_or_refused_clearly(read_folder, image_folder, text):
    """Arbitrary text and JSON values as an image folder's manifest.json: read, or a DataError."""
    check_loaded_set(read_folder(text), image_folder)


@fuzz(200)
@given(data=st.data())
def test_a_changed_manifest_is_read_or_refused_clearly(read_folder, image_folder, data):
    """The exported manifest with fields deleted, retyped or changed (labels, files, shapes, weights ...):
    the images it lists with their own labels, or a DataError -- never a set that differs from the export."""
    _, manifest, _ = image_folder
    check_loaded_set(read_folder(json.dumps(data.draw(mutations(manifest)))), image_folder)


@fuzz(100)
@given(data=st.data())
def test_a_damaged_image_fails_its_checksum(read_folder, image_folder, data):
    """An exported PNG truncated or with one bit flipped: a DataError naming the file, whose checksum fails."""
    folder, manifest, _ = image_folder
    name = data.draw(st.sampled_from([entry["file"] for entry in manifest["images"]]))
    outcome = read_folder(json.dumps(manifest), {name: data.draw(damaged((folder / name).read_bytes()))})
    assert isinstance(outcome, DataError) and f"{name} was changed after export" in str(outcome), outcome


# ---------------------------------------------------------------- 3. checkpoints (latentdd.checkpoint.read_state)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(folder, state, the checkpoint file's bytes) of a checkpoint `save_state` wrote (matching's, the VAE
    and prior fits' and the network bank's are all written so): a matching run's kind of state (a synthetic
    set, an Adam state with integer keys, a generator state, a loss curve, numbers and strings)."""
    from latentdd.distill.matching import CHECKPOINT_FILE
    from latentdd.checkpoint import save_state

    generator = torch.Generator().manual_seed(0)
    syn = torch.randn(4, 2, 3, 3, generator=generator, requires_grad=True)
    optimizer = torch.optim.Adam([syn], lr=0.1)
    syn.square().sum().backward()
    optimizer.step()
    state = {"key": "0123abcd", "iteration": 7, "seconds": 1.5, "curve": [{"iteration": 5, "loss": 0.25}],
             "syn": syn.detach(), "optimizer": optimizer.state_dict(), "generator": generator.get_state()}
    folder = tmp_path_factory.mktemp("checkpoint")
    save_state(folder / CHECKPOINT_FILE, state)
    return folder, state, (folder / CHECKPOINT_FILE).read_bytes()


@pytest.fixture(scope="module")
def read_checkpoint(checkpoint, tmp_path_factory):
    """read_checkpoint(data) -> (what read_state gives, the warnings logged) for a copy of the checkpoint
    folder (with whatever save_state wrote beside the file) whose checkpoint file holds `data`."""
    from latentdd.distill.matching import CHECKPOINT_FILE
    from latentdd.checkpoint import read_state

    folder, _, _ = checkpoint
    work = tmp_path_factory.mktemp("checkpoint-work") / "copy"

    def read(data: bytes):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(folder, work)
        (work / CHECKPOINT_FILE).write_bytes(data)
        with logged_warnings() as warnings:
            return read_state(work / CHECKPOINT_FILE, otherwise="the run starts afresh"), warnings

    return read


def check_checkpoint_outcome(outcome, state) -> None:
    """None with a warning (the run starts afresh and says why), or exactly the state that was saved."""
    read, warnings = outcome
    if read is None:
        assert any(w.startswith("ignoring ") and "the run starts afresh" in w for w in warnings), warnings
    else:
        assert same(read, state), "a damaged checkpoint was read as a different state"


@fuzz(150)
@given(data=st.data())
def test_a_truncated_checkpoint_is_ignored_with_a_warning(checkpoint, read_checkpoint, data):
    """A matching checkpoint cut short anywhere: read_state returns None and warns, never raises."""
    _, state, saved = checkpoint
    check_checkpoint_outcome(read_checkpoint(data.draw(truncated(saved))), state)


@fuzz(150)
@given(data=st.data())
def test_a_bit_flipped_checkpoint_is_ignored_with_a_warning(checkpoint, read_checkpoint, data):
    """A matching checkpoint with one bit flipped anywhere (tensor bytes, the JSON of its structure, the
    header): read_state returns None and warns, or the saved state itself -- never altered values."""
    _, state, saved = checkpoint
    check_checkpoint_outcome(read_checkpoint(data.draw(bit_flipped(saved))), state)


# ---------------------------------------------------------------- 4. latent caches


class TinyCache:
    """A latent cache of 20 hand-made 1x4x4 images of 3 classes, in 3 shards, and how to encode it again."""

    VAE = {"name": "avg-pool", "latent_shape": [1, 2, 2]}
    DATASET = {"name": "tiny", "split": "train"}

    def __init__(self, folder: Path) -> None:
        from latentdd.data.base import ImageSet
        from latentdd.latents.cache import load_latents

        images = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        self.data = ImageSet(images, torch.arange(20) % 3, ["a", "b", "c"], "tiny", "train", "")
        self.folder = folder
        self.encode(folder)
        self.latents = load_latents(folder)
        self.manifest = json.loads((folder / "manifest.json").read_text())
        self.files = sorted(p.name for p in folder.iterdir())

    def encode(self, folder: Path) -> None:
        """What `latentdd encode` and `prepare_latent_space` do: encode what is missing or damaged, then
        write the manifest."""
        from latentdd.latents.cache import CacheConfig, encode_split, write_manifest

        encode_split(self.data, lambda x: torch.nn.functional.avg_pool2d(x, 2), folder, vae=self.VAE,
                     dataset=self.DATASET, config=CacheConfig(shard_size=8, batch_size=4), progress=False)
        write_manifest(folder, self.data.class_names)

    def check_read(self, folder: Path) -> type[LatentDDError] | None:
        """The class of the error both readers of a cache raise, or None when both give exactly the cached
        latents and labels. (The class names are the manifest's own record: only their form can be checked.)"""
        from latentdd.latents.cache import load_latents
        from latentdd.latents.sharded import open_latents

        outcomes = []
        for read in (load_latents, lambda f: open_latents(f).materialize()):
            try:
                latents = read(folder)
            except LatentDDError as err:
                assert str(err), "an error without a message"
                outcomes.append(type(err))
                continue
            assert torch.equal(latents.latents, self.latents.latents), "altered latents were read"
            assert torch.equal(latents.labels, self.latents.labels), "altered labels were read"
            assert list_of_names(latents.class_names, 3)
            outcomes.append(None)
        assert outcomes[0] == outcomes[1], f"the two readers disagree: {outcomes}"
        return outcomes[0]

    def check_repair(self, folder: Path) -> None:
        """Encoding again repairs the cache (it is read back exactly), or refuses with a clear error."""
        try:
            self.encode(folder)
        except LatentDDError as err:
            assert "delete" in str(err) or "different" in str(err), err
            return
        assert self.check_read(folder) is None, "the repaired cache cannot be read"


def list_of_names(value, count: int) -> bool:
    return isinstance(value, list) and len(value) == count and all(isinstance(v, str) for v in value)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    return TinyCache(tmp_path_factory.mktemp("cache") / "train")


@pytest.fixture(scope="module")
def damaged_cache(tiny_cache, tmp_path_factory):
    """damaged_cache({file: bytes}) -> a context giving a copy of the tiny cache with those files replaced,
    and putting them back afterwards (with what a repair rewrites: the manifest and the plan)."""
    work = tmp_path_factory.mktemp("cache-work") / "train"
    shutil.copytree(tiny_cache.folder, work)

    @contextlib.contextmanager
    def damage(files: dict[str, bytes]):
        for name, data in files.items():
            (work / name).write_bytes(data)
        try:
            yield work
        finally:
            for name in {*files, "manifest.json", "plan.json"}:
                shutil.copyfile(tiny_cache.folder / name, work / name)

    return damage


@fuzz(150)
@given(data=st.data())
def test_any_cache_manifest_is_read_or_refused_then_repaired(tiny_cache, damaged_cache, data):
    """Arbitrary text, JSON values and changed copies (fields deleted, retyped, changed) as a latent cache's
    manifest.json: both readers give exactly the cached latents or a LatentDDError; encoding again repairs it."""
    text = data.draw(st.one_of(st.text(max_size=100), json_values().map(json.dumps),
                               mutations(tiny_cache.manifest).map(json.dumps)))
    with damaged_cache({"manifest.json": text.encode("utf-8", "surrogatepass")}) as folder:
        tiny_cache.check_read(folder)
        tiny_cache.check_repair(folder)


@fuzz(100)
@given(data=st.data())
def test_a_damaged_cache_file_is_refused_then_repaired(tiny_cache, damaged_cache, data):
    """A shard, a shard's .sha256 or plan.json truncated or with one bit flipped: the readers give exactly the
    cached latents or a CacheDamagedError; encoding again re-encodes what is damaged (or refuses clearly)."""
    from latentdd.latents.cache import CacheDamagedError

    name = data.draw(st.sampled_from([n for n in tiny_cache.files if n != "manifest.json"]))
    with damaged_cache({name: data.draw(damaged((tiny_cache.folder / name).read_bytes()))}) as folder:
        error = tiny_cache.check_read(folder)
        assert error in (None, CacheDamagedError), error
        if name.endswith(".safetensors"):  # its checksum in the manifest fails
            assert error is CacheDamagedError
        tiny_cache.check_repair(folder)


# ---------------------------------------------------------------- 5. fitted VAE, prior and teacher cache entries


@pytest.fixture(scope="module")
def fitted_entries(tmp_path_factory):
    """{"vae": (folder, loader), "prior": (folder, loader)}: a fit_vae and a fit_prior cache entry of one step
    each, and the function that loads each."""
    from latentdd.data import load_dataset
    from latentdd.latents.types import Latents
    from latentdd.prior.fit import FitPriorConfig, fit_prior, load_prior
    from latentdd.vae.fit import FitVAEConfig, fit_vae, load_fitted

    cache = tmp_path_factory.mktemp("fits")
    train, test = load_dataset("digits", "train").subset(range(32)), load_dataset("digits", "test").subset(range(8))
    fit_vae(train, test, FitVAEConfig(image_size=8, block_out_channels=(8,), norm_num_groups=4, latent_channels=2,
                                      max_steps=1, batch_size=16, checkpoint_every=0, scale_images=32),
            cache / "vae", progress=False)
    latents = Latents(torch.randn(16, 2, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2,
                      ["a", "b"], vae={"name": "tiny"})
    fit_prior(latents, FitPriorConfig(block_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=8, max_steps=1,
                                      batch_size=8, checkpoint_every=0), cache / "prior", progress=False)
    return {kind: (next((cache / kind).iterdir()), load) for kind, load in (("vae", load_fitted), ("prior", load_prior))}


@fuzz(100)
@given(data=st.data())
def test_a_damaged_fitted_entry_loads_or_is_refused_clearly(fitted_entries, data):
    """A fitted VAE's or prior's cache entry with its latentdd_*.json replaced by arbitrary text, JSON or a changed
    copy, or any of its files cut short: it loads, or a LatentDDError says to delete it. (Bit flips inside the
    weights or the model's config.json load unnoticed: the entries hold no checksum of them.)"""
    kind = data.draw(st.sampled_from(sorted(fitted_entries)))
    entry, load = fitted_entries[kind]
    name = data.draw(st.sampled_from(sorted(str(p.relative_to(entry)) for p in entry.rglob("*")
                                            if p.is_file() and p.suffix != ".png")))
    original = (entry / name).read_bytes()
    if name.startswith("latentdd_"):
        meta = json.loads(original)
        text = data.draw(st.one_of(st.text(max_size=100), json_values().map(json.dumps), mutations(meta).map(json.dumps)))
        damage = text.encode("utf-8", "surrogatepass")
    else:
        damage = data.draw(truncated(original))
    (entry / name).write_bytes(damage)
    try:
        load(entry)
    except LatentDDError as err:
        assert "delete the directory" in str(err), err
    finally:
        (entry / name).write_bytes(original)


@pytest.fixture(scope="module")
def fitted_teacher(tmp_path_factory):
    """(a fitted teacher's folder, its teacher.json, its weights): one epoch of a tiny ConvNet on 64 digits."""
    from latentdd.data import load_dataset
    from latentdd.evaluate.teacher import TeacherConfig, fit_teacher

    train, test = load_dataset("digits", "train").subset(range(64)), load_dataset("digits", "test").subset(range(16))
    config = TeacherConfig(preset="quick", width=8, depth=1, epochs=1, batch_size=32, cache_dir=str(tmp_path_factory.mktemp("teacher")))
    teacher = fit_teacher(train, test, config, progress=False)
    folder = Path(teacher.record["directory"])
    return folder, json.loads((folder / "teacher.json").read_text()), dict(teacher.model.state_dict())


@fuzz(100)
@given(data=st.data())
def test_a_damaged_teacher_folder_loads_whole_or_is_refused_clearly(fitted_teacher, data):
    """A fitted teacher's folder (`--teacher DIR`) with teacher.json or its weights cut short or with one bit
    flipped, or teacher.json replaced by arbitrary JSON or a changed copy: the stored teacher itself (weights
    and test accuracy), or a LatentDDError."""
    from latentdd.evaluate.teacher import load_teacher_folder

    folder, record, weights = fitted_teacher
    name = data.draw(st.sampled_from(["teacher.json", "teacher.safetensors"]))
    original = (folder / name).read_bytes()
    if name == "teacher.json" and data.draw(st.booleans()):
        damage = json.dumps(data.draw(st.one_of(json_values(), mutations(record)))).encode()
    else:
        damage = data.draw(damaged(original))
    (folder / name).write_bytes(damage)
    try:
        teacher = load_teacher_folder(folder)
    except LatentDDError as err:
        assert str(err), "an error without a message"
        return
    finally:
        (folder / name).write_bytes(original)
    assert same(dict(teacher.model.state_dict()), weights), "altered weights were loaded"
    assert teacher.record["test_accuracy"] == record["test_accuracy"], "an altered record was loaded"
