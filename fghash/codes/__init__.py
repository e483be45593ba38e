"""The HDF5 codes file and its companions, one job per module: bit helpers (``bits``), the
per-split checks (``checks``), the codes file format (``file``), block streaming
(``blocks``), the HDF5 features file (``features``), the parts store (``parts``) and
labels as people read them (``labels``). Importers use this package's names for the
first four."""

from fghash.codes.bits import *  # noqa: F401,F403
from fghash.codes.bits import __all__ as _bits_all
from fghash.codes.blocks import *  # noqa: F401,F403
from fghash.codes.blocks import __all__ as _blocks_all
from fghash.codes.checks import CodesFileError, ids_unique
from fghash.codes.file import (
    FORMAT,
    VERSION,
    CodesFile,
    Split,
    file_checksum,
    make_codes_file,
    read_attrs,
    read_codes,
    row_chunks,
    write_codes,
)

__all__ = [
    *_bits_all,
    "FORMAT",
    "VERSION",
    "CodesFileError",
    "Split",
    "CodesFile",
    "make_codes_file",
    "write_codes",
    "read_codes",
    "read_attrs",
    "file_checksum",
    "ids_unique",
    "row_chunks",
    *_blocks_all,
]
