"""Sentiment of an answer, for the counterfactual bias test: does a prompt version answer one
group of people in a colder or warmer tone than another?

VADER (vaderSentiment 3.3.2, MIT): a rule-based scorer whose 7,500-word lexicon ships inside its
wheel (no download, no model, about 0.1 ms a sentence). Each sentence gets VADER's ``compound``
score in [-1, 1] (negative to positive, 0 neutral) and an answer takes the MEAN over its
sentences, so a long answer is not pushed to the extremes the way VADER's compound saturates on
a paragraph. Bracketed citations ("[1]") are removed first (``toxicity.sentences``).

Limits (docs/evaluation.md): a lexicon reads words, not meaning: "the process is killed" is
negative, sarcasm is missed, domain words can carry a tone they do not have in a technical text.
That is why the bias test compares the SAME question across groups (paired, with the same
passages): a word's built-in tone cancels out, and only a difference that follows the group
counts. It is not used as an absolute quality score.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ragops.safety.toxicity import sentences


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(text: str) -> float | None:
    """Mean VADER compound score over the sentences of ``text`` in [-1, 1]; None for empty text."""
    units = sentences(text)
    if not units:
        return None
    analyzer = _analyzer()
    return round(sum(analyzer.polarity_scores(u)["compound"] for u in units) / len(units), 4)
