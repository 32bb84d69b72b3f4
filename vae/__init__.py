"""VAEs with learned latent priors: data, models, losses, training, checkpoints, analysis."""
