"""The model directory format: writing and reading it, with the checks an untrusted file needs."""

from ._errors import DamagedModel
from ._files import FORMAT, FORMAT_VERSION, read_model_files, write_model_files

__all__ = ["FORMAT", "FORMAT_VERSION", "DamagedModel", "read_model_files", "write_model_files"]
