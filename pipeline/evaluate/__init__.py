"""The instruments: IS / FID / KID through torch-fidelity, the dataset classifier, one run's measurement."""
