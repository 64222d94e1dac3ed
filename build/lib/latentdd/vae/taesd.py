"""TAESD-family tiny autoencoders (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2) from .pth state dicts.

The architecture is rebuilt from the state dict's keys, so every variant of the family
loads with the same code. Both halves are plain `nn.Sequential`s whose indices are the
state-dict prefixes (`"11.conv.0.weight"` is layer 11):

    encoder  conv3x3(3->64), Block, [conv3x3 stride 2 (no bias), Block x3] x 3, conv3x3(64->c)
    decoder  tanh(z/3)*3, conv3x3(c->64), ReLU, [Block x3, Upsample x2 (nearest), conv3x3 (no bias)] x 3,
             Block, conv3x3(64->3)

Facts checked against the TAEF2 weights (../shared/weights/taef2: taef2_encoder.pth,
taef2_decoder.pth; fp16; 1,338,528 and 1,338,499 parameters; 32 latent channels; 8x down):

- Block: conv3x3-ReLU-conv3x3-ReLU-conv3x3 (keys conv.0/2/4) plus the identity skip
  (a 1x1 `skip` conv only where channels change: none in TAEF2), ReLU after the sum.
- TAEF2's "midblock" Blocks (encoder layers 11-13, after the third downsampling; decoder
  layers 3-5, before the first upsampling) also hold `pool`: 1x1 conv 64->256 without
  bias, GroupNorm(4, 256), ReLU, 1x1 conv 256->64 without bias. It works per pixel (no
  global pooling) and is added to the Block's *input*: x = x + pool(x), then the Block as
  above. The state dict fixes neither the combination nor the group count; we chose them
  by reconstruction PSNR on 64 Fashion-MNIST test images (28 -> 64 px RGB) / on four
  256 px crops of natural photos (sklearn's sample images), with the photos' PSNR after
  downsampling to 28 px (colour and low frequencies) in brackets:
      x + pool(x), then the Block          29.7 / 24.5 (42.9)   <- this one
      pool(x) added inside the final ReLU  29.8 / 24.2 (36.0)
      pool(x) added after the final ReLU   27.6 / 23.6 (31.5)
      pool of the Block's output, added    25.8 / 22.7 (29.7)
      pool of the global mean, added       29.1 / 22.6 (28.9), or to the input 29.8 / 22.4 (27.7)
      no pool branch                       19.7
  and GroupNorm with 1, 2, 8 or 32 groups instead of 4: 29.0, 29.3, 27.2, 23.2 dB on
  Fashion-MNIST (21.7, 21.1, 23.9, 21.5 dB on the photos).
- Inputs are RGB in [0, 1] (feeding [-1, 1] gives 12 dB); the decoder's output is already
  in [0, 1] (observed -0.08 .. 1.02) and needs only the clamp, no rescale.
- TAESD models carry no scaling factor: scaling_factor 1, shift 0. TAEF2 latents of
  Fashion-MNIST at 64 px have mean ~0.04 and std ~0.80 (natural photos: std ~0.84).
- TAESD encoders are deterministic (no posterior): `encode(sample=True)` is refused.

Round trip on the first 1000 Fashion-MNIST test images (28 px gray -> 64 px RGB by
`VAEInputAdapter`): PSNR 29.7 dB at 64 px RGB, 29.8 dB at 28 px gray after
`VAEInputAdapter.from_vae` (an antialiased resize back to 28 px would give 24.2 dB).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from latentdd.errors import LatentDDError
from latentdd.vae.base import LatentVAE, check_input_size

# GroupNorm's group count is not stored in a state dict; 4 is the one that reconstructs (see above).
POOL_GROUPS = 4
DEFAULT_INPUT_SIZE = 64  # a choice, not a model property: 64 px -> 8x8 latents


class TanhClamp(nn.Module):
    """Soft clamp of latents to (-3, 3): tanh(z / 3) * 3; the first layer of TAESD decoders."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3


class Block(nn.Module):
    """Residual block: relu(convs(x) + skip(x)), convs = conv3x3-ReLU-conv3x3-ReLU-conv3x3.

    pool_channels: hidden width of the optional TAEF2 midblock branch, which first does
    x = x + pool(x) with pool = 1x1 conv -> GroupNorm(4) -> ReLU -> 1x1 conv. Shapes are kept:
    (B, n_in, H, W) -> (B, n_out, H, W).
    """

    def __init__(self, n_in: int, n_out: int, pool_channels: int | None = None):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(n_in, n_out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_out, n_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.pool = None
        if pool_channels:
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, pool_channels, 1, bias=False),
                nn.GroupNorm(POOL_GROUPS, pool_channels),
                nn.ReLU(),
                nn.Conv2d(pool_channels, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + self.skip(x))


def _layers(state_dict: dict[str, torch.Tensor], what: str) -> list[dict | None]:
    """Describe layer i of a Sequential from its keys: a conv, a Block, or None (no parameters)."""
    by_index: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if not head.isdigit() or not rest:
            raise LatentDDError(f"{what}: key {key!r} is not from a TAESD Sequential (expected '<index>.<name>')")
        by_index.setdefault(int(head), {})[rest] = value
    if not by_index:
        raise LatentDDError(f"{what}: the state dict is empty")
    layers: list[dict | None] = []
    for i in range(max(by_index) + 1):
        keys = by_index.get(i)
        if keys is None:
            layers.append(None)
        elif set(keys) <= {"weight", "bias"} and keys["weight"].ndim == 4:
            out_c, in_c, kh, _ = keys["weight"].shape
            layers.append({"kind": "conv", "in": in_c, "out": out_c, "kernel": kh, "bias": "bias" in keys})
        elif "conv.0.weight" in keys and "conv.4.weight" in keys:
            pool = keys.get("pool.0.weight")
            layers.append(
                {
                    "kind": "block",
                    "in": keys["conv.0.weight"].shape[1],
                    "out": keys["conv.4.weight"].shape[0],
                    "pool": pool.shape[0] if pool is not None else None,
                }
            )
        else:
            raise LatentDDError(f"{what}: layer {i} has keys {sorted(keys)}, which no TAESD layer has")
    return layers


def _conv(layer: dict, stride: int = 1) -> nn.Conv2d:
    k = layer["kernel"]
    return nn.Conv2d(layer["in"], layer["out"], k, stride=stride, padding=k // 2, bias=layer["bias"])


def build_encoder(state_dict: dict[str, torch.Tensor], what: str = "encoder") -> nn.Sequential:
    """The encoder Sequential the state dict was saved from (weights not loaded).

    A conv without bias is a stride-2 downsampling conv; TAESD encoders have no
    parameter-free layers.
    """
    layers = _layers(state_dict, what)
    if layers[0] is None or layers[0]["kind"] != "conv" or any(layer is None for layer in layers):
        raise LatentDDError(f"{what}: does not look like a TAESD encoder (it should start with a conv, with no gaps)")
    modules: list[nn.Module] = []
    for layer in layers:
        if layer["kind"] == "block":
            modules.append(Block(layer["in"], layer["out"], layer["pool"]))
        else:
            modules.append(_conv(layer, stride=1 if layer["bias"] else 2))
    return nn.Sequential(*modules)


def build_decoder(state_dict: dict[str, torch.Tensor], what: str = "decoder") -> nn.Sequential:
    """The decoder Sequential the state dict was saved from (weights not loaded).

    Parameter-free layers are read from the gaps in the indices: the first is the tanh
    clamp, one followed by a bias-free conv is a 2x nearest upsampling, any other a ReLU.
    """
    layers = _layers(state_dict, what)
    if layers[0] is not None:
        raise LatentDDError(f"{what}: does not look like a TAESD decoder (layer 0 should be the parameter-free clamp)")
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if i == 0:
            modules.append(TanhClamp())
        elif layer is None:
            following = layers[i + 1] if i + 1 < len(layers) else None
            upsample = following is not None and following["kind"] == "conv" and not following["bias"]
            modules.append(nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.ReLU())
        elif layer["kind"] == "block":
            modules.append(Block(layer["in"], layer["out"], layer["pool"]))
        else:
            modules.append(_conv(layer))
    return nn.Sequential(*modules)


def _load_strict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    result = module.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise LatentDDError(
            f"{what}: state dict does not match the TAESD architecture built from it; "
            f"missing keys {result.missing_keys}, unexpected keys {result.unexpected_keys}"
        )


class TAESD(LatentVAE):
    """A TAESD-family autoencoder: deterministic encoder, images in [0, 1], no latent scaling.

    encoder / decoder: state dicts as saved by the TAESD project (fp16 or fp32).
    input_size: side of the square input; any multiple of the downsampling factor.
    """

    def __init__(
        self,
        encoder_state: dict[str, torch.Tensor],
        decoder_state: dict[str, torch.Tensor],
        *,
        name: str,
        input_size: int = DEFAULT_INPUT_SIZE,
        weights_sha256: str | None = None,
    ):
        super().__init__()
        self.encoder = build_encoder(encoder_state, f"{name} encoder")
        self.decoder = build_decoder(decoder_state, f"{name} decoder")
        _load_strict(self.encoder, encoder_state, f"{name} encoder")
        _load_strict(self.decoder, decoder_state, f"{name} decoder")
        self.requires_grad_(False)
        self.eval()

        first, last = self.encoder[0], self.encoder[-1]
        latent_channels = last.out_channels
        if self.decoder[1].in_channels != latent_channels:
            raise LatentDDError(
                f"{name}: the encoder makes {latent_channels}-channel latents but the decoder reads "
                f"{self.decoder[1].in_channels}; are the two files from the same model?"
            )
        if self.decoder[-1].out_channels != first.in_channels:
            out_channels = self.decoder[-1].out_channels
            raise LatentDDError(f"{name}: encoder reads {first.in_channels} channels, decoder writes {out_channels}")
        downs = sum(1 for m in self.encoder if isinstance(m, nn.Conv2d) and m.stride == (2, 2))
        ups = sum(1 for m in self.decoder if isinstance(m, nn.Upsample))
        if downs != ups:
            raise LatentDDError(f"{name}: encoder downsamples {downs} times but the decoder upsamples {ups} times")
        factor = 2**downs

        self.name = name
        self.input_channels = first.in_channels
        self.input_size = check_input_size(input_size, factor, name)
        self.latent_shape = (latent_channels, input_size // factor, input_size // factor)
        self.scaling_factor = 1.0
        self.shift_factor = 0.0
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_files(
        cls,
        encoder_path: Path | str,
        decoder_path: Path | str,
        *,
        input_size: int = DEFAULT_INPUT_SIZE,
        name: str | None = None,
    ) -> "TAESD":
        """Load from `*encoder.pth` / `*decoder.pth` (or .safetensors) files."""
        encoder_path, decoder_path = Path(encoder_path), Path(decoder_path)
        digest = hashlib.sha256()
        states = []
        for path in (encoder_path, decoder_path):
            states.append(_read_state_dict(path))
            digest.update(path.read_bytes())
        name = name or f"taesd:{encoder_path.resolve().parent}"
        return cls(states[0], states[1], name=name, input_size=input_size, weights_sha256=digest.hexdigest())

    def encode_unscaled(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        if sample:
            raise LatentDDError(f"{self.name} has a deterministic encoder: there is no posterior to sample from")
        return self.encoder(images)  # (B, 3, S, S) in [0, 1] -> (B, c, S/8, S/8)

    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents)  # (B, c, h, w) -> (B, 3, 8h, 8w), about [0, 1]

    def identity(self) -> dict:
        return {**super().identity(), "weights_sha256": self.weights_sha256}


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LatentDDError(f"TAESD weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a corrupt file
        raise LatentDDError(
            f"cannot read TAESD weights {path}: {type(err).__name__}: {err}; expected a state dict saved with torch.save"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LatentDDError(f"TAESD weights {path} do not hold a state dict (a mapping of names to tensors)")
    return state


def find_taesd_files(path: Path | str) -> tuple[Path, Path]:
    """(encoder, decoder) files for a directory holding one `*encoder.pth` + `*decoder.pth`
    pair (or .safetensors), or for the path of either file of such a pair."""
    path = Path(path).expanduser()
    if path.is_file():
        stem = path.name
        if "encoder" in stem:
            return path, path.with_name(stem.replace("encoder", "decoder"))
        if "decoder" in stem:
            return path.with_name(stem.replace("decoder", "encoder")), path
        raise LatentDDError(f"{path}: a TAESD weights file name must contain 'encoder' or 'decoder'")
    if not path.is_dir():
        raise LatentDDError(f"TAESD weights {path} do not exist")
    for ext in (".pth", ".safetensors"):
        encoders = sorted(path.glob(f"*encoder{ext}"))
        decoders = sorted(path.glob(f"*decoder{ext}"))
        if len(encoders) == 1 and len(decoders) == 1:
            return encoders[0], decoders[0]
        if len(encoders) > 1 or len(decoders) > 1:
            names = ", ".join(p.name for p in encoders + decoders)
            raise LatentDDError(f"{path} holds several TAESD models ({names}); pass the encoder file's path")
    raise LatentDDError(f"{path} holds no '*encoder.pth' and '*decoder.pth' pair of TAESD weights")


def has_taesd_files(path: Path) -> bool:
    """Does directory `path` hold TAESD `*encoder.pth` (or .safetensors) weights?"""
    return path.is_dir() and (any(path.glob("*encoder.pth")) or any(path.glob("*encoder.safetensors")))


class DiffusersTiny(LatentVAE):
    """A diffusers `AutoencoderTiny` (TAESD in diffusers format), images in [0, 1].

    diffusers' AutoencoderTiny speaks [-1, 1] at both ends (it converts to TAESD's [0, 1]
    inside); this wrapper converts back, so every LatentVAE takes and returns [0, 1].
    scaling_factor and shift_factor come from the model config.
    """

    def __init__(self, model, *, name: str, input_size: int = DEFAULT_INPUT_SIZE):
        super().__init__()
        config = model.config
        self.model = model.eval().requires_grad_(False)
        factor = 2 ** (len(config.encoder_block_out_channels) - 1)
        if config.in_channels not in (1, 3) or config.out_channels != config.in_channels:
            channels = f"in_channels {config.in_channels} / out_channels {config.out_channels}"
            raise LatentDDError(f"{name}: {channels} are not 1/1 or 3/3")
        self.name = name
        self.input_channels = config.in_channels
        self.input_size = check_input_size(input_size, factor, name)
        self.latent_shape = (config.latent_channels, input_size // factor, input_size // factor)
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(config.get("shift_factor") or 0.0)

    def encode_unscaled(self, images: torch.Tensor, sample: bool, generator: torch.Generator | None) -> torch.Tensor:
        if sample:
            raise LatentDDError(f"{self.name} has a deterministic encoder: there is no posterior to sample from")
        return self.model.encode(images * 2 - 1).latents

    def decode_unscaled(self, latents: torch.Tensor) -> torch.Tensor:
        return (self.model.decode(latents).sample + 1) / 2
