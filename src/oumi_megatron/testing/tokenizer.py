"""A small byte-level BPE tokenizer trained offline on a built-in corpus.

Training is deterministic for a fixed corpus, so every machine builds the same vocabulary.
"""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = [
    "the",
    "a",
    "an",
    "is",
    "of",
    "to",
    "and",
    "in",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "was",
    "be",
    "by",
    "this",
    "are",
    "or",
    "at",
    "from",
    "what",
    "how",
    "many",
    "much",
    "sum",
    "add",
    "plus",
    "minus",
    "times",
    "equals",
    "answer",
    "question",
    "number",
    "numbers",
    "count",
    "letters",
    "word",
    "list",
    "reverse",
    "sort",
    "first",
    "last",
    "total",
    "result",
    "step",
    "think",
    "solve",
    "user",
    "assistant",
    "system",
    "please",
    "give",
    "final",
    "boxed",
    "true",
    "false",
    "yes",
    "no",
    "apple",
    "orange",
    "train",
    "model",
    "reward",
    "policy",
    "token",
    "gradient",
    "learning",
    "rate",
    "batch",
    "sequence",
]


def _corpus() -> list[str]:
    lines = [" ".join(_WORDS[i : i + 8]) for i in range(0, len(_WORDS), 8)]
    lines += [f"{a} + {b} = {a + b}" for a in range(0, 40, 3) for b in range(0, 40, 7)]
    lines += ["Question: what is 12 + 7? Answer: 19", "#### 42", "<answer>17</answer>"]
    return lines * 4


def build_tokenizer(vocab_size: int = 384):
    """Train a byte-level BPE and wrap it as a `PreTrainedTokenizerFast` with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def save_tokenizer(directory: str | Path, vocab_size: int = 384):
    tokenizer = build_tokenizer(vocab_size)
    tokenizer.save_pretrained(str(directory))
    return tokenizer
