"""Names the Figure-4 rows use, importable without torch (the report stage draws the figure from files)."""

from __future__ import annotations

#: Task names as in `general.tasks`, in the figure's panel order, with the metric each panel plots (the
#: survey's: EM, accuracy, solve rate, ROUGE).
MAIN = {"nq": "exact_match", "sst2": "accuracy", "gsm8k": "solve_rate", "samsum": "rouge_mean_f1"}
TASKS = tuple(MAIN)
#: `gu` reproduces Gu et al.'s scoring on the whole decoded sequence; `clean` reads the new tokens only.
SCORERS = ("gu", "clean")
ME_PPL, WIKITEXT = "me_ppl", "wikitext2"
