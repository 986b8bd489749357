"""Errors a user can cause (bad path, bad file, bad setting).

The CLI prints them as one line and the playground shows them as a message, never a traceback.
The message names the problem and what is allowed.
"""


class UserError(ValueError):
    """A problem with the user's input, fixable by the user; the message says how."""
