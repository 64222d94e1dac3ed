"""End-to-end flows built from latentdd's stages; each is also a `latentdd` command."""
