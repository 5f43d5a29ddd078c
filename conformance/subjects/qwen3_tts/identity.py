"""Who this subject is: its name in every golden's provenance, its title, the official package it records."""

from __future__ import annotations

from .. import OfficialPackage
from .official import OFFICIAL_PACKAGE, OFFICIAL_VERSION

NAME = "qwen3_tts"
TITLE = "Qwen3-TTS"
OFFICIAL = OfficialPackage(distribution=OFFICIAL_PACKAGE, version=OFFICIAL_VERSION, import_name="qwen_tts")
