"""The one exception type that means "the user's input is wrong", not "vaelab is broken".

The CLI turns a `UserError` into one line on stderr and a non-zero exit; anything else is a bug
and keeps its traceback. Messages name the problem and the file or flag it came from.
"""


class UserError(Exception):
    """Bad input: a missing or corrupt file, data that do not fit the chosen model, a bad flag."""
