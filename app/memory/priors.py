"""What a memory's form says about its worth as an answer: questions and very short memories rank a little
lower.

A stored question ("Did you finish it?", "Any ideas for a quick lunch?") shares the words of a later query
about the same thing but rarely holds the answer -- the memory that answers it does; and a memory of a few
words ("Wow, congrats!", "Same here") rarely states a fact. Each hit's own fused score is multiplied by
`own_weight`: ``(1 - question_penalty * asks(text)) * (1 - short_penalty * brevity(text))``. Its thread
neighbours still get their share of its unpenalised score (`app.memory.neighbours`), so the answer next to a
question gains.

Measured (docs/benchmarks.md, "LoCoMo"): among the top 5 hits of LoCoMo questions, a third of those that are
not evidence end in a question mark against a tenth of the evidence, and evidence is longer (median 34 vs 24
words); on the synthetic set no evidence memory is a question. Both sets gain.
"""

from __future__ import annotations

def asks(text: str) -> float:
    """1.0 when the last of the text's sentence marks (``.``, ``!``, ``?``) is a question mark -- closing
    quotes or a trailing clause without end punctuation do not hide it -- else 0.0."""
    q = text.rfind("?")
    return 1.0 if q >= 0 and q > text.rfind(".") and q > text.rfind("!") else 0.0


def brevity(text: str, words: int) -> float:
    """How far the text falls short of ``words`` words (separated by white space): ``1 - n / words``, 0
    from ``words`` words on."""
    if words <= 0:
        return 0.0
    if text.count(" ") >= words:  # surely long enough: no need to split
        return 0.0
    return max(0.0, 1.0 - len(text.split()) / words)


def own_weight(text: str, question_penalty: float, short_penalty: float, short_words: int) -> float:
    w = 1.0
    if question_penalty > 0:
        w *= 1.0 - question_penalty * asks(text)
    if short_penalty > 0:
        w *= 1.0 - short_penalty * brevity(text, short_words)
    return w
