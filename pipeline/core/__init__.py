"""What every stage needs and nothing of the computation: params.yaml, run paths, environment, errors."""
