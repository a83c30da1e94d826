"""The configs of the registered strong models as converted here, and of the imdb-mini guides: what the FLOP
formula reads (``scripts/strong_reference.py shapes``) and what ``bench/gpu_check.py`` builds with random weights.

The guides are the imdb-mini world's GuideShape: Llama 4 x 256 with SmolLM2's vocabulary, tied. Qwen's GGUF stores its
output layer apart from the embedding, so the converted model is untied (630M parameters; 494M upstream).
"""

GUIDE = dict(
    model_type="llama",
    vocab_size=49152,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
STRONG = {
    "smollm2-135m": dict(
        model_type="llama",
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    "gemma3-270m": dict(
        model_type="gemma3_text",
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        sliding_window=512,
        tie_word_embeddings=True,
        layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3,
    ),
    "qwen2.5-0.5b": dict(
        model_type="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    ),
}
