"""Textual inversion on tiny SD1/SDXL text encoders: triggers tokenize to new ids that carry the vectors, compel
expands multi-vector triggers, and the cached tokenizer and text encoder come out untouched."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compel")

from safetensors.torch import load_file

from invokeai_provider.models.testing import tiny
from invokeai_provider.models.patches.embeddings import (
    apply_embeddings,
    embedding_vectors,
    pad_trigger,
    trigger_names_in,
)

BOS, EOS, A, CAT = 49406, 49407, 320, 2368
VOCAB = 49408
PROMPT = "a <my-embedding> cat"


@pytest.fixture(scope="module")
def tmp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tiny-ti-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def clip(tmp_dir: Path) -> Callable[[str, str], tuple[Any, Any]]:
    """(tokenizer, text encoder) of a tiny model part, each model built once."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    loaded: dict[tuple[str, str], tuple[Any, Any]] = {}

    def get(base: str, suffix: str = "") -> tuple[Any, Any]:
        if (base, suffix) not in loaded:
            path = tmp_dir / base
            if not path.exists():
                tiny.build_sd_model(base, path)
            cls = CLIPTextModelWithProjection if suffix else CLIPTextModel
            loaded[base, suffix] = (
                CLIPTokenizer.from_pretrained(path / f"tokenizer{suffix}", local_files_only=True),
                cls.from_pretrained(path / f"text_encoder{suffix}", local_files_only=True).eval(),
            )
        return loaded[base, suffix]

    return get


def _hidden(text_encoder: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return text_encoder(torch.tensor([ids])).last_hidden_state


def _reference(text_encoder: Any, ids: list[int], rows: dict[int, torch.Tensor]) -> torch.Tensor:
    """Output of the *unpatched* encoder with the token embeddings at ``rows`` (position -> vector) overwritten."""

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for position, vector in rows.items():
            output[0, position] = vector
        return output

    handle = text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        return _hidden(text_encoder, [0 if i in rows else t for i, t in enumerate(ids)])
    finally:
        handle.remove()


class _State:
    """What must survive the block: tokenizer length and pieces, embedding module, matrix and config."""

    def __init__(self, tokenizer: Any, text_encoder: Any) -> None:
        self.module = text_encoder.get_input_embeddings()
        self.weight = self.module.weight.detach().clone()
        self.length, self.pieces = len(tokenizer), tokenizer(PROMPT).input_ids
        self.vocab_size = text_encoder.config.vocab_size

    def assert_restored(self, tokenizer: Any, text_encoder: Any) -> None:
        assert len(tokenizer) == self.length and tokenizer(PROMPT).input_ids == self.pieces
        assert text_encoder.get_input_embeddings() is self.module
        assert torch.equal(self.module.weight, self.weight)
        assert text_encoder.config.vocab_size == self.vocab_size


def test_trigger_names_in() -> None:
    prompt = "a <my-embedding> photo, <style.v2> and <my-embedding> again, <bad!name> <>"
    assert trigger_names_in(prompt) == ["my-embedding", "style.v2"]
    assert trigger_names_in("no triggers") == []
    assert pad_trigger("x", 0) == "<x>" and pad_trigger("x", 2) == "<x#2>"


def test_embedding_vectors_formats(tmp_dir: Path) -> None:
    v = torch.randn(2, 768)
    assert embedding_vectors({"emb_params": v}) is v
    assert embedding_vectors({"string_to_param": {"*": v}, "name": "x"}) is v
    assert embedding_vectors({"string_to_param.*": v}) is v
    assert embedding_vectors({"<cat-toy>": v[0]}).shape == (1, 768)  # diffusers: one 1-D vector
    sd1 = load_file(tiny.build_embedding("sd-1", tmp_dir / "e-sd1.safetensors", tokens=3))
    assert embedding_vectors(sd1).shape == (3, 768)
    sdxl = load_file(tiny.build_embedding("sdxl", tmp_dir / "e-sdxl.safetensors", tokens=2))
    assert embedding_vectors(sdxl, "clip_l").shape == (2, 768)
    assert embedding_vectors(sdxl, "clip_g").shape == (2, 1280)
    with pytest.raises(ValueError, match="target"):
        embedding_vectors(sdxl)
    with pytest.raises(ValueError, match="clip_g"):
        embedding_vectors(sd1, "clip_g")
    with pytest.raises(ValueError, match="unrecognised"):
        embedding_vectors({"a": v, "b": v})


def test_multi_vector_trigger_uses_its_vectors_and_everything_is_restored(clip) -> None:
    from compel import Compel

    tokenizer, text_encoder = clip("sd-1")
    state = _State(tokenizer, text_encoder)
    before = _hidden(text_encoder, state.pieces)
    vectors = torch.randn(3, 768, generator=torch.Generator().manual_seed(1))
    new = [VOCAB, VOCAB + 1, VOCAB + 2]
    with apply_embeddings(tokenizer, text_encoder, {"my-embedding": vectors}) as (patched, manager):
        assert patched(PROMPT).input_ids == [BOS, A, new[0], CAT, EOS]  # one token for the written trigger
        assert manager.expand_textual_inversion_token_ids_if_necessary([A, new[0], CAT]) == [A, *new, CAT]
        assert torch.equal(text_encoder.get_input_embeddings()(torch.tensor(new)), vectors)
        expanded = [BOS, A, *new, CAT, EOS]
        # compel, given the patched tokenizer and the manager, encodes exactly the expanded ids.
        compel = Compel(tokenizer=patched, text_encoder=text_encoder, textual_inversion_manager=manager)
        assert compel.conditioning_provider.get_token_ids([PROMPT], include_start_and_end_markers=True) == [expanded]
        with torch.no_grad():
            conditioning = compel(PROMPT)
        padded = expanded + [patched.pad_token_id] * (77 - len(expanded))
        torch.testing.assert_close(conditioning, _hidden(text_encoder, padded), rtol=0, atol=0)
    state.assert_restored(tokenizer, text_encoder)
    # The patched outputs equal the untouched encoder fed the vectors directly: the vectors are what reached it.
    reference = _reference(text_encoder, padded, {2: vectors[0], 3: vectors[1], 4: vectors[2]})
    torch.testing.assert_close(conditioning, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(reference, _hidden(text_encoder, [0 if i in (2, 3, 4) else t
                                                                for i, t in enumerate(padded)]))
    assert torch.equal(_hidden(text_encoder, state.pieces), before)


def test_single_vector_embeddings_need_no_expansion(clip) -> None:
    tokenizer, text_encoder = clip("sd-1")
    state = _State(tokenizer, text_encoder)
    one, two = torch.randn(1, 768), torch.randn(1, 768)
    with apply_embeddings(tokenizer, text_encoder, {"one": one, "Two": two}) as (patched, manager):
        ids = patched("<one> and <Two>").input_ids  # CLIP lowercases prompts; the added tokens follow
        assert ids == [BOS, VOCAB, patched.encode("and", add_special_tokens=False)[0], VOCAB + 1, EOS]
        assert manager.pad_tokens == {}
        assert manager.expand_textual_inversion_token_ids_if_necessary(ids[1:-1]) == ids[1:-1]
        assert torch.equal(text_encoder.get_input_embeddings().weight[VOCAB:], torch.cat([one, two]))
    state.assert_restored(tokenizer, text_encoder)


def test_sdxl_uses_clip_l_for_text_encoder_and_clip_g_for_text_encoder_2(clip, tmp_dir: Path) -> None:
    file = load_file(tiny.build_embedding("sdxl", tmp_dir / "sdxl-ti.safetensors", tokens=2, seed=5))
    for suffix, target in (("", "clip_l"), ("_2", "clip_g")):
        tokenizer, text_encoder = clip("sdxl", suffix)
        state = _State(tokenizer, text_encoder)
        vectors = embedding_vectors(file, target)
        with apply_embeddings(tokenizer, text_encoder, {"my-embedding": vectors}) as (patched, manager):
            first = patched(PROMPT).input_ids[2]
            ids = [first, *manager.pad_tokens[first]]
            torch.testing.assert_close(text_encoder.get_input_embeddings()(torch.tensor(ids)), vectors, rtol=0, atol=0)
        state.assert_restored(tokenizer, text_encoder)
        wrong = embedding_vectors(file, "clip_g" if target == "clip_l" else "clip_l")
        with pytest.raises(ValueError, match="wide"):
            with apply_embeddings(tokenizer, text_encoder, {"my-embedding": wrong}):
                pass
        state.assert_restored(tokenizer, text_encoder)


def test_restored_when_the_block_raises(clip) -> None:
    tokenizer, text_encoder = clip("sd-1")
    state = _State(tokenizer, text_encoder)
    with pytest.raises(RuntimeError, match="boom"):
        with apply_embeddings(tokenizer, text_encoder, {"my-embedding": torch.randn(2, 768)}):
            assert text_encoder.get_input_embeddings() is not state.module
            raise RuntimeError("boom")
    state.assert_restored(tokenizer, text_encoder)


def test_clashing_triggers_raise(clip) -> None:
    tokenizer, text_encoder = clip("sd-1")
    state = _State(tokenizer, text_encoder)
    with pytest.raises(ValueError, match="clashes"):  # the tokenizer lowercases: <Foo> is <foo>
        with apply_embeddings(tokenizer, text_encoder, {"foo": torch.randn(1, 768), "Foo": torch.randn(1, 768)}):
            pass
    state.assert_restored(tokenizer, text_encoder)


def test_no_embeddings_yields_the_tokenizer_itself(clip) -> None:
    tokenizer, text_encoder = clip("sd-1")
    with apply_embeddings(tokenizer, text_encoder, {}) as (patched, manager):
        assert patched is tokenizer and manager.expand_textual_inversion_token_ids_if_necessary([1, 2]) == [1, 2]
