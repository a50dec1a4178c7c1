"""TorchRolloutEngine: grouping, determinism, stops, exact logprobs, weight updates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oumi_megatron.rollout import SamplingParams, WeightUpdateError
from oumi_megatron.rollout.logprob_check import rollout_logprob_error, teacher_forced_logprobs
from oumi_megatron.rollout.torch_engine import TorchRolloutEngine

# Different lengths: rows are left-padded differently inside one batch.
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15], [40, 41, 42, 43]]
EXACT = 1e-5


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> tuple[Path, Path]:
    from oumi_megatron.testing.tiny_models import build_tiny_pair

    root = tmp_path_factory.mktemp("rollout_models")
    return build_tiny_pair("llama", root)


@pytest.fixture(scope="module")
def engine(model_dirs) -> TorchRolloutEngine:
    return TorchRolloutEngine(model_dirs[0])


def _plain_logprobs(model, sample, temperature: float) -> torch.Tensor:
    """log_softmax(logits / T) of the completion from one unpadded full forward."""
    ids = torch.tensor([sample.prompt_ids + sample.completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    start = len(sample.prompt_ids) - 1
    logits = logits[start : start + len(sample.completion_ids)]
    if temperature > 0:
        logits = logits / temperature
    target = torch.tensor(sample.completion_ids)[:, None]
    return torch.log_softmax(logits, -1).gather(-1, target)[:, 0]


def test_n_samples_are_grouped_per_prompt_in_order(engine):
    samples = engine.generate(PROMPTS, SamplingParams(n=3, max_new_tokens=4, seed=0))
    assert [(s.prompt_index, s.sample_index) for s in samples] == [
        (i, j) for i in range(len(PROMPTS)) for j in range(3)
    ]
    assert all(s.prompt_ids == PROMPTS[s.prompt_index] for s in samples)
    assert all(len(s.completion_ids) == len(s.completion_logprobs) == 4 for s in samples)
    # Samples of one prompt differ (random weights give a flat-ish distribution).
    assert len({tuple(s.completion_ids) for s in samples[:3]}) > 1


def test_sampling_is_deterministic_given_seed(engine):
    params = SamplingParams(n=2, max_new_tokens=6, seed=123)
    first, second = engine.generate(PROMPTS, params), engine.generate(PROMPTS, params)
    assert [s.completion_ids for s in first] == [s.completion_ids for s in second]
    assert [s.completion_logprobs for s in first] == [s.completion_logprobs for s in second]
    other = engine.generate(PROMPTS, SamplingParams(n=2, max_new_tokens=6, seed=124))
    assert [s.completion_ids for s in first] != [s.completion_ids for s in other]


def test_completion_does_not_depend_on_batch_or_chunking(engine, model_dirs):
    params = SamplingParams(n=2, max_new_tokens=6, seed=5)
    together = engine.generate(PROMPTS, params)
    chunked = TorchRolloutEngine(model_dirs[0], max_batch_size=3).generate(PROMPTS, params)
    assert [s.completion_ids for s in together] == [s.completion_ids for s in chunked]
    for a, b in zip(together, chunked, strict=True):
        torch.testing.assert_close(a.completion_logprobs, b.completion_logprobs, atol=EXACT, rtol=0)


def test_prompt_seeds_make_a_prompt_independent_of_its_call(engine):
    """What rollout replicas rely on: prompt i with seed s gives the same samples whichever
    prompts share the call (and wherever it sits in it)."""
    params = SamplingParams(n=2, max_new_tokens=6)
    seeds = [101, 202, 303, 404]
    together = engine.generate(PROMPTS, params, prompt_seeds=seeds)
    split = engine.generate(PROMPTS[2:], params, prompt_seeds=seeds[2:]) + engine.generate(
        PROMPTS[:2], params, prompt_seeds=seeds[:2]
    )
    key = [(s.prompt_ids, s.sample_index, s.completion_ids) for s in together]
    assert sorted(key) == sorted((s.prompt_ids, s.sample_index, s.completion_ids) for s in split)
    other = engine.generate(PROMPTS, params, prompt_seeds=[1, 2, 3, 4])
    assert [s.completion_ids for s in other] != [s.completion_ids for s in together]
    with pytest.raises(ValueError, match="3 prompt seeds for 4 prompts"):
        engine.generate(PROMPTS, params, prompt_seeds=seeds[:3])


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6, 0.0])
def test_logprobs_equal_teacher_forced_full_forward(engine, temperature):
    params = SamplingParams(n=2, temperature=temperature, max_new_tokens=8, seed=11)
    samples = engine.generate(PROMPTS, params)
    for sample in samples:
        reference = _plain_logprobs(engine.model, sample, temperature)
        got = torch.tensor(sample.completion_logprobs)
        assert (got - reference).abs().max().item() <= EXACT, sample
    trainer = [_plain_logprobs(engine.model, s, temperature) for s in samples]
    assert abs(rollout_logprob_error(samples, trainer).item() - 1.0) <= EXACT


def test_top_k_top_p_logprobs_are_processed_logprobs(engine):
    params = SamplingParams(n=3, temperature=0.8, top_k=20, top_p=0.9, max_new_tokens=8, seed=3)
    samples = engine.generate(PROMPTS, params)
    reference = teacher_forced_logprobs(engine.model, samples, params)
    for sample, ref in zip(samples, reference, strict=True):
        got = torch.tensor(sample.completion_logprobs)
        assert torch.isfinite(got).all()  # sampled tokens are inside the kept set
        assert (got - ref).abs().max().item() <= EXACT
        # Renormalised over fewer tokens: at least the plain tempered logprob.
        assert (got >= _plain_logprobs(engine.model, sample, 0.8) - EXACT).all()


def test_stop_token_ends_only_its_sequence(engine):
    sampled = SamplingParams(max_new_tokens=8, seed=21)
    base = engine.generate(PROMPTS[:2], sampled)
    first, second = base[0].completion_ids, base[1].completion_ids
    k, stop = next(
        (k, t)
        for k, t in enumerate(first)
        if k >= 1 and t not in first[:k] and t not in second and t != 2
    )
    params = SamplingParams(max_new_tokens=8, seed=21, stop_token_ids=(stop,))
    stopped, other = engine.generate(PROMPTS[:2], params)
    # Same random stream per sequence: the stopped one is a prefix, stop token included.
    assert stopped.completion_ids == first[: k + 1]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_logprobs == pytest.approx(base[0].completion_logprobs[: k + 1])
    assert other.completion_ids == second and other.finish_reason == "length"


def test_stop_on_last_allowed_token_is_stop(engine):
    base = engine.generate(PROMPTS[:1], SamplingParams(max_new_tokens=3, seed=4))[0]
    last = base.completion_ids[-1]
    if last in base.completion_ids[:-1]:
        pytest.skip("last token repeats earlier")
    params = SamplingParams(max_new_tokens=3, seed=4, stop_token_ids=(last,))
    sample = engine.generate(PROMPTS[:1], params)[0]
    assert sample.completion_ids == base.completion_ids and sample.finish_reason == "stop"


def test_model_eos_stops_unless_ignored(model_dirs):
    engine = TorchRolloutEngine(model_dirs[0])
    assert engine.eos_token_ids == {2}
    greedy = SamplingParams(temperature=0.0, max_new_tokens=5)
    top = engine.generate([PROMPTS[0]], greedy)[0].completion_ids[0]
    # Make EOS (id 2) the greedy choice at the first step: a scaled copy of the top row.
    head = engine.model.lm_head.weight.detach().clone()
    head[2] = 3.0 * head[top]
    engine.update_weights([("lm_head.weight", head)])
    sample = engine.generate([PROMPTS[0]], greedy)[0]
    assert sample.completion_ids == [2] and sample.finish_reason == "stop"
    ignored = engine.generate(
        [PROMPTS[0]], SamplingParams(temperature=0.0, max_new_tokens=5, ignore_eos=True)
    )[0]
    assert len(ignored.completion_ids) == 5 and ignored.finish_reason == "length"


def test_update_weights_from_other_model_matches_that_model(model_dirs):
    from transformers import AutoModelForCausalLM

    engine = TorchRolloutEngine(model_dirs[0])
    other = AutoModelForCausalLM.from_pretrained(str(model_dirs[1]), dtype=torch.float32)
    params = SamplingParams(n=2, temperature=0.9, max_new_tokens=6, seed=9)
    before = engine.generate(PROMPTS, params)
    items = list(other.state_dict().items())
    for start in range(0, len(items), 7):  # several buckets, as a transport would
        engine.update_weights(items[start : start + 7])
    engine.finish_weight_update()
    assert engine.weight_version == 1
    after = engine.generate(PROMPTS, params)
    expected = TorchRolloutEngine(other).generate(PROMPTS, params)
    assert [s.completion_ids for s in after] == [s.completion_ids for s in expected]
    assert [s.completion_ids for s in after] != [s.completion_ids for s in before]
    for sample in after:
        reference = _plain_logprobs(other, sample, 0.9)
        assert (torch.tensor(sample.completion_logprobs) - reference).abs().max() <= EXACT


def test_update_weights_rejects_unknown_name_and_bad_shape(engine):
    with pytest.raises(WeightUpdateError, match="model.layers.0.mlp.up_proj.weight"):
        engine.update_weights([("model.layers.0.mlp.up_proj.weigth", torch.zeros(128, 64))])
    with pytest.raises(WeightUpdateError, match="shape mismatch"):
        engine.update_weights([("model.norm.weight", torch.zeros(3))])


def test_tied_embeddings_accept_either_name():
    from transformers import AutoModelForCausalLM

    from oumi_megatron.testing.tiny_models import tiny_config

    config = tiny_config("qwen2", num_layers=1)
    config.tie_word_embeddings = True
    engine = TorchRolloutEngine(AutoModelForCausalLM.from_config(config))
    assert engine.model.lm_head.weight is engine.model.model.embed_tokens.weight
    new = torch.randn_like(engine.model.lm_head.weight)
    engine.update_weights([("lm_head.weight", new)])
    assert torch.equal(engine.model.model.embed_tokens.weight, new)
    engine.update_weights([("model.embed_tokens.weight", new * 2)])
    assert torch.equal(engine.model.lm_head.weight, new * 2)


def test_sleep_and_wake_on_cpu(engine):
    engine.sleep()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS, SamplingParams(max_new_tokens=2))
    engine.wake_up()
    assert engine.model.device.type == "cpu"
    assert len(engine.generate(PROMPTS, SamplingParams(max_new_tokens=2, seed=0))) == 4


def test_empty_prompt_is_rejected(engine):
    with pytest.raises(ValueError):
        engine.generate([[]], SamplingParams())


@pytest.mark.gpu
def test_cuda_engine_logprobs_sleep_and_update(model_dirs):
    from transformers import AutoModelForCausalLM

    torch.backends.cuda.matmul.allow_tf32 = False
    engine = TorchRolloutEngine(model_dirs[0], device="cuda")
    params = SamplingParams(n=2, temperature=0.7, top_k=50, max_new_tokens=8, seed=11)
    samples = engine.generate(PROMPTS, params)
    refs = teacher_forced_logprobs(engine.model, samples, params)
    for sample, ref in zip(samples, refs, strict=True):
        assert (torch.tensor(sample.completion_logprobs) - ref).abs().max() <= 1e-4

    engine.sleep()
    assert engine.model.lm_head.weight.device.type == "cpu"
    other = AutoModelForCausalLM.from_pretrained(str(model_dirs[1]), dtype=torch.float32)
    engine.update_weights(other.state_dict().items())  # while asleep: lands in host memory
    engine.finish_weight_update()
    engine.wake_up()
    assert engine.model.lm_head.weight.device.type == "cuda"
    expected = TorchRolloutEngine(model_dirs[1], device="cuda").generate(PROMPTS, params)
    assert [s.completion_ids for s in engine.generate(PROMPTS, params)] == [
        s.completion_ids for s in expected
    ]


def test_moe_accepts_checkpoint_and_in_memory_expert_names(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from oumi_megatron.testing.tiny_models import build_tiny_pair

    source, target = build_tiny_pair("qwen3_moe", tmp_path, num_layers=2)
    params = SamplingParams(n=2, max_new_tokens=5, seed=2)
    expected = TorchRolloutEngine(source).generate(PROMPTS, params)

    # Checkpoint naming (per-expert gate/up/down, as HF exports and vLLM use).
    checkpoint = load_file(str(source / "model.safetensors"))
    assert any(".experts.3.up_proj.weight" in name for name in checkpoint)
    engine = TorchRolloutEngine(target)
    engine.update_weights(checkpoint.items())
    assert [s.completion_ids for s in engine.generate(PROMPTS, params)] == [
        s.completion_ids for s in expected
    ]
    # transformers' in-memory naming (fused experts) works as well.
    engine = TorchRolloutEngine(target)
    in_memory = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    engine.update_weights(in_memory.state_dict().items())
    for got, want in zip(engine.generate(PROMPTS, params), expected, strict=True):
        assert got.completion_logprobs == want.completion_logprobs
    with pytest.raises(WeightUpdateError, match="unknown weight"):
        engine.update_weights(
            [("model.layers.0.mlp.experts.9.up_proj.weight", torch.zeros(32, 64))]
        )
