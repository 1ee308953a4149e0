"""Error types the stages turn into one clear message (no traceback) before any work starts."""


class GanlabError(Exception):
    """Base class: a problem the user can fix (bad params, missing or corrupt data, missing weights)."""


class ConfigError(GanlabError):
    """params.yaml is malformed; the message names the key path."""


class DataError(GanlabError):
    """A dataset file is missing, corrupt or unreadable; the message names the file."""


class ExtractorUnavailable(GanlabError):
    """A metric feature extractor cannot be built (e.g. Inception weights offline)."""


class TrainingDiverged(GanlabError):
    """A loss became NaN/inf; the last good checkpoint is kept."""
