"""The density: bins (discretizer), the causal transformer (network), the autoregressive density
over model coordinates, and the checkpoint file format."""
