"""MLflow: what a training logs, delivered even when the server is away; who may write."""
