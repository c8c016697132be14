"""WikiText-2 (Merity et al. 2016): Wikipedia articles as near-raw text.

The files are the *tokenised* release: words split from punctuation by spaces, numbers split as
"1 @,@ 000", rare words replaced by `<unk>`, headings written " = = Title = = ". `detokenise` undoes the
spacing with the usual WikiText rules (those of Megatron-LM's and lm-evaluation-harness's WikiText tasks);
`<unk>` stays, as no rule can restore the word it replaced. Articles are split at top-level headings
(" = Title = "), so that a statistics sequence never spans two articles, as ROME's one-article-per-sequence
Wikipedia samples do.

The validation split feeds the second-moment statistics; the test split is reserved for perplexity and
must never be used for statistics (`VALIDATION` / `TEST` name them).
"""

from __future__ import annotations

import re
from pathlib import Path

from kepitfalls.data.errors import InvalidFileError

VALIDATION = "valid.txt"
TEST = "test.txt"

_TITLE = re.compile(r"^ = [^=].* = $")
_SPACED = [
    (" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."),
    (" : ", ": "), (" ; ", "; "), (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", "),
    ("( ", "("), (" )", ")"), ("[ ", "["), (" ]", "]"), ("{ ", "{"), (" }", "}"),
    ("= = = =", "===="), ("= = =", "==="), ("= =", "=="),
    (" 's", "'s"), (" n't", "n't"), (" 're", "'re"), (" 've", "'ve"), (" 'll", "'ll"), (" 'd", "'d"), (" 'm", "'m"),
    (" " + chr(176) + " ", chr(176)), (" / ", "/"),
]
_QUOTED = re.compile(r'" ([^"\n]*?) "')


def detokenise(text: str) -> str:
    """Near-raw text from WikiText's tokenised form (spacing only; `<unk>` kept)."""
    for spaced, joined in _SPACED:
        text = text.replace(spaced, joined)
    text = _QUOTED.sub(r'"\1"', text)
    text = re.sub(r" *\n *", "\n", text)
    return text.strip()


def load_articles(path: Path | str) -> list[str]:
    """The file's articles in order, each detokenised; a file with no article heading is an error."""
    path = Path(path)
    articles: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if _TITLE.match(line):
            articles.append([])
        if articles:
            articles[-1].append(line)
    if not articles:
        raise InvalidFileError(path, "no WikiText article heading (' = Title = ') found")
    return [detokenise("\n".join(lines)) for lines in articles]
