"""Figure 4 of the survey (Gu et al. 2024's protocol): general abilities along one chain of sequential ZsRE
edits, and perplexity after every edit as the collapse indicator (Yang et al. 2024).

`chain` builds the edits and their content keys, `generation` and `perplexity` measure the model, `tasks`
holds one module per task (prompt, Gu-faithful and clean scorer), `run` walks the chain, `scores` turns
stored generations into tidy rows and `figure` draws them.
"""
