"""ganlab: reproducible GAN training studies (DVC stages + MLflow tracking)."""
