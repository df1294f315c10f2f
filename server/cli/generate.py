"""``inferd generate MODEL "prompt"``: stream a generative model's text to the terminal as it arrives.

Text goes to stdout piece by piece (flushed, so tokens appear as they are generated); with ``--stats``
a summary (tokens, finish reason, time to first token, tokens/s) goes to stderr. Ctrl-C cancels the
stream on the server.
"""

from __future__ import annotations

import argparse
import codecs
import sys
import time
from collections.abc import Callable
from typing import Any

from server.cli.connect import connect


def stream_summary(stats: Any) -> str:
    """One line of ``inferd stats`` for a version that streams (a VersionStatistics message)."""
    st = stats.streaming
    per_step = st.step_streams / st.steps if st.steps else 0.0
    return (
        f"{stats.name} v{stats.version} streams: {st.active_streams} active, {st.waiting_streams} waiting, "
        f"{st.paused_streams} paused; {st.streams_started} started, {st.streams_completed} completed, "
        f"{st.streams_cancelled} cancelled, {st.streams_expired} expired, {st.streams_rejected} rejected, "
        f"{st.streams_failed} failed; {st.steps} steps ({per_step:.1f} streams/step), "
        f"{st.generated_tokens} tokens; caches {st.cache_bytes} bytes held, {st.caches_freed} freed"
    )


def add_parser(sub: Any, add_address: Callable[[argparse.ArgumentParser], None]) -> None:
    generate = sub.add_parser(
        "generate", help="stream text from a generative model (PredictStream), printing tokens as they arrive"
    )
    generate.add_argument("model", help="a generative model's name")
    generate.add_argument("prompt", help="the prompt text")
    generate.add_argument("--max-tokens", type=int, default=None, help="tokens to generate at most")
    generate.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's, 1.0)")
    generate.add_argument("--top-k", type=int, default=None, help="sample from the K most likely tokens (0 = off)")
    generate.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with mass P")
    generate.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    generate.add_argument("--stop", action="append", default=None, metavar="STR", help="stop sequence (repeat)")
    generate.add_argument("--ignore-eos", action="store_true", default=None, help="keep going past end-of-sequence")
    generate.add_argument("--version", type=int, default=None, help="a specific version")
    generate.add_argument("--label", default=None, help="a version label, e.g. stable")
    generate.add_argument("--input-name", default="prompt", help="the model's prompt input (default %(default)s)")
    generate.add_argument("--stats", action="store_true", help="print tokens, finish reason and timings to stderr")
    add_address(generate)


def _not_generative(client: Any, args: argparse.Namespace) -> str | None:
    """Say so when the model has no prompt input, instead of the server's "'prompt' is not an input"."""
    meta = client.metadata(args.model, version=args.version)
    inputs = [t.name for t in meta.inputs]
    if args.input_name in inputs:
        return None
    return (
        f"inferd: model '{args.model}' is not a generative model: it has no '{args.input_name}' input "
        f"(inputs: {', '.join(inputs)}); use 'inferd predict', or --input-name if its prompt input is named otherwise"
    )


def run(args: argparse.Namespace) -> int:
    from inferd.errors import InvalidArgument
    from inferd.predictions import generation_parameters, prompt_inputs

    parameters = generation_parameters(
        {
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "seed": args.seed,
            "stop": args.stop,
            "ignore_eos": args.ignore_eos,
        }
    )
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    out = sys.stdout
    started = time.monotonic()
    first: float | None = None
    tokens = 0
    finish: Any = "incomplete"
    with connect(args) as client:
        stream = client.predict_stream(
            args.model,
            prompt_inputs(args.prompt, args.input_name),
            version=args.version,
            label=args.label,
            parameters=parameters,
        )
        try:
            for chunk in stream:
                ids = chunk.outputs.get("token_ids")
                tokens += 0 if ids is None else int(ids.size)
                text = chunk.outputs.get("text")
                if text is not None:
                    piece = decoder.decode(b"".join(bytes(t) for t in text.reshape(-1)))
                    if piece:
                        first = first if first is not None else time.monotonic()
                        out.write(piece)
                        out.flush()
                if chunk.final:
                    finish = chunk.parameters.get("finish_reason", "done")
        except KeyboardInterrupt:
            finish = "interrupted"
        except InvalidArgument as exc:
            raise SystemExit(_not_generative(client, args) or f"inferd: {exc}") from None
        finally:
            stream.close()  # cancels the call on the server if it is still open
    out.write(decoder.decode(b"", final=True) + "\n")
    out.flush()
    if args.stats:
        elapsed = time.monotonic() - started
        ttft = f"{(first - started) * 1000:.0f} ms" if first is not None else "-"
        print(
            f"{tokens} tokens, finish_reason={finish}, first text after {ttft}, "
            f"{tokens / elapsed if elapsed > 0 else 0:.0f} tokens/s",
            file=sys.stderr,
        )
    return 130 if finish == "interrupted" else 0
