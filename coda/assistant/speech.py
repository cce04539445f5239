"""What of the answer text is spoken (pure): markup a reader would not say aloud is dropped.

Tokens go to Voice.Synthesize as they arrive; the voice service splits them into sentences and speaks
each as soon as it is complete, so the answer is heard while it is still being generated.
"""

from __future__ import annotations

import re

_MARKUP = re.compile(r"[*_`#~>|]+")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def speakable(fragment: str) -> str:
    """A token or fragment without markdown emphasis, headings, code ticks, tables or link targets."""
    return _MARKUP.sub("", _LINK.sub(r"\1", fragment))
