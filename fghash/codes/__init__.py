"""The HDF5 codes file and its companions: bit helpers, the codes file format, block
streaming, the features file and the parts store. Importers use this package's names."""

from fghash.codes.file import *  # noqa: F401,F403
from fghash.codes.file import __all__ as _file_all

__all__ = list(_file_all)
