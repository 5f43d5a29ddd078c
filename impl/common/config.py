"""Typed model configs read from a checkpoint's config.json."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T", bound="Config")


class Config:
    """Base of the config dataclasses. A field's default is the official config class's default, so a
    config.json that omits a key reads as the official code reads it."""

    @classmethod
    def from_dict(cls: type[T], raw: Mapping[str, Any], **overrides: Any) -> T:
        """The config of a config.json dict: the keys this class names (others, such as architectures or
        training settings, are ignored), the official defaults for keys absent, `overrides` on top."""
        names = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{key: value for key, value in {**raw, **overrides}.items() if key in names})
