"""latentdd: dataset distillation in a generative latent space."""

__version__ = "0.1.0"
