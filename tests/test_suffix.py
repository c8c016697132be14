"""SuffixStack, the one runner that re-runs blocks on a prompt's suffix with its prefix's keys/values cached
(ROME/MEMIT's v*/z* optimisation, GRACE's training passes, KN's scaled attribution passes)."""

from __future__ import annotations

import pytest
import torch

from fixtures_models import single_thread, tiny_lm  # noqa: F401
from kepitfalls.hidden.hooks import capture
from kepitfalls.hidden.suffix import SuffixStack
from kepitfalls.models.adapters import num_layers
from kepitfalls.models.loading import LoadedModel
from kepitfalls.tokens import Batch


def _plain(lm: LoadedModel, ids: list[int]) -> torch.Tensor:
    """Final-normed hidden states of one prompt, from one ordinary forward pass (the last of `hidden_states`
    is taken after the final norm)."""
    return lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1]


@torch.no_grad()
def test_suffix_from_any_block_matches_a_plain_pass(tiny_lm: LoadedModel) -> None:
    """From every block of a whole-model stack, the last token's residual (copied into rows) gives the plain
    pass's final hidden state; the rows are the same copy; the one-token suffix runs without a mask."""
    ids = tiny_lm.tokenizer("The Eiffel Tower is located in")["input_ids"]
    depth = num_layers(tiny_lm.model)
    stack = SuffixStack(tiny_lm, [ids], [len(ids) - 1], 0, depth)
    assert stack.mask_s is None
    plain = _plain(tiny_lm, ids)[0, -1]
    batch = Batch.from_ids([ids], tiny_lm.tokenizer.pad_token_id, tiny_lm.model.device)
    for block in range(depth):
        residual, _ = capture(tiny_lm, tiny_lm.arch.layer.format(block), batch)
        out = stack.hidden(residual[:, -1:].expand(3, -1, -1), block)
        assert out.shape == (3, 1, plain.shape[-1])
        assert torch.equal(out[0], out[2])
        torch.testing.assert_close(out[1, 0], plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stack.hidden()[0, 0], plain, rtol=1e-5, atol=1e-5)  # its own suffix, from block 0


@torch.no_grad()
def test_blocks_one_at_a_time_give_the_whole_stack_before_its_final_norm(tiny_lm: LoadedModel) -> None:
    """KN's sweep steps through `block` one block at a time: the blocks' outputs chained, then the final norm,
    are the stack's whole pass; a block outside the stack (whose cache it does not reset) is refused."""
    ids = tiny_lm.tokenizer("The Eiffel Tower is located in")["input_ids"]
    depth = num_layers(tiny_lm.model)
    stack = SuffixStack(tiny_lm, [ids], [len(ids) - 1], 1, depth)
    state = stack.suffix
    for block in range(1, depth):
        state = stack.block(state, block)
    final_norm = tiny_lm.model.get_submodule(tiny_lm.arch.final_norm)
    torch.testing.assert_close(final_norm(state), stack.hidden(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=f"block 0 is outside this stack's blocks 1..{depth - 1}"):
        stack.block(state, 0)


@torch.no_grad()
def test_suffixes_of_several_tokens_keep_their_mask(tiny_lm: LoadedModel) -> None:
    """Rows of different prefix and suffix lengths (ROME's case) are masked, and each matches its plain pass."""
    tok = tiny_lm.tokenizer
    sequences = [tok("The Eiffel Tower is in Paris")["input_ids"], tok("Danielle Darrieux speaks")["input_ids"]]
    split = [3, 2]
    stack = SuffixStack(tiny_lm, sequences, split, 1, num_layers(tiny_lm.model))
    assert stack.mask_s is not None
    hidden = stack.hidden()
    for row, (ids, k) in enumerate(zip(sequences, split)):
        torch.testing.assert_close(hidden[row, : len(ids) - k], _plain(tiny_lm, ids)[0, k:], rtol=1e-5, atol=1e-5)
