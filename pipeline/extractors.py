"""The metric feature extractors, by name: declared once, read by config (validation) and metrics.

Kept free of heavy imports so that validating params.yaml does not load torch-fidelity.
"""

KNOWN_EXTRACTORS = ("effnet", "inception", "classifier")
# Name each extractor has in torch-fidelity's registry.
FIDELITY_NAMES = {"effnet": "effnet", "inception": "inception-v3-compat", "classifier": "ganlab-classifier"}
