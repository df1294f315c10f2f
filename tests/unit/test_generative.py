"""The generative engine's pure parts: parameters, text assembly, sampling, and the tiny_lm example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.base import InvalidInput, LoadSpec, Signature, TensorSig, load_engine
from engines.decoding import (
    Generation,
    GenerationError,
    GenerationParams,
    TextAssembler,
    parse_parameters,
    sample,
)
from engines.generative import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, GenerativeEngine
from engines.stream_part import StreamPart
from examples import tiny_lm

SIGNATURE = Signature(
    inputs=(TensorSig("prompt", "BYTES", (-1,)),),
    outputs=(TensorSig("token_ids", "INT64", (-1,)), TensorSig("text", "BYTES", (-1,))),
)


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_lm") / "1"
    tiny_lm.write_model(path)
    return path


@pytest.fixture(scope="module")
def engine(version_dir: Path) -> GenerativeEngine:
    spec = LoadSpec("tiny_lm", 1, version_dir / "model.py", SIGNATURE, max_batch_size=0)
    loaded = load_engine("generative", spec)
    assert isinstance(loaded, GenerativeEngine)
    return loaded


def prompt(text: bytes) -> dict[str, np.ndarray]:
    array = np.empty(1, dtype=object)
    array[0] = text
    return {"prompt": array}


def ids_of(part: StreamPart) -> list[int]:
    return [int(t) for t in part.outputs["token_ids"]]


def text_of(part: StreamPart) -> bytes:
    return bytes(part.outputs["text"][0])


# --- parameters ---------------------------------------------------------------------------------


def test_parameters_have_documented_defaults_and_accept_ints_for_floats() -> None:
    assert parse_parameters({}) == GenerationParams()
    params = parse_parameters({"max_tokens": 5, "temperature": 0, "top_p": 1, "seed": 7, "stop": "\n", "stop.1": "."})
    assert params == GenerationParams(max_tokens=5, temperature=0.0, top_p=1.0, seed=7, stop=(b"\n", b"."))
    assert params.greedy


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"max_tokens": 0}, "'max_tokens' must be at least 1"),
        ({"max_tokens": 2.5}, "'max_tokens' must be an integer"),
        ({"temperature": "hot"}, "'temperature' must be a number"),
        ({"temperature": -1.0}, "'temperature' must be in [0, 100]"),
        ({"top_k": -1}, "'top_k' must be >= 0"),
        ({"top_p": 0.0}, "'top_p' must be in (0, 1]"),
        ({"stop": ""}, "'stop' must be a non-empty string"),
        ({"ignore_eos": 1}, "'ignore_eos' must be a boolean"),
        ({"max_token": 3}, "unknown generation parameter 'max_token'"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(parameters: dict, message: str) -> None:
    with pytest.raises(GenerationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_parameters(parameters)


# --- text assembly ------------------------------------------------------------------------------


def test_text_holds_back_split_utf8_characters_until_complete() -> None:
    text = TextAssembler()
    euro = "€".encode()
    assert text.feed(b"a" + euro[:1]) == (b"a", False)
    assert text.feed(euro[1:2]) == (b"", False)
    assert text.feed(euro[2:]) == (euro, False)
    assert text.feed(b"\xff") == ("\ufffd".encode(), False)  # invalid bytes become U+FFFD, pieces stay UTF-8
    text.feed(b"\xe2")
    assert text.flush() == "\ufffd".encode()


def test_text_cuts_at_a_stop_sequence_spanning_tokens_and_never_releases_it() -> None:
    text = TextAssembler([b"END"])
    released = [text.feed(bytes([b])) for b in b"abEN"]
    assert released == [(b"a", False), (b"b", False), (b"", False), (b"", False)]  # "EN" might start "END"
    assert text.feed(b"D") == (b"", True)
    text = TextAssembler([b"END"])
    assert text.feed(b"xEN") == (b"x", False)
    assert text.feed(b"Ey") == (b"ENEy", False)  # not a stop after all: the held bytes come out


def test_the_earliest_of_several_stop_sequences_wins() -> None:
    text = TextAssembler([b"cd", b"b"])
    assert text.feed(b"abcd") == (b"a", True)


# --- sampling -----------------------------------------------------------------------------------


def gen(**params: object) -> Generation:
    p = GenerationParams(**params)  # type: ignore[arg-type]
    return Generation(params=p, prompt=np.zeros(1, np.int64), rng=np.random.default_rng(p.seed), text=TextAssembler())


def test_temperature_zero_is_argmax_and_top_k_one_is_argmax_too() -> None:
    logits = np.array([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert sample(logits, [gen(temperature=0.0), gen(temperature=0.0)]).tolist() == [1, 0]
    assert sample(logits, [gen(top_k=1, seed=3), gen(top_k=1, seed=4)]).tolist() == [1, 0]


def test_top_k_and_top_p_keep_sampling_inside_their_sets() -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    seen_k = {int(sample(logits, [gen(top_k=2, seed=s)])[0]) for s in range(200)}
    seen_p = {int(sample(logits, [gen(top_p=0.7, seed=s)])[0]) for s in range(200)}
    assert seen_k == {0, 1}
    assert seen_p == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there


def test_a_seed_reproduces_a_stream_whatever_shares_its_step() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 50))
    alone = [int(sample(logits[1:2], [g])[0]) for g in [gen(seed=9)] for _ in range(1)]
    together = sample(logits, [gen(seed=1), gen(seed=9), gen(temperature=0.0)])
    assert together[1] == alone[0]


# --- the engine on the tiny_lm example ------------------------------------------------------------


def test_greedy_generation_matches_the_model_run_step_by_step(engine: GenerativeEngine, version_dir: Path) -> None:
    reference = tiny_lm.generate_greedy(tiny_lm.Model(weights=version_dir / "weights.npz"), b"The keeper", 30)
    g = engine.start(prompt(b"The keeper"), {"max_tokens": 30, "temperature": 0.0, "ignore_eos": True})
    tokens: list[int] = []
    while g.finish_reason is None:
        (out,) = engine.step([g])
        tokens.extend(ids_of(out))
    assert g.finish_reason == FINISH_LENGTH
    assert out.final and out.parameters == {
        "finish_reason": "length",
        "prompt_tokens": len(g.prompt),
        "generated_tokens": 30,
    }
    assert tokens == reference
    assert engine.release(g) > 0


def test_streams_stepped_together_equal_streams_stepped_alone(engine: GenerativeEngine) -> None:
    prompts = [b"A", b"The river ran", b"When the storm came the boats stayed"]
    lengths = [5, 17, 11]

    def run(batched: bool) -> list[list[int]]:
        params = [{"max_tokens": n, "temperature": 0.0} for n in lengths]
        gens = [engine.start(prompt(p), q) for p, q in zip(prompts, params, strict=True)]
        out: list[list[int]] = [[] for _ in gens]
        while any(g.finish_reason is None for g in gens):
            live = [i for i, g in enumerate(gens) if g.finish_reason is None]
            groups = [live] if batched else [[i] for i in live]
            for group in groups:
                for i, result in zip(group, engine.step([gens[i] for i in group]), strict=True):
                    out[i].extend(ids_of(result))
                    if result.final:
                        engine.release(gens[i])  # leaves mid-way: the pool moves another stream's row
        return out

    assert run(batched=True) == run(batched=False)


def test_eos_and_stop_end_a_stream_with_their_reason(engine: GenerativeEngine) -> None:
    g = engine.start(prompt(b"x"), {"max_tokens": 5, "temperature": 0.0})
    out = engine._advance(g, tiny_lm.EOS_ID)
    assert (ids_of(out), out.final, out.parameters["finish_reason"]) == ([], True, FINISH_EOS)
    g = engine.start(prompt(b"x"), {"max_tokens": 5, "stop": "hi"})
    assert text_of(engine._advance(g, ord("h"))) == b""
    out = engine._advance(g, ord("i"))
    assert (ids_of(out), text_of(out), out.parameters["finish_reason"]) == ([ord("i")], b"", FINISH_STOP)


def test_prompts_that_do_not_fit_are_refused(engine: GenerativeEngine) -> None:
    with pytest.raises(GenerationError, match="exceed the model's context of 1024 tokens"):
        engine.start(prompt(b"x" * 1000), {"max_tokens": 100})
    with pytest.raises(GenerationError, match="exactly one prompt"):
        engine.start({"prompt": np.array([b"a", b"b"], dtype=object)}, {})


def test_unary_infer_is_refused(engine: GenerativeEngine) -> None:
    assert engine.streaming_only
    with pytest.raises(Exception, match="use PredictStream"):
        engine.infer(prompt(b"x"))


def test_a_generative_config_must_declare_the_fixed_signature(version_dir: Path) -> None:
    bad = Signature(inputs=(TensorSig("x", "FP32", (-1, 4)),), outputs=SIGNATURE.outputs)
    with pytest.raises(Exception, match="exactly one input, the BYTES prompt"):
        load_engine("generative", LoadSpec("m", 1, version_dir / "model.py", bad))
    with pytest.raises(Exception, match="max_batch_size: 0"):
        load_engine("generative", LoadSpec("m", 1, version_dir / "model.py", SIGNATURE, max_batch_size=4))


def test_the_kv_pool_keeps_live_rows_contiguous(version_dir: Path) -> None:
    model = tiny_lm.Model(weights=version_dir / "weights.npz")
    caches = [model.new_cache(8) for _ in range(5)]
    for c in caches:
        model.prefill([c], [np.array(model.encode(b"ab"))])
    model.release(caches[1])
    assert sorted(c.row for c in caches if c.row >= 0) == [0, 1, 2, 3]
    assert caches[4].row == 1 and model.cache_nbytes(caches[4]) == 3 * 8 * 64 * 2 * 4
    longer = model.new_cache(500)  # the pool grows in positions, keeping what the others hold
    model.prefill([longer], [np.array(model.encode(b"x" * 300))])
    assert model.decode(caches[4:], np.array([5])).shape == (1, tiny_lm.VOCAB)


def test_prompts_prefilled_together_match_prompts_prefilled_alone(version_dir: Path) -> None:
    model = tiny_lm.Model(weights=version_dir / "weights.npz")
    prompts = [np.array(model.encode(p)) for p in (b"a", b"The river ran past the mill", b"She planted")]
    alone = np.stack([model.prefill([model.new_cache(64)], [p])[0] for p in prompts])
    together = model.prefill([model.new_cache(64) for _ in prompts], prompts)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


# --- the stream message and failed steps -------------------------------------------------------------


def test_merged_parts_read_as_one_message_with_the_last_parts_ending() -> None:
    def part(ids: list[int], text: bytes, info: dict | None = None) -> StreamPart:
        texts = np.empty(1, dtype=object)
        texts[0] = text
        outputs = {"token_ids": np.asarray(ids, dtype=np.int64), "text": texts}
        return StreamPart(outputs, info is not None, info or {})

    merged = StreamPart.merged([part([1], b"a"), part([], b""), part([2, 3], b"bc", {"finish_reason": "stop"})])
    assert ids_of(merged) == [1, 2, 3] and text_of(merged) == b"abc"
    assert merged.final and merged.parameters == {"finish_reason": "stop"}
    single = part([4], b"d")
    assert StreamPart.merged([single]) is single


def test_a_failed_step_leaves_its_streams_ready_to_step_again(engine: GenerativeEngine) -> None:
    def start(text: bytes) -> Generation:
        return engine.start(prompt(text), {"max_tokens": 6, "temperature": 0.0, "ignore_eos": True})

    def failing_decode(caches: object, tokens: object) -> np.ndarray:
        raise RuntimeError("decode fell over")

    def run(gens: list[Generation], fail_once: bool) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in gens]
        for i, result in enumerate(engine.step(gens[:2])):  # two running streams ...
            out[i].extend(ids_of(result))
        if fail_once:  # ... and a fresh one join a step that fails in decode, after the prefill ran
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(engine.model, "decode", failing_decode)
                with pytest.raises(RuntimeError, match="decode fell over"):
                    engine.step(gens)
            assert not gens[2].started  # its cache was released again
        while any(g.finish_reason is None for g in gens):
            live = [i for i, g in enumerate(gens) if g.finish_reason is None]
            for i, result in zip(live, engine.step([gens[i] for i in live]), strict=True):
                out[i].extend(ids_of(result))
        for g in gens:
            engine.release(g)
        return out

    prompts = [b"The river", b"A", b"She planted"]
    assert run([start(p) for p in prompts], fail_once=True) == run([start(p) for p in prompts], fail_once=False)


def test_a_bad_generation_request_is_the_engines_invalid_input() -> None:
    assert issubclass(GenerationError, InvalidInput)
