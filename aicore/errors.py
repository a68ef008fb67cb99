"""User-facing errors. Each is reported as one message and exit status 2 by the CLI."""


class AICoreError(Exception):
    """A problem the user can fix: the message names the file or key and the fix."""

    exit_code = 2


class ConfigError(AICoreError):
    pass


class ComponentError(ConfigError):
    """A component (often a custom module) raised inside its own constructor; the CLI's
    --debug prints the traceback."""


class DataError(AICoreError):
    pass


class CheckpointError(AICoreError):
    pass


class TrainingDiverged(AICoreError):
    pass


class ExportError(AICoreError):
    pass
