"""How sub-word pieces form words, per tokenizer family.

Two families exist among LLMLingua-2 checkpoints: a marker at the *start* of a word's first piece
(SentencePiece "▁", as in XLM-RoBERTa) and a marker on *continuation* pieces (WordPiece "##", as in
multilingual BERT). The family is detected from the tokenizer (see ``lingua2_batch.model.tokenizer_info``),
never from the model's name.
"""

from __future__ import annotations

import string
from dataclasses import dataclass


@dataclass(frozen=True)
class WordRules:
    marker: str
    marker_starts_word: bool  # True: "▁word"; False: "word" + "##piece"

    @property
    def family(self) -> str:
        return "sentencepiece" if self.marker_starts_word else "wordpiece"

    def pure(self, token: str) -> str:
        """The piece without its marker. ``lstrip`` of the marker's characters, exactly as the reference."""
        return token.lstrip(self.marker)

    def reference_begins_word(self, token: str, forced_pieces: frozenset[str]) -> bool:
        """llmlingua 0.2.2's ``is_begin_of_new_word``, quirks included: for the start-marker family a token
        that is any *substring* of ``string.punctuation`` (e.g. "()" or "") begins a word."""
        if self.marker_starts_word:
            if token in string.punctuation or token in forced_pieces:
                return True
            return token.startswith(self.marker)
        if token.lstrip(self.marker) in forced_pieces:
            return True
        return not token.startswith(self.marker)

    def begins_word(self, token: str) -> bool:
        """The rule for the extractive mode: a marker, or a piece made only of punctuation."""
        if self.marker_starts_word:
            return token.startswith(self.marker) or (token != "" and all(c in string.punctuation for c in token))
        return not token.startswith(self.marker)


SENTENCEPIECE = WordRules(marker="▁", marker_starts_word=True)
WORDPIECE = WordRules(marker="##", marker_starts_word=False)
