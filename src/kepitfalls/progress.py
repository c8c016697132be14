"""Progress of the long loops (edits, evaluations): done / total, the current item, rate and ETA, on stderr.

Shown only on a terminal: in a log file, a CI run or under `dvc repro` redirected, the bar would be noise.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Iterator, Sized, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, label: Callable[[T], str] | None = None) -> Iterator[T]:
    """Yield `items`, with a bar naming the current one (`label(item)`) while it is being worked on."""
    total = len(items) if isinstance(items, Sized) else None
    with tqdm(total=total, desc=desc, unit="case", file=sys.stderr, disable=not sys.stderr.isatty(), leave=True) as bar:
        for item in items:
            if label is not None:
                bar.set_postfix_str(label(item), refresh=False)
            yield item
            bar.update()
