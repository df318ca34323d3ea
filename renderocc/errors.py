"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

import os
import stat

import click


class UserError(click.ClickException):
    """A problem with the user's input (path, file, option, schema) that they can fix."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def require_regular_file(path: str | os.PathLike, what: str = "", missing_ok: bool = False) -> None:
    """A file the user gave (or a store holds) must be a regular file, through symlinks: a device
    such as /dev/zero never ends and a FIFO blocks its reader forever. One line says what it is
    instead: missing (unless `missing_ok`: the caller names that itself), a folder, or a special file."""
    name = f"{what} {os.fspath(path)}".strip()
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if missing_ok:
            return
        raise UserError(f"{what or 'file'} not found: {os.fspath(path)}") from None
    except OSError as e:
        raise UserError(f"cannot read {name}: {e.strerror or e}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{name} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise UserError(f"{name} is not a regular file (a device, FIFO or socket): refused")
