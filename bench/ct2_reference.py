"""CTranslate2 as a second generation reference: the same BART, converted, decoding the same token ids.

CTranslate2 (a C++ inference engine) converts a saved Hugging Face BART with its `TransformersConverter`.
The converter wants a tokenizer only for the vocabulary and the special tokens, and the Translator takes
tokens as strings, so a synthetic vocabulary stands in for both: id i is the string `w<i>`, except the
project's special ids (pad 0, unk 1, bos 2, eos 3). Ids go in as strings and come back as ids, so all
engines decode exactly the same sources.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from pathlib import Path

import torch

SPECIAL_TOKENS = {0: "<pad>", 1: "<unk>", 2: "<s>", 3: "</s>"}  # docs/architecture.md special ids


class SyntheticVocabulary:
    """The part of a Hugging Face tokenizer that CTranslate2's BART converter reads, for ids 0..size-1."""

    bos_token, eos_token, unk_token = SPECIAL_TOKENS[2], SPECIAL_TOKENS[3], SPECIAL_TOKENS[1]

    def __init__(self, size: int) -> None:
        self.tokens = [SPECIAL_TOKENS.get(i, f"w{i}") for i in range(size)]
        self.ids = {token: i for i, token in enumerate(self.tokens)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.ids)

    def convert_ids_to_tokens(self, index: int) -> str:
        return self.tokens[index]


def _converter_class():
    from ctranslate2.converters import TransformersConverter

    class SyntheticVocabularyConverter(TransformersConverter):
        """TransformersConverter with the synthetic vocabulary instead of a saved tokenizer."""

        def __init__(self, model_dir: Path, vocabulary: SyntheticVocabulary) -> None:
            super().__init__(str(model_dir))
            self.vocabulary = vocabulary

        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return self.vocabulary

        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            # CTranslate2's BART loader reads mBART's `normalize_before`, which BartConfig lacks since
            # transformers 4.4x; plain BART is post-norm.
            model.config.normalize_before = getattr(model.config, "normalize_before", False)
            return model

    return SyntheticVocabularyConverter


def convert_bart(model: torch.nn.Module, output_dir: Path) -> Path:
    """Save `model` (a BartForConditionalGeneration) and convert it into a CTranslate2 model folder."""
    with tempfile.TemporaryDirectory(prefix="bench-bart-") as saved:
        model.save_pretrained(saved)
        vocabulary = SyntheticVocabulary(model.config.vocab_size)
        _converter_class()(Path(saved), vocabulary).convert(str(output_dir), force=True)
    return output_dir


def usable_compute_types(wanted: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The wanted compute types this CPU supports, and a reason for each one it does not."""
    import ctranslate2

    supported = ctranslate2.get_supported_compute_types("cpu")
    usable = [t for t in wanted if t in supported]
    skipped = {
        t: f"not supported by CTranslate2 {ctranslate2.__version__} on this CPU (supported: "
        f"{', '.join(sorted(supported))})"
        for t in wanted
        if t not in supported
    }
    return usable, skipped


class CT2Generator:
    """A converted model on the CPU with one compute type; decodes id tensors into id lists."""

    def __init__(self, model_dir: Path, *, vocab_size: int, compute_type: str, threads: int) -> None:
        import ctranslate2

        self.vocabulary = SyntheticVocabulary(vocab_size)
        self.translator = ctranslate2.Translator(
            str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads, inter_threads=1
        )

    def generate(self, input_ids: torch.Tensor, *, num_beams: int, new_tokens: int) -> list[list[int]]:
        """Best hypothesis per source, forced to exactly `new_tokens` tokens (decoder start not included)."""
        tokens = self.vocabulary.tokens
        source = [[tokens[i] for i in row] for row in input_ids.tolist()]
        results = self.translator.translate_batch(
            source,
            max_batch_size=len(source),  # one batch, as the torch engines get it
            beam_size=num_beams,
            num_hypotheses=1,
            min_decoding_length=new_tokens,
            max_decoding_length=new_tokens,
            length_penalty=1.0,
        )
        ids = self.vocabulary.ids
        return [[ids[t] for t in result.hypotheses[0]] for result in results]


class CT2Process:
    """A `CT2Generator` served by a child process, with the same `generate`.

    CTranslate2 ships its own OpenMP runtime. Once its threads have run in a process, torch's small parallel
    operations there stay slower for good (measured: gelu on 64 x 1024 25 -> 73 us, a 64 x 256 x 1024 matmul
    221 -> 321 us; ours and Hugging Face's generation 20-30% slower). In a child process it disturbs nobody,
    and the parent waits while it decodes, so the engines still run in turn."""

    def __init__(self, model_dir: Path, *, vocab_size: int, compute_type: str, threads: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        options = {"vocab_size": vocab_size, "compute_type": compute_type, "threads": threads}
        self._process = context.Process(
            target=_serve, args=(child_conn, str(model_dir), options), daemon=True
        )
        self._process.start()
        child_conn.close()
        self._call("ready")

    def _call(self, request: object) -> object:
        self._conn.send(request)
        status, value = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"CTranslate2 child process: {value}")
        return value

    def generate(self, input_ids: torch.Tensor, *, num_beams: int, new_tokens: int) -> list[list[int]]:
        return self._call((input_ids.tolist(), num_beams, new_tokens))

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(None)
            self._process.join(timeout=30)
        self._conn.close()


def _serve(conn, model_dir: str, options: dict) -> None:
    """The child process of `CT2Process`: one request at a time until None."""
    try:
        generator = CT2Generator(Path(model_dir), **options)
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", repr(err)))
        return
    while (request := conn.recv()) is not None:
        if request == "ready":
            conn.send(("ok", None))
            continue
        ids, num_beams, new_tokens = request
        try:
            conn.send(
                ("ok", generator.generate(torch.tensor(ids), num_beams=num_beams, new_tokens=new_tokens))
            )
        except Exception as err:  # noqa: BLE001
            conn.send(("error", repr(err)))
