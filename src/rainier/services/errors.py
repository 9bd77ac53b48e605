"""What a service answers when a request cannot be done as asked."""

from __future__ import annotations


class Refused(Exception):
    """A user's request refused with what is wrong and where: the API answers `status` (4xx),
    with `field` naming the document's field when one is to blame; nothing was written."""

    def __init__(self, status: int, message: str, field: str | None = None):
        self.status, self.message, self.field = status, message, field
        super().__init__(message)
