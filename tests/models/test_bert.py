"""The BERT encoder against sentence-transformers (real MiniLM) and transformers (tiny random BERT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from swiftserve.models.bert import BertConfig, BertEncoder, PoolingConfig, load_bert_encoder

SENTENCES = [
    "Hello world",
    "x",
    "A much longer sentence about the weather in Paris during a rainy spring afternoon. " * 3,
    "Embeddings map text to vectors; similar meanings land close together.",
    "The quick brown fox jumps over the lazy dog. " * 40,  # past max_seq_length: truncated
]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from swiftserve.loader import iter_weights, load_config

    return load_bert_encoder(minilm_dir, load_config(minilm_dir), iter_weights(minilm_dir))


@pytest.fixture(scope="module")
def token_ids(minilm_dir, minilm):
    from swiftserve.loader import load_tokenizer

    tokenizer = load_tokenizer(minilm_dir).tokenizer
    max_len = minilm.pooling.max_seq_length
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer = type(tokenizer).from_str(tokenizer.to_str())
    tokenizer.no_truncation()  # the folder's tokenizer.json truncates and pads to 128
    tokenizer.no_padding()
    ids = [tokenizer.encode(s, add_special_tokens=False).ids for s in SENTENCES]
    return [[cls, *t[: max_len - 2], sep] for t in ids]  # what sentence-transformers feeds the model


@pytest.fixture(scope="module")
def reference(minilm_dir):
    import sentence_transformers

    model = sentence_transformers.SentenceTransformer(str(minilm_dir), device="cpu")
    return model.encode(SENTENCES, convert_to_numpy=True, batch_size=len(SENTENCES))


def test_minilm_pooling_config(minilm):
    assert minilm.pooling == PoolingConfig(mode="mean", normalize=True, max_seq_length=256)
    assert minilm.dim == 384


def test_matches_sentence_transformers_batched(minilm, token_ids, reference):
    assert max(len(t) for t in token_ids) == 256
    out = minilm(token_ids).numpy()
    assert out.dtype == np.float32 and out.shape == (len(SENTENCES), 384)
    assert _cosine(out, reference).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers_one_by_one(minilm, token_ids, reference):
    out = np.stack([minilm([ids]).numpy()[0] for ids in token_ids])
    assert _cosine(out, reference).min() >= 0.999
    np.testing.assert_allclose(out, minilm(token_ids).numpy(), atol=1e-5)


def test_bfloat16_close_to_float32(minilm_dir, minilm, token_ids):
    from swiftserve.loader import iter_weights, load_config

    bf16 = load_bert_encoder(
        minilm_dir, load_config(minilm_dir), iter_weights(minilm_dir), dtype=torch.bfloat16
    )
    assert bf16.word_embeddings.weight.dtype == torch.bfloat16
    out = bf16(token_ids)
    assert out.dtype == torch.float32
    assert _cosine(out.numpy(), minilm(token_ids).numpy()).min() >= 0.99


# ---- any BertModel folder: a tiny random model against transformers ------------------------

TINY = dict(
    vocab_size=99,
    hidden_size=48,
    num_hidden_layers=2,
    num_attention_heads=3,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
)


@pytest.fixture(scope="module")
def tiny_hf_bert():
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config).eval()


def _hf_mean_pool(hf_model, token_ids: list[list[int]]) -> torch.Tensor:
    max_len = max(map(len, token_ids))
    ids = torch.tensor([t + [0] * (max_len - len(t)) for t in token_ids])
    mask = torch.tensor([[1] * len(t) + [0] * (max_len - len(t)) for t in token_ids])
    with torch.no_grad():
        hidden = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_any_bert_checkpoint_matches_transformers(tmp_path, tiny_hf_bert, prefix):
    (tmp_path / "config.json").write_text(json.dumps(TINY))
    weights = [(prefix + name, t) for name, t in tiny_hf_bert.state_dict().items()]
    model = load_bert_encoder(tmp_path, TINY, weights)
    # No modules.json: plain mean pooling, no normalization, the model's full length.
    assert model.pooling == PoolingConfig(mode="mean", normalize=False, max_seq_length=64)
    token_ids = [[5, 17, 3], [7], list(range(1, 64)), [98, 2, 2, 9, 11]]
    expected = _hf_mean_pool(tiny_hf_bert, token_ids)
    torch.testing.assert_close(model(token_ids), expected, atol=1e-5, rtol=1e-4)


def test_missing_tensor_is_reported(tiny_hf_bert):
    weights = [(n, t) for n, t in tiny_hf_bert.state_dict().items() if "layer.1.output.dense" not in n]
    model = BertEncoder(BertConfig.from_dict(TINY))
    with pytest.raises(ValueError, match="lacks 2 tensors"):
        model.load_weights(weights)


@pytest.mark.parametrize(
    ("pooling_file", "mode"),
    [
        ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}, "cls"),
        ({"pooling_mode_max_tokens": True}, "max"),
        ({"pooling_mode": "mean"}, "mean"),
    ],
)
def test_pooling_config_from_sentence_transformers_files(tmp_path, pooling_file, mode):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_file))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1024}))
    pooling = PoolingConfig.from_folder(tmp_path, max_position_embeddings=512)
    assert pooling == PoolingConfig(mode=mode, normalize=False, max_seq_length=512)


def test_cls_and_max_pooling(tiny_hf_bert):
    model = BertEncoder(BertConfig.from_dict(TINY), PoolingConfig(mode="cls"))
    model.load_weights(tiny_hf_bert.state_dict().items())
    token_ids = [[5, 17, 3], [7, 8]]
    with torch.no_grad():
        hidden = [tiny_hf_bert(input_ids=torch.tensor([t])).last_hidden_state[0] for t in token_ids]
    torch.testing.assert_close(model(token_ids), torch.stack([h[0] for h in hidden]), atol=1e-5, rtol=1e-4)
    model.pooling = PoolingConfig(mode="max")
    expected = torch.stack([h.amax(0) for h in hidden])
    torch.testing.assert_close(model(token_ids), expected, atol=1e-5, rtol=1e-4)
