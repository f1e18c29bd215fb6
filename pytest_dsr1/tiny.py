"""A tiny DeepSeek-V3-architecture checkpoint (MLA + MoE, random weights) that real vLLM serves.

    python -m pytest_dsr1.tiny [DIR]     # writes it to DIR, or to the cache, and prints the path
    python -m pytest_dsr1.tiny DIR --perturb-expert E   # the same, one routed expert's weights x4: a wrong model

Nothing is downloaded. The shapes are what vLLM was found to need when serving it:
- kv_lora_rank 512 + qk_rope_head_dim 64 = head size 576, the only one the CPU MLA backend takes;
- qk_nope_head_dim 128 and v_head_dim 128 as in the real model, because Hopper's FlashAttention rejects
  64/64 at the first prefill: one model proves both the CPU and the H200 path;
- 8 attention heads and 8 routed experts, so that TP8 and EP8 divide evenly;
- topk_method noaux_tc with sigmoid scoring and an e_score_correction_bias per MoE layer, without which
  vLLM's loader fails; no MTP layers.
The output is deterministic: the same generator version gives byte-identical files, cached under
~/.cache/pytest-dsr1/tiny-dsv3-<hash of the spec> (DSR1_CACHE_DIR or XDG_CACHE_HOME move it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 2
SEED = 1234
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>")
# One token per printable ASCII character (and newline): every token decodes to valid text on its own,
# so the server streams each token as it is made. Byte-level tokens of random weights form broken UTF-8
# that the detokenizer holds back, which distorts TTFT and ITL.
CHARACTERS = (*(chr(c) for c in range(32, 127)), "\n")

# The Hugging Face config.json, as written.
CONFIG: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": len(SPECIAL_TOKENS) + len(CHARACTERS),
    "hidden_size": 256,
    "intermediate_size": 512,
    "moe_intermediate_size": 128,
    "num_hidden_layers": 2,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "num_attention_heads": 8,
    "num_key_value_heads": 8,
    "q_lora_rank": 64,
    "kv_lora_rank": 512,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "n_routed_experts": 8,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "num_nextn_predict_layers": 0,
    "hidden_act": "silu",
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
    "use_cache": True,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "torch_dtype": "bfloat16",
}


def spec_hash() -> str:
    spec = json.dumps(
        {"v": GENERATOR_VERSION, "seed": SEED, "config": CONFIG, "special": SPECIAL_TOKENS, "chars": CHARACTERS},
        sort_keys=True,
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    if os.environ.get("DSR1_CACHE_DIR"):
        return Path(os.environ["DSR1_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pytest-dsr1"


def default_path() -> Path:
    return cache_dir() / f"tiny-dsv3-{spec_hash()}"


def _tensor_shapes() -> dict[str, tuple[tuple[int, ...], str]]:
    c = CONFIG
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk_head = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    shapes: dict[str, tuple[tuple[int, ...], str]] = {
        "model.embed_tokens.weight": ((c["vocab_size"], h), "normal"),
        "model.norm.weight": ((h,), "ones"),
        "lm_head.weight": ((c["vocab_size"], h), "normal"),
    }
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": ((h,), "ones"),
                p + "post_attention_layernorm.weight": ((h,), "ones"),
                p + "self_attn.q_a_proj.weight": ((c["q_lora_rank"], h), "normal"),
                p + "self_attn.q_a_layernorm.weight": ((c["q_lora_rank"],), "ones"),
                p + "self_attn.q_b_proj.weight": ((heads * qk_head, c["q_lora_rank"]), "normal"),
                p + "self_attn.kv_a_proj_with_mqa.weight": ((c["kv_lora_rank"] + c["qk_rope_head_dim"], h), "normal"),
                p + "self_attn.kv_a_layernorm.weight": ((c["kv_lora_rank"],), "ones"),
                p + "self_attn.kv_b_proj.weight": (
                    (heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"]),
                    "normal",
                ),
                p + "self_attn.o_proj.weight": ((h, heads * c["v_head_dim"]), "normal"),
            }
        )
        if i < c["first_k_dense_replace"]:
            shapes.update(_mlp(p + "mlp.", h, c["intermediate_size"]))
        else:
            shapes[p + "mlp.gate.weight"] = ((c["n_routed_experts"], h), "normal")
            shapes[p + "mlp.gate.e_score_correction_bias"] = ((c["n_routed_experts"],), "zeros32")
            for e in range(c["n_routed_experts"]):
                shapes.update(_mlp(f"{p}mlp.experts.{e}.", h, c["moe_intermediate_size"]))
            shapes.update(_mlp(p + "mlp.shared_experts.", h, c["moe_intermediate_size"] * c["n_shared_experts"]))
    return shapes


def _mlp(prefix: str, hidden: int, inter: int) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        prefix + "gate_proj.weight": ((inter, hidden), "normal"),
        prefix + "up_proj.weight": ((inter, hidden), "normal"),
        prefix + "down_proj.weight": ((hidden, inter), "normal"),
    }


PERTURB_FACTOR = 4.0  # a perturbed expert's weights are scaled by this: a stand-in for a wrong kernel


def _write_weights(path: Path, perturb_expert: int | None = None) -> int:
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(SEED)
    tensors = {}
    for name, (shape, init) in sorted(_tensor_shapes().items()):
        if init == "ones":
            t = torch.ones(shape, dtype=torch.bfloat16)
        elif init == "zeros32":
            t = torch.zeros(shape, dtype=torch.float32)
        else:
            t = (torch.randn(shape, generator=gen) * CONFIG["initializer_range"]).to(torch.bfloat16)
        tensors[name] = t
    if perturb_expert is not None:
        # The last MoE layer's expert, scaled after generation: every other weight stays byte-identical.
        prefix = f"model.layers.{CONFIG['num_hidden_layers'] - 1}.mlp.experts.{perturb_expert}."
        for name in [n for n in tensors if n.startswith(prefix)]:
            tensors[name] = (tensors[name].float() * PERTURB_FACTOR).to(torch.bfloat16)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return sum(t.numel() for t in tensors.values())


def _write_tokenizer(path: Path) -> None:
    """A character-level BPE (no merges): deterministic, no training, no download."""
    from tokenizers import Tokenizer, decoders, models

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": SPECIAL_TOKENS[0],
                "eos_token": SPECIAL_TOKENS[1],
                "model_max_length": CONFIG["max_position_embeddings"],
                "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}",
            },
            indent=2,
        )
        + "\n"
    )
    (path / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1]}, indent=2) + "\n"
    )


def write(path: Path, perturb_expert: int | None = None) -> Path:
    """Write the checkpoint to `path` (created; must not exist). Atomic: built beside it, then renamed.
    `perturb_expert`: scale that routed expert's weights (a deliberately wrong model, for the correctness check's
    tests); noted in dsr1-tiny.json."""
    if perturb_expert is not None and not 0 <= perturb_expert < CONFIG["n_routed_experts"]:
        raise ValueError(f"perturb_expert must be 0 to {CONFIG['n_routed_experts'] - 1}, got {perturb_expert}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 1}) + "\n")
        params = _write_weights(tmp, perturb_expert)
        _write_tokenizer(tmp)
        note: dict[str, Any] = {"generator_version": GENERATOR_VERSION, "spec_hash": spec_hash(), "parameters": params}
        if perturb_expert is not None:
            note["perturbed"] = {"expert": perturb_expert, "factor": PERTURB_FACTOR}
        (tmp / "dsr1-tiny.json").write_text(json.dumps(note) + "\n")
        for p in [tmp, *tmp.iterdir()]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def ensure(path: Path | None = None) -> Path:
    """The cached checkpoint, generated on first use."""
    path = Path(path) if path else default_path()
    if (path / "dsr1-tiny.json").exists():
        return path
    try:
        return write(path)
    except FileExistsError:  # another process won the race; its copy is identical
        return path
    except OSError as exc:
        if path.exists() and (path / "dsr1-tiny.json").exists():
            return path
        raise exc


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if "--perturb-expert" in argv:
        i = argv.index("--perturb-expert")
        rest = argv[:i] + argv[i + 2 :]
        if len(argv) < i + 2 or not argv[i + 1].isdigit() or len(rest) != 1:
            print("usage: python -m pytest_dsr1.tiny DIR --perturb-expert E", file=sys.stderr)
            return 2
        print(write(Path(rest[0]), int(argv[i + 1])))
        return 0
    print(ensure(Path(argv[0]) if argv else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
