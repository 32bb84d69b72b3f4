"""Training: the orchestrator (`stages`), stage 1 (`vae_stage`, the VAE), stage 2
(`prior_stage`, learned priors on its frozen latents), the one fit loop and the optimizer.
Stage 1 never imports stage 2.
"""
