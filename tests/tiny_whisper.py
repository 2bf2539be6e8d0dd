"""A tiny Whisper folder written by transformers itself (config.json, model.safetensors,
preprocessor_config.json): a 1 s window (max_source_positions 50), 2 encoder layers of width 16."""

from pathlib import Path

import torch


def write_tiny_whisper(folder: Path, seed: int = 0) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(seed)
    config = WhisperConfig(
        d_model=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, decoder_layers=1, decoder_attention_heads=2,
        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=50, max_target_positions=16, vocab_size=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[],
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=1).save_pretrained(folder)
    return Path(folder)
