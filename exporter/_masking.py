"""The one literal secret masker: the values of the secret settings (``Settings.secret_values()``),
and the forms a client writes them in, replaced by a mask wherever they appear, longest first (a
URL is masked whole before the token inside it). Standard library only."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MASK = "****"
MIN_LENGTH = 4  # a shorter value ("abc") would mask ordinary text


class SecretMasker:
    """Masks known secret strings in text and in JSON-like values. Immutable: :meth:`plus` makes
    a new one, so a reader on another thread keeps a consistent list."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = tuple(sorted({value for value in values if len(value) >= MIN_LENGTH}, key=len, reverse=True))

    def plus(self, values: Iterable[str]) -> SecretMasker:
        """A masker of these values as well."""
        return SecretMasker((*self.values, *values))

    def mask(self, text: str) -> str:
        for secret in self.values:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_value(self, value: Any) -> Any:
        """``value`` with every string in it masked: mappings (keys made strings), lists and
        tuples (made lists) walked, numbers, booleans and None kept, anything else made a string."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {str(key): self.mask_value(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_value(item) for item in value]
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self.mask(str(value))
