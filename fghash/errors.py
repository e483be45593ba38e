"""The one exception type for mistakes a user can fix (bad files, bad arguments)."""

__all__ = ["FghashError"]


class FghashError(ValueError):
    """A user-facing error: the message is one sentence that says what is wrong and,
    where possible, what to do. The CLI prints it and exits with status 2."""
