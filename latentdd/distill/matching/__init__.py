"""The matching engine: every method that optimises a synthetic set against the real one.

A matching method optimises the synthetic variables -- latents, or pixels in the identity
latent space (`--vae pixel`) -- so that networks see them as they see real data. The
engine owns everything the methods share; a method is a small registered subclass that
sets its reference's defaults and says how one class is scored (`class_loss`), where its
networks come from (`network_source`), and, when it needs more than one optimiser step
an iteration (DC's outer/inner loops), how an iteration runs (`iterate`).

What the engine provides:
- the variables: (K*IPC, c, h, w), grouped by class, initialised from random real latents
  of the class ("real") or its k-means centroids ("kmeans"); with factorization each
  holds factor x factor sub-latents (tiles "latent"), or the set holds factor**2 whole latents per
  stored image, each decoded, pooled and tiled into it at render time (tiles "decoded");
- the embedding (`Inputs`): the latents themselves ("latent": ConvNets built for the latent
  shape), or decode -> normalised pixels -> ConvNet ("pixel"; the real latents are decoded
  once, up front, the synthetic ones every iteration, with gradients);
- siamese DSA: one augmentation draw per class per iteration, applied to the real and the
  synthetic batch alike;
- a network source: a fresh random ConvNet each iteration (`FreshNetworks`, DM/DC), or
  the in-loop pool of IDM/BACON (`InLoopPool`), networks trained briefly on real data
  between iterations;
- a fast forward of those networks (`Embedder`): every iteration's network is copied into one
  module per run, which torch.compile compiles once (`compile`), and the real batch, which needs
  no gradient, can run in bfloat16 (`real_precision`);
- the optimiser of the synthetic set: SGD (the references') or Adam;
- checkpoints (`latentdd.checkpoint`: safetensors + JSON, never a pickle, a checksum beside) keyed by
  `latentdd.cachekey`, resume bit-identical to an uninterrupted run; a checkpoint is checked
  before it is resumed (checksum; iteration, shape, finite values, within the divergence limit
  of the initial set; optimiser, networks and generator load), and one that fails is ignored
  with a warning naming it, the run starting as if it had never been there;
- a progress bar showing the loss terms, a stop with advice on NaN or divergence (measured
  against the initial set, also after a resume), and the loss curve in the result's extras.

All randomness comes from one torch.Generator seeded with `seed`; nothing is chosen by
test accuracy: the result is the last iteration's.

The package: `engine` (MatchingDistiller, its loop and checkpoints), `sources` (the networks:
FreshNetworks, InLoopPool, NetworkBank), `embedder` (Embedder) and `inputs` (Inputs, Run).
"""

from latentdd.distill.matching.embedder import Embedder, machine_real_precision
from latentdd.distill.matching.engine import CHECKPOINT_FILE, MatchingDistiller, remove_checkpoint
from latentdd.distill.matching.inputs import EMBEDDINGS, Inputs, Run
from latentdd.distill.matching.sources import FreshNetworks, InLoopPool, Net, NetSpec, NetworkBank

__all__ = [
    "CHECKPOINT_FILE",
    "EMBEDDINGS",
    "Embedder",
    "FreshNetworks",
    "InLoopPool",
    "Inputs",
    "MatchingDistiller",
    "Net",
    "NetSpec",
    "NetworkBank",
    "Run",
    "machine_real_precision",
    "remove_checkpoint",
]
