"""A tiny Qwen2 causal LM and tokenizer, built on the spot, for offline demos and tests.

`prm-builder tiny-model DIR` writes it; `prm-train --model_name_or_path DIR` and `prm-eval
--model DIR` then run anywhere in seconds, with no download. The model is untrained: it shows
that the pipeline runs, not what a PRM learns.
"""

from pathlib import Path

# A few lines of GSM8K-style text: enough for a byte-level BPE vocabulary that covers digits,
# operators and the step separators the builders use.
_CORPUS = [
    "Natalia sold 48 clips in April and half as many in May. 48 / 2 = 24.\n48 + 24 = 72.\n",
    "The answer is 72. Step 1: compute the total.\n\nStep 2: subtract. \\boxed{72}\n",
    "Janet has 16 eggs and eats 3, so 16 - 3 = 13 remain. She earns $2 each: 13 * 2 = $26.\n",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_model(path: str | Path, *, with_chat_template: bool = False, seed: int = 0) -> Path:
    """Write a 2-layer Qwen2 (hidden size 32) and a byte-level BPE tokenizer to `path`.

    Byte-level BPE like Qwen's own, so `AutoTokenizer` (which maps the qwen2 model type to
    Qwen2Tokenizer) loads it faithfully and every string round-trips, newlines included. Saved
    with save_pretrained, so it loads exactly as a Hub checkpoint would. Takes well under a
    second on CPU.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    path = Path(path)
    tokenizer_model = Tokenizer(models.BPE())
    tokenizer_model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer_model.decoder = decoders.ByteLevel()
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # its progress bar prints blank lines when stdout is not a terminal
    )
    tokenizer_model.train_from_iterator(_CORPUS * 3, trainer=bpe_trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_model, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    if with_chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
