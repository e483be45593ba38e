"""The one exception type for mistakes a user can fix (bad files, bad arguments), and the
one sentence an operating-system error (read-only folder, full disk, name too long)
becomes at the command line's boundary."""

from __future__ import annotations

import errno
import os
import re

__all__ = ["FghashError", "escape_bytes", "os_error_sentence", "os_error_from_message"]


class FghashError(ValueError):
    """A user-facing error: the message is one sentence that says what is wrong and,
    where possible, what to do. The CLI prints it and exits with status 2."""


_HINTS = {
    errno.EROFS: "choose a writable folder",
    errno.EACCES: "choose a folder you may write to",
    errno.EPERM: "choose a folder you may write to",
    errno.ENOSPC: "free some space or choose another disk",
    errno.EDQUOT: "free some space or choose another disk",
    errno.ENAMETOOLONG: "choose a shorter name",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "check the path",
}

# errno = 28 (HDF5), [Errno 28] (Python); FAISS writes only "(No space left on device)"
_ERRNO_RE = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]", re.IGNORECASE)
_NAME_RE = re.compile(r"name\s*=\s*'([^']*)'")


def escape_bytes(text: str) -> str:
    """``text`` with each byte of a file name that is not UTF-8 (``os.fsdecode``'s
    surrogate escapes) written as ``\\xNN``: printable and writable as UTF-8 anywhere."""
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else c for c in text)


def os_error_from_message(message: str, filename: str | None = None) -> OSError | None:
    """An :class:`OSError` for a library message that embeds an errno (HDF5, FAISS, torch).

    Returns None when the message names no errno.
    """
    m = _ERRNO_RE.search(message)
    if m:
        code = int(next(g for g in m.groups() if g))
    else:
        code = next((c for c in _HINTS if f"({os.strerror(c)})" in message), 0)
        if not code:
            return None
    if filename is None:
        n = _NAME_RE.search(message)
        filename = n.group(1) if n else None
    return OSError(code, os.strerror(code), filename)


def os_error_sentence(e: OSError) -> str:
    """One sentence naming the path and the cause of ``e``, and what to do where clear.

    A temporary path of :mod:`fghash.util.atomic` is reported as the file it stood for
    (nested temporaries too).
    """
    from fghash.util.atomic import final_name

    code = e.errno
    filename = getattr(e, "filename2", None) or e.filename
    if code is None or filename is None:  # HDF5, FAISS: errno and name inside the message
        parsed = os_error_from_message(str(e))
        if parsed is not None:
            code = code if code is not None else parsed.errno
            filename = filename if filename is not None else parsed.filename
    cause = os.strerror(code) if code else (e.strerror or str(e) or type(e).__name__)
    cause = " ".join(cause.split()).rstrip(".")
    where = ""
    if filename is not None:
        name, shown = os.fsdecode(filename), None
        for _ in range(4):  # a temporary of a temporary (a file renamed in later) too
            shown, name = name, str(final_name(name))
            if name == shown:
                break
        where = f"{name}: "
    hint = _HINTS.get(code) if code is not None else None
    return f"{where}{cause[:1].lower() + cause[1:]}" + (f"; {hint}." if hint else ".")
