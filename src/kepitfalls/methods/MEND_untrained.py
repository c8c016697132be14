"""The control row of MEND: the same edit through the editor as initialised, never trained.

Its network is the identity (the zero-initialised U of every layer) and its edit learning rates stay at
`edit_lr`; only the normalisation statistics are gathered, over the same training edits MEND trains on
(they depend on the unedited model alone, so they equal the trained editor's). An edit is then
edit_lr · Σ_t δ̂_t x̂_tᵀ of the standardised gradient factors. What separates the MEND row from this one is
what training bought.
"""

from __future__ import annotations

from kepitfalls.methods.MEND import MEND, MENDHparams


def describe(hparams: MENDHparams) -> str:
    """One sentence for table footnotes."""
    return f"MEND's identity-initialised editor, untrained (statistics over {hparams.train_steps} training edits)"


class MENDUntrained(MEND):
    """MEND with `trains` off: `prepare` gathers the statistics and validates, without an optimiser step."""

    name = "MEND_untrained"
    trains = False
