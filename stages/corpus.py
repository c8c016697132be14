"""DVC stage `corpus`: the token ids the statistics are estimated on (`stats.corpus` in params).

Default: the WikiText-2 validation split (`data/raw/wikitext2`); options: `self-sampled`, `wikipedia`.
"""

from __future__ import annotations

from kepitfalls import layout
from kepitfalls.prepare.corpus import (
    SELF_SAMPLED,
    SELF_SAMPLED_VERSION,
    WIKIPEDIA_DATASET,
    WIKITEXT2,
    rows_for,
    sample_corpus,
    wikipedia_corpus,
    wikitext_corpus,
)
from kepitfalls.params import load_params
from kepitfalls.runtime import configure, load_current_model
from kepitfalls.tensorfile import save_tensors

if __name__ == "__main__":
    params = load_params()
    configure(params)
    corpus = params.stats.corpus
    name, length, seed = corpus.name, corpus.length, corpus.seed
    lm = load_current_model(params)
    rows = rows_for(corpus.tokens, length)
    if name == WIKITEXT2:
        tokens, version = wikitext_corpus(lm.tokenizer, layout.raw_root() / WIKITEXT2, corpus.tokens, length, seed)
    elif name == SELF_SAMPLED:
        tokens = sample_corpus(lm, rows, length, seed, corpus.batch_size, corpus.start_text)
        version = f"{SELF_SAMPLED}-v{SELF_SAMPLED_VERSION}"
    else:
        tokens = wikipedia_corpus(lm.tokenizer, rows, length, seed)
        version = "/".join(WIKIPEDIA_DATASET)
    key = {"model": lm.identity, "corpus": version, "rows": tokens.shape[0], "length": length, "seed": seed}
    save_tensors(layout.corpus_file(params.model), {"input_ids": tokens}, key)
    print(f"{name}: {tokens.numel()} tokens in {tokens.shape[0]} sequences of {length}")
