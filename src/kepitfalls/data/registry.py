"""Where every benchmark file comes from and what its bytes must hash to.

Names equal the folder names of the benchmark mirror (`../shared/benchmarks`), and each file's relative
path equals its path inside that folder, so a mirror copy and a download land in the same place.
Required files are the ones the mirror holds; optional ones (absent from the mirror) are fetched only on
request. Where the mirror copy was taken from a public repository, the URL pins that repository's commit so
the download has exactly the mirrored bytes; the original distribution is named in docs/BENCHMARKS.md.
`sha256=None` means no hash was ever published: the first download's hash goes into the manifest (and DVC's
lock pins it from then on).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FileSpec:
    """One file of a benchmark: mirror-relative path, public URL, expected sha256, zip member if any."""

    relpath: str
    url: str
    sha256: str | None
    member: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    files: tuple[FileSpec, ...]

    def files_to_fetch(self, include_optional: bool) -> tuple[FileSpec, ...]:
        return tuple(f for f in self.files if include_optional or not f.optional)


def _github(repo: str, commit: str, path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path.replace(' ', '%20')}"


_KNOWLEDGE_SPREAD = ("Jometeorie/KnowledgeSpread", "51d7402617c2e52bde0dc11b76e400c3725a181a")
_EASYEDIT_FORK = ("fasdkljfds/EasyEdit", "b29e04beb5760accec1c4ed520f1e9382cf3251c")
_INSTRUCTED = ("sev777/InstructED", "abaad6e39320d8d84067a08b41a8aa20a5b647a7")
_MQUAKE = ("princeton-nlp/MQuAKE", "fb43dadc2d8cd19d08ce81c63d957b59deb3f3cd")
_MQUAKE_HARD = (
    "dominic-simon/KnowledgeEditingforMulti-HopQuestionAnsweringUsingSemanticAnalysis",
    "a42cb0d3c4450442b566f4e6592f71db3f9d74b6",
)
_PITFALLS = ("zjunlp/PitfallsKnowledgeEditing", "0cf7acaf27205e99b105991c4c89c16076125393")
_ROME_DSETS = "https://rome.baulab.info/data/dsets"
# EasyEdit's "editing-data" bundle (data.zip on Google Drive, linked from the zjunlp/EasyEdit README).
_EASYEDIT_BUNDLE = "https://drive.google.com/uc?export=download&id=1WRo2SqqgNtZF11Vq0sF5nL_-bHi18Wi4"

_COUNTERFACT = Benchmark(
    "counterfact",
    "CounterFact (Meng et al. 2022): EasyEdit splits of all 21,919 cases; ROME's original file optional",
    (
        FileSpec("easyedit/counterfact-train.json", _github(*_KNOWLEDGE_SPREAD, "data/counterfact/counterfact-train.json"),
                 "f7d443ffb0c5da6cbe816cdac45281ccb3f204b8a840f00d07a4aafa949bcd76"),
        FileSpec("easyedit/counterfact-val.json", _github(*_KNOWLEDGE_SPREAD, "data/counterfact/counterfact-val.json"),
                 "42b44645471020a9419d183deb9e113e82941380046861770ea0083dabd13982"),
        FileSpec("easyedit/counterfact-edit.json", _github(*_EASYEDIT_FORK, "data/KnowEdit/counterfact-edit.json"),
                 "20c225e6299b3c5b2c569bd9103aa212806e0d1e6e0c307de5c379773979b967"),
        FileSpec("counterfact.json", f"{_ROME_DSETS}/counterfact.json", None, optional=True),
    ),
)

_PORTABILITY = Benchmark(
    "easyedit_portability",
    "Yao et al. 2023 portability sets (EasyEdit bundle layout); their locality sets optional",
    (
        FileSpec("portability/One Hop/counterfact_portability_gpt4.json",
                 _github(*_INSTRUCTED, "data/portability/One_Hop/counterfact_portability_gpt4.json"),
                 "9633c56054870e7356f6ba484d11d338f1511fd1aba1a06525ab167ccf72a15e"),
        FileSpec("portability/One Hop/zsre_mend_eval_portability_gpt4.json",
                 _github(*_INSTRUCTED, "data/portability/One_Hop/zsre_mend_eval_portability_gpt4.json"),
                 "0cf155da229b2eccae19fcfe5f7a09523363d357f5f15508d1521f495ad5ecd9"),
        FileSpec("portability/Subject Replace/counterfact_subject_replace.json",
                 _github(*_INSTRUCTED, "data/portability/Subject Replace/counterfact_subject_replace.json"),
                 "36a81b8dd513680743347d94acd00fd5f3e25baafbe6ebe951e16ff0f36f9b9d"),
        FileSpec("portability/Subject Replace/zsre_subject_replace.json",
                 _github(*_INSTRUCTED, "data/portability/Subject Replace/zsre_subject_replace.json"),
                 "bcb6d394b390329828898799220916ebc0ae95617c8c94fc60bf527692e41740"),
        FileSpec("portability/Inverse Relation/zsre_inverse_relation.json",
                 _github(*_INSTRUCTED, "data/portability/Inverse Relation/zsre_inverse_relation.json"),
                 "34d07e57e0b8273f9418eb1925c38ba0294d94b986f5b291df41d968b0fe06e3"),
        FileSpec("locality/Other Attribution/counterfact_other_attribution.json", _EASYEDIT_BUNDLE, None,
                 member="editing-data/locality/Other Attribution/counterfact_other_attribution.json", optional=True),
        FileSpec("locality/Distracting Neighbor/counterfact_distracting_neighbor.json", _EASYEDIT_BUNDLE, None,
                 member="editing-data/locality/Distracting Neighbor/counterfact_distracting_neighbor.json", optional=True),
    ),
)

_ZSRE = Benchmark(
    "zsre",
    "zsRE in the MEND format (1k train subset) and KnowEdit's test file; full splits optional",
    (
        FileSpec("zsre_mend_train-1k.json", _github(*_KNOWLEDGE_SPREAD, "data/zsre/zsre_mend_train-1k.json"),
                 "e62596101d8ed551889c26c0d2a5277f92eaef3b14416d8eaee39b04a244ab60"),
        FileSpec("knowedit_derived/ZsRE-test-all.json", _github(*_EASYEDIT_FORK, "data/KnowEdit/benchmark_ZsRE_ZsRE-test-all.json"),
                 "d70ff1f69ddcac101bbe9c6f1d6ee3918bdac96f145d937e90fbbb02fcf85fab"),
        FileSpec("zsre_mem_eval.json", f"{_ROME_DSETS}/zsre_mem_eval.json", None, optional=True),
        FileSpec("zsre_mem_train.json", f"{_ROME_DSETS}/zsre_mem_train.json", None, optional=True),
        FileSpec("zsre_mend_train_10000.json", _EASYEDIT_BUNDLE, None,
                 member="editing-data/zsre/zsre_mend_train_10000.json", optional=True),
    ),
)

_MQUAKE_PROMPTS = (
    ("prompts/MeLLo-prompt.txt", "022f97a82c8d889a7fa2e945d636f58a124de57160866e7958170aba8b17e937"),
    ("prompts/multihop-cot-prompts.txt", "f74ad1cca21841d83a63b868d2e694c164aaaf8636a659e193fc99f41005cafa"),
    ("prompts/multihop-prompts.txt", "1d6f48038599dec1ea63080c07f946f47f57c3227a3428b0efdca88cf566de17"),
    ("prompts/rel-prompts.json", "5186c6bd07a60d3f561b17200c1e86c5f21215bbc3883d9a9c99d57da7871910"),
    ("prompts/templates/cloze_templates.json", "2b06da99237d67e40844e727efb24795d8990d99a00868d95c4276ff7e1c7d84"),
    ("prompts/templates/question_templates.json", "d3a5421ce3cbd6d51e77e3b854d7fd13b98f161c0d54daa597456d804a170d96"),
)
_MQUAKE_OFFICIAL = ("MQuAKE-CF-3k-v2.json", "MQuAKE-CF-3k.json", "MQuAKE-T.json", "MQuAKE-CF.json")

_MQUAKE_BENCH = Benchmark(
    "mquake",
    "MQuAKE (Zhong et al. 2023): official prompts, the 429-case MQuAKE-hard subset; official data sets optional",
    (
        FileSpec("derived/MQuAKE-hard.json", _github(*_MQUAKE_HARD, "datasets/MQuAKE-HARD.json"),
                 "fc78dc7bec4625d3ce6e2923acae7f1920691b0b23e663182bf799f2856f2a11"),
        *(FileSpec(rel, _github(*_MQUAKE, rel), sha) for rel, sha in _MQUAKE_PROMPTS),
        *(FileSpec(f"datasets/{name}", _github(*_MQUAKE, f"datasets/{name}"), None, optional=True) for name in _MQUAKE_OFFICIAL),
    ),
)

_PITFALLS_SHA = {
    "GPT-J": {
        "composite_edit.json": "1f108f707668c973f8c4a498a2200174b4bca71a3dfc4f8779de399bd1701afc",
        "conflict_prompts.json": "6072b8fe90107f8949ee79fd09a63e3877983b978a604b1dd534f2dc7c5f55fa",
        "coverage_edit.json": "2122e65f4d5f9fa62dcec59c9010f6aaf10bc297c89ae51cdb0e1c1e8ccab0ac",
        "easy.json": "ba6e7335c3c3f5b096d2dd986a16606d9d859666ab2563cc11b26b8215ce6ec2",
        "hard.json": "50ef6e5547898f9e97e85c255458a8928cccef378b44520faff401b876766253",
        "reverse_edit.json": "1b2b967db5a135947e4c56bd3ff14f942fa4aa18f1532e842d0195dcf40bc78e",
        "round_prompts.json": "577a7b024c73c06c985fab5838010b88b941105fe8285c21b23a44fdc4286939",
    },
    "GPT2-XL": {
        "composite_edit.json": "cede1cca203ae223ba8fe1b7b784ac5a18fe8da2a48a014e354e61165cdfc42c",
        "conflict_prompts.json": "6072b8fe90107f8949ee79fd09a63e3877983b978a604b1dd534f2dc7c5f55fa",
        "coverage_edit.json": "2122e65f4d5f9fa62dcec59c9010f6aaf10bc297c89ae51cdb0e1c1e8ccab0ac",
        "easy.json": "9e334997a8ee9a1f7948507f5eaad84462d09f2ce9ff64c76c0a12debcd0aa7b",
        "hard.json": "0919ac18cca9ab5c9ec39ae8d6d080123a5a8b1fac28813e9d30ca9df3a96d59",
        "reverse_edit.json": "1b2b967db5a135947e4c56bd3ff14f942fa4aa18f1532e842d0195dcf40bc78e",
        "round_prompts.json": "577a7b024c73c06c985fab5838010b88b941105fe8285c21b23a44fdc4286939",
    },
}

_PITFALLS_BENCH = Benchmark(
    "pitfalls_conflictedit_roundedit",
    "ConflictEdit and RoundEdit (Li et al. 2024), GPT-J and GPT2-XL files",
    tuple(
        FileSpec(f"{model}/{file}", _github(*_PITFALLS, f"data/{model}/{file}"), sha)
        for model, files in _PITFALLS_SHA.items()
        for file, sha in files.items()
    ),
)

_NQ = Benchmark(
    "natural_questions",
    "NQ-open dev set (Lee et al. 2019)",
    (
        FileSpec("NQ-open.dev.jsonl",
                 _github("google-research-datasets/natural-questions", "fb26a3073b1fe636c97302890a27b491d6530130",
                         "nq_open/NQ-open.dev.jsonl"),
                 "f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616"),
    ),
)

_SST2 = Benchmark(
    "sst2",
    "SST-2 GLUE dev set (labelled)",
    (
        FileSpec("dev.tsv", "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
                 "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", member="SST-2/dev.tsv"),
    ),
)

_GSM8K = Benchmark(
    "gsm8k",
    "GSM8K test set (Cobbe et al. 2021)",
    (
        FileSpec("test.jsonl",
                 _github("openai/grade-school-math", "3101c7d5072418e28b9008a6636bde82a006892c",
                         "grade_school_math/data/test.jsonl"),
                 "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14"),
    ),
)

_SAMSUM = Benchmark(
    "samsum",
    "SAMSum test set, JSON lines (Gliwa et al. 2019)",
    (
        FileSpec("test.jsonl", _github("CoI-p/CoI", "c1cfeb2e827480f25292346d74752ae8acba638f", "data/samsum/test.jsonl"),
                 "14d06006463faf706db8063d08f1349654898eabb6fae704e0cf8772e4c17fbd"),
    ),
)

_PIQA_REPO = ("ybisk/ybisk.github.io", "21edab439af693b961be2f069e8690a88d3b4e37")
_PIQA = Benchmark(
    "piqa",
    "PIQA validation set (Bisk et al. 2020): Yao et al.'s Other-Task locality set",
    (
        FileSpec("valid.jsonl", _github(*_PIQA_REPO, "piqa/data/valid.jsonl"),
                 "93503cc97c679e459b065c3d13e848282e44b2a25213985bed3e5d458abef72d"),
        FileSpec("valid-labels.lst", _github(*_PIQA_REPO, "piqa/data/valid-labels.lst"),
                 "b4192dc3a2a0363d9d60ccf79800cbbe2f32ebb17726efdde6970e0b8131bceb"),
    ),
)

_WIKITEXT_REPO = ("pytorch/examples", "77f55b912142e11fcfdf5b530231fb9c52f181e8")
_WIKITEXT2 = Benchmark(
    "wikitext2",
    "WikiText-2 (Merity et al. 2016), tokenised validation and test splits: statistics on one, perplexity on the other",
    (
        FileSpec("valid.txt", _github(*_WIKITEXT_REPO, "word_language_model/data/wikitext-2/valid.txt"),
                 "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"),
        FileSpec("test.txt", _github(*_WIKITEXT_REPO, "word_language_model/data/wikitext-2/test.txt"),
                 "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"),
    ),
)

_ME_PPL_REPO = ("WanliYoung/Collapse-in-Model-Editing", "678beddf656385b660281de93a6650bb1b485ee9")
_ME_PPL = Benchmark(
    "me_ppl",
    "ME-PPL (Yang et al. 2024): perplexity sentences, the collapse indicator after sequential edits",
    (
        FileSpec("ME-PPL_50.json", _github(*_ME_PPL_REPO, "data/ME-PPL/ME-PPL_50.json"),
                 "55f3b951d2c4287b90d9e511f256efb9d47461f0da408a17dac5ffcef685c4e4"),
        FileSpec("ME-PPL_1k.json", _github(*_ME_PPL_REPO, "data/ME-PPL/ME-PPL_1k.json"),
                 "71e29fc5daf443b35ec16c8a9e91e1f4398b5b84ca7c25393639c066b65b5afb"),
    ),
)

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (_COUNTERFACT, _PORTABILITY, _ZSRE, _MQUAKE_BENCH, _PITFALLS_BENCH, _NQ, _SST2, _GSM8K, _SAMSUM, _PIQA,
              _WIKITEXT2, _ME_PPL)
}


def benchmark_names() -> list[str]:
    return sorted(BENCHMARKS)


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(benchmark_names())}") from None
