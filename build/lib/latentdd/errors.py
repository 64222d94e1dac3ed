"""Exceptions raised on bad input. Each message says what was wrong and what to do."""


class LatentDDError(Exception):
    """Base class of every error latentdd raises on purpose."""


class DatasetNotFoundError(LatentDDError, FileNotFoundError):
    """A dataset's files are not where latentdd looked; the message says how to get them."""


class DataError(LatentDDError, ValueError):
    """Input data is malformed: wrong shape, corrupt file, unknown class, too few images."""


class OutputExistsError(LatentDDError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""
