"""What the pipeline prepares before any edit: context templates, the statistics corpus, second moments."""
