"""The default checkpoints jace loads (hub ids), kept free of heavy imports for the CLI."""

#: The Japanese reranker scored with and fine-tuned by default (24 layers, MeCab tokenizer).
DEFAULT_RERANKER = "hotchpotch/japanese-reranker-cross-encoder-large-v1"

#: The vision-language model that captions image お題.
DEFAULT_CAPTION_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
