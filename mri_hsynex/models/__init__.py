"""Networks of the cascade: a U-Net built from a small JSON config, losses, and model lookup."""
