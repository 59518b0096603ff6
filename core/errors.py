"""Errors in the numeric code that the user can fix by changing the input or the settings.

Algorithms turn them into QgsProcessingException with the same message.
"""


class InputError(ValueError):
    pass
