"""User-facing errors: raised at the edges (recipes, data), caught by the launchers, printed as one line."""


class ConfigError(ValueError):
    """A recipe or command-line override is wrong; the message names the key and the valid choices."""


class DataError(ValueError):
    """A dataset or shard folder is missing or malformed; the message names the file and the fix."""


class TrainingError(RuntimeError):
    """A run cannot go on (non-finite losses, a checkpoint that cannot be written); the message says
    why and which checkpoint is the last good one."""
