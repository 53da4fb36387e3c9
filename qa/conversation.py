"""Follow-up questions: when a question leans on the one before it, and which earlier question that is."""

from __future__ import annotations

import re
from typing import Sequence

# Words that point back into the conversation ("When will *it* be ready?", "Wie zei *dat*?").
_POINTING_BACK = {
    "it", "its", "they", "them", "their", "this", "that", "these", "those", "there", "he", "she", "him",
    "her", "his", "same", "also", "else", "then",
    "het", "hij", "zij", "ze", "hem", "haar", "hun", "die", "dat", "deze", "dit", "daar", "daarvan",
    "daarover", "ervan", "erover", "er", "ook", "zelfde", "toen",
}
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_FOLLOW_UP_WORDS = 12
"""Longer questions carry their own subject; they are searched on their own."""


def is_follow_up(question: str) -> bool:
    """True for a short question with a word that points back to something said before."""
    words = [w.lower() for w in _WORD.findall(question)]
    return 0 < len(words) <= MAX_FOLLOW_UP_WORDS and any(w in _POINTING_BACK for w in words)


def context_for(question: str, history: Sequence[str]) -> str:
    """The earlier question a follow-up leans on, or "" when the question stands on its own."""
    if not is_follow_up(question):
        return ""
    earlier = [h for h in history if isinstance(h, str) and h.strip()]
    return earlier[-1] if earlier else ""
