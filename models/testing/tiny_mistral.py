"""A tiny random-weight Mistral Small 3.1 text encoder (FLUX.2 [dev]'s) with its processor, built offline (no hub).

FLUX.2 [dev]'s encoder is a multimodal ``Mistral3ForConditionalGeneration`` (a Pixtral vision tower, a projector and
a Mistral language model) read through a ``PixtralProcessor``; this is that layout, tiny where a prober does not
look. What InvokeAI reads is real: the language model is 5,120 wide (Mistral Small 3's width; the FLUX.2 [dev]
transformer takes three of its hidden states side by side, 15,360) and 40 layers deep (the canonical encoder BFL
ships; FLUX.2 [dev] reads hidden states 10, 20 and 30). The rest is narrow: two 4-wide attention heads, a 4-wide
MLP, a one-layer 8-wide vision tower. The projector's second layer is 5,120 x 5,120 whatever the rest is, so the
encoder is stored in bfloat16 (as the real one is): about 60 MB, most of it that one matrix.

The tokenizer is a small byte-level BPE in Tekken's shape: Mistral's control tokens (``<s>``, ``[INST]``,
``[SYSTEM_PROMPT]``, ``[IMG]``, ``<pad>`` ...), the 256 byte symbols and whole-word merges for a few dozen words
(`tiny_qwen3`'s construction). It pads on the left, as FLUX.2 [dev]'s tokenizer does, and its chat template is our
own rendering of Mistral Small 3.1's turn layout: ``<s>[SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST]...[/INST]``, with a
message's content either a string or a list of text/image blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invokeai_provider.models.testing.tiny import _construct

__all__ = ["MISTRAL_LAYERS", "MISTRAL_WIDTH", "build_mistral_encoder", "mistral_encoder", "mistral_tokenizer",
           "save_processor"]

MISTRAL_WIDTH = 5120  # Mistral Small 3's hidden_size: what InvokeAI accepts as a FLUX.2 [dev] encoder
MISTRAL_LAYERS = 40  # the canonical FLUX.2-dev encoder's depth (InvokeAI's variant mistral_24b); [dev] reads 10/20/30
CONTROL_TOKENS = ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]",
                  "[IMG_BREAK]", "[IMG_END]", "<pad>")
WORDS = ("a an the of in on at and with photo painting portrait red blue green white black golden fox cat dog "
         "snow sunset sea sky city night light you are that about image descriptions give structured responses "
         "focusing object relationships attribution actions without speculation reasons").split()
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set ns = namespace(text='') %}"
    "{%- for block in message['content'] %}"
    "{%- if block['type'] == 'text' %}{%- set ns.text = ns.text + block['text'] %}"
    "{%- elif block['type'] == 'image' %}{%- set ns.text = ns.text + '[IMG]' %}{%- endif %}"
    "{%- endfor %}{%- set text = ns.text %}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text + '[/INST]' }}"
    "{%- else %}{{- text + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def mistral_tokenizer() -> Any:
    """The tiny Tekken-shaped tokenizer (a ``PreTrainedTokenizerFast``), padding on the left."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from invokeai_provider.models.testing.tiny_qwen3 import _vocab_and_merges

    words, merges = _vocab_and_merges(WORDS)
    vocab = {token: index for index, token in enumerate(CONTROL_TOKENS)}
    for token in sorted(words, key=words.__getitem__):
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in CONTROL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", padding_side="left",
                                        model_max_length=131072)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_processor(folder: Path) -> Path:
    """The tiny tokenizer saved as FLUX.2 [dev]'s ``tokenizer/`` folder is: a ``PixtralProcessor`` (tokenizer files,
    chat template, a tiny Pixtral image processor's config and the processor's own). Written without constructing
    the processor, which transformers refuses without torchvision; the provider reads only its tokenizer."""
    import json
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import PixtralImageProcessorPil

    folder = Path(folder)
    mistral_tokenizer().save_pretrained(folder)
    PixtralImageProcessorPil(size={"longest_edge": 32}, patch_size=4).save_pretrained(folder)
    preprocessor = folder / "preprocessor_config.json"
    config = json.loads(preprocessor.read_text())
    preprocessor.write_text(json.dumps({**config, "image_processor_type": "PixtralImageProcessor"}, indent=2))
    (folder / "processor_config.json").write_text(json.dumps(
        {"processor_class": "PixtralProcessor", "patch_size": 4, "spatial_merge_size": 2, "image_token": "[IMG]",
         "image_break_token": "[IMG_BREAK]", "image_end_token": "[IMG_END]"}, indent=2))
    return folder


def mistral_encoder(seed: int = 0, *, vocab_size: int | None = None, tag: str = "mistral") -> Any:
    """A tiny ``Mistral3ForConditionalGeneration`` with seeded random weights, in bfloat16."""
    import torch
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    tokenizer = mistral_tokenizer()
    text = MistralConfig(vocab_size=vocab_size or len(tokenizer), hidden_size=MISTRAL_WIDTH, intermediate_size=4,
                         num_hidden_layers=MISTRAL_LAYERS, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
                         max_position_embeddings=2048, rms_norm_eps=1e-5, sliding_window=None,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000000.0},
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = PixtralVisionConfig(hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 head_dim=4, image_size=32, patch_size=4, num_channels=3)
    config = Mistral3Config(vision_config=vision, text_config=text, image_token_index=CONTROL_TOKENS.index("[IMG]"),
                            spatial_merge_size=2, vision_feature_layer=-1, multimodal_projector_bias=False,
                            tie_word_embeddings=True, architectures=["Mistral3ForConditionalGeneration"])
    model = _construct(lambda: Mistral3ForConditionalGeneration(config), materialize=True, seed=seed, tag=tag)
    model.tie_weights()  # one embedding table: the random fill gave the tied pair two
    return model.to(torch.bfloat16)


def build_mistral_encoder(dest: Path, *, seed: int = 0, tag: str = "mistral") -> Path:
    """A standalone ``mistral_encoder`` folder in InvokeAI's layout: ``text_encoder/`` (the Mistral3 model) and
    ``tokenizer/`` (its processor)."""
    dest = Path(dest)
    if dest.exists() and (dest.is_file() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} is not empty")
    mistral_encoder(seed, tag=tag).save_pretrained(dest / "text_encoder", safe_serialization=True)
    save_processor(dest / "tokenizer")
    return dest
