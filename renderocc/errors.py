"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

import click


class UserError(click.ClickException):
    """A problem with the user's input (path, file, option, schema) that they can fix."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message
