"""Write a random-weight llama-architecture GGUF of a realistic shape (no download needed).

    python tests/gpu/make_model.py OUT.gguf --vocab 262144 [--tiny]

The default shape is ~1.2-1.7 B parameters (hidden 2048, 16 layers, GQA 16/4
heads, FFN 8192) in F16; --vocab sets the vocabulary (Gemma's 262k or a 32k
one) so a benchmark is not only the sampler's. --tiny writes a few-MB model
for a CPU dry run. The text it writes is noise: streams are asked to run to
max_tokens with ignore_eos, on Hoshikage and llama-server alike.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SHAPES = {
    "realistic": {"hidden": 2048, "layers": 16, "heads": 16, "kv_heads": 4, "ffn": 8192},
    "tiny": {"hidden": 128, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 256},
}


def random_block(numpy, shape: tuple[int, ...], rng, scale: float):
    """F16 noise of SHAPE, tiled from one random block so that gigabytes are written in seconds."""
    size = 1
    for dimension in shape:
        size *= dimension
    block = (rng.standard_normal(min(size, 1 << 22), dtype=numpy.float32) * scale).astype(numpy.float16)
    return numpy.resize(block, size).reshape(shape)


def write_model(path: Path, vocab: int, shape_name: str) -> Path:
    import gguf
    import numpy

    shape = SHAPES[shape_name]
    hidden, layers, ffn = shape["hidden"], shape["layers"], shape["ffn"]
    head_dim = hidden // shape["heads"]
    kv = shape["kv_heads"] * head_dim
    rng = numpy.random.default_rng(7)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(f"random {shape_name} llama, vocab {vocab}")
    writer.add_context_length(8192)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(shape["heads"])
    writer.add_head_count_kv(shape["kv_heads"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # A byte-level SentencePiece-style vocabulary: <unk> <s> </s>, the 256 byte
    # tokens, then made-up pieces up to the vocabulary size.
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{byte:02X}>" for byte in range(256))]
    tokens += [f"\u2581w{index}" for index in range(vocab - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL,
             *[gguf.TokenType.BYTE] * 256, *[gguf.TokenType.NORMAL] * (vocab - 259)]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(index) for index in range(vocab)])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    scale = 0.02
    # gguf wants numpy shapes (rows, columns): a weight of n_out x n_in is (n_out, n_in).
    writer.add_tensor("token_embd.weight", random_block(numpy, (vocab, hidden), rng, scale))
    for layer in range(layers):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", numpy.ones(hidden, dtype=numpy.float32))
        writer.add_tensor(f"{prefix}.attn_q.weight", random_block(numpy, (hidden, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.attn_k.weight", random_block(numpy, (kv, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.attn_v.weight", random_block(numpy, (kv, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.attn_output.weight", random_block(numpy, (hidden, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", numpy.ones(hidden, dtype=numpy.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", random_block(numpy, (ffn, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.ffn_up.weight", random_block(numpy, (ffn, hidden), rng, scale))
        writer.add_tensor(f"{prefix}.ffn_down.weight", random_block(numpy, (hidden, ffn), rng, scale))
    writer.add_tensor("output_norm.weight", numpy.ones(hidden, dtype=numpy.float32))
    writer.add_tensor("output.weight", random_block(numpy, (vocab, hidden), rng, scale))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    write_model(args.out, args.vocab, "tiny" if args.tiny else "realistic")
    print(f"{args.out}: {args.out.stat().st_size / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
