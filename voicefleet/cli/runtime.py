"""``voicefleet runtime serve``: the model server of the GPU pods (torch is imported only
when it runs)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from voicefleet import constants
from voicefleet.cli.pool_token import pool_token
from voicefleet.runtime import limits  # plain numbers: no torch

BACKENDS = ("tiny", "moshi", "hertz-dev", "hertz-tiny")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("runtime", help="Run the batched voice model server.")
    commands = parser.add_subparsers(dest="runtime_command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="Serve Moshi's WebSocket protocol and raw PCM on one port.",
        description=(
            "All sessions share one model and step together once per frame (80 ms for Moshi, "
            f"125 ms for Hertz-dev). Protocols: {constants.PATH_MOSHI_CHAT} (Moshi), "
            f"{constants.PATH_PCM} (PCM16), {constants.PATH_AUDIO} (Hertz-dev's reference). "
            f"Control: {constants.PATH_HEALTHZ}, {constants.PATH_READYZ}, "
            f"{constants.PATH_METRICS}, {constants.PATH_STATUS}, POST {constants.PATH_DRAIN}."
        ),
    )
    serve.add_argument("--backend", choices=BACKENDS, default="tiny")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=constants.RUNTIME_PORT)
    serve.add_argument("--max-sessions", type=int, default=4, help="session slots (batch size)")
    serve.add_argument(
        "--max-session-seconds",
        type=int,
        default=240,
        help="hard cap per conversation; sizes the per-session KV cache",
    )
    serve.add_argument(
        "--weights",
        help="a directory, file:///dir, hf://org/repo, or 'random' (full size, random "
        "weights, for benchmarks); hertz-dev reads safetensors made by convert-hertz",
    )
    serve.add_argument(
        "--prompt",
        help="hertz-dev: the voice prompt every conversation starts from (a WAV or other "
        "audio file, a path, file:// or hf://org/repo/file; stereo: left the caller, right "
        "the model; the last 10 s are used). Default: a second of silence",
    )
    serve.add_argument("--variant", choices=("bf16", "int8"), default="bf16")
    serve.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    serve.add_argument(
        "--token-file",
        type=Path,
        help=f"file with the pool token for POST {constants.PATH_DRAIN} "
        f"(else ${constants.ENV_POOL_TOKEN}; with neither, only SIGTERM drains)",
    )
    serve.add_argument(
        "--drain-seconds", type=int, default=30, help="deadline of the drain SIGTERM starts"
    )
    serve.add_argument("--reconnect-url", help="where drained sessions are told to reconnect")
    serve.add_argument(
        "--greedy",
        action="store_true",
        help="Moshi: argmax instead of sampling (reproducible conversations, for tests)",
    )
    serve.add_argument(
        "--kv-cache-dtype",
        choices=constants.KV_CACHE_DTYPES,
        default=constants.KV_CACHE_BF16,
        help="Moshi: the LM's KV cache in bf16, or fp8 (e4m3, per-vector scales): half the "
        "memory per conversation; on the GPU a fused Triton kernel reads it, on the CPU a "
        "plain torch path",
    )
    serve.add_argument(
        "--codec-workers",
        type=int,
        default=max(1, min(8, (os.cpu_count() or 2) // 2)),
        help="processes for Ogg/Opus encoding and decoding (0: in the server process)",
    )
    serve.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads for a model on the CPU (the tiny model): each step is a few small "
        "ops, and torch's default (every core of the host, not the pod's share) makes "
        "processes that share a node thrash (default 1)",
    )
    _add_bounds(serve)
    serve.set_defaults(func=_serve)
    convert = commands.add_parser(
        "convert-hertz",
        help="Convert Hertz-dev's published .pt checkpoints to safetensors, once.",
        description=(
            "Reads the four published checkpoints (codec, quantizer, resynthesizer, "
            "backbone) from hf://si-pbc/hertz-dev or a directory, checks every tensor's name "
            "and shape, folds the codec's weight norm and writes bf16 safetensors. The "
            "runtime never unpickles; it reads what this writes."
        ),
    )
    convert.add_argument("source", help="hf://si-pbc/hertz-dev, a directory or file:///dir")
    convert.add_argument(
        "--out",
        type=Path,
        help="where to write (default: beside the .pt files, or for hf:// the cache the "
        "runtime reads: $VOICEFLEET_WEIGHTS_CACHE or ~/.cache/voicefleet/weights)",
    )
    convert.add_argument(
        "--tiny", action="store_true", help="the toy architecture of --backend hertz-tiny"
    )
    convert.set_defaults(func=_convert)


# Flags that bound what callers may do: (config field, default, help).
BOUNDS = (
    ("idle_seconds", limits.IDLE_SECONDS, "close a session that sends no audio for this long"),
    (
        "header_timeout_seconds",
        limits.HEADER_TIMEOUT_SECONDS,
        "close a connection that has not sent a whole request line and headers by then",
    ),
    (
        "max_client_lag_seconds",
        limits.MAX_CLIENT_LAG_SECONDS,
        "drop a caller that reads this far behind the audio it is sent (measured by pings)",
    ),
    (
        "input_burst_seconds",
        limits.INPUT_BURST_SECONDS,
        "audio a caller may send ahead of real time; more is dropped, a flood closes it",
    ),
)


def positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _add_bounds(serve: argparse.ArgumentParser) -> None:
    for name, default, help_text in BOUNDS:
        serve.add_argument(
            "--" + name.replace("_", "-"),
            type=positive_seconds,
            default=default,
            metavar="SECONDS",
            help=f"{help_text} (default {default:g})",
        )


def _serve(args: argparse.Namespace) -> int:
    if args.backend in ("tiny", "hertz-tiny") or args.device == "cpu":
        # moshi torch.compile()s a few kernels at first use unless this is set at import
        # time. On the CPU that costs seconds of start-up and a C++ compiler, for nothing.
        os.environ.setdefault("NO_TORCH_COMPILE", "1")
    # Imported here, not at the top: they pull in torch, and `voicefleet plan` must not.
    from voicefleet.runtime.config import RuntimeConfig  # noqa: PLC0415
    from voicefleet.runtime.server import serve  # noqa: PLC0415

    if min(args.max_sessions, args.max_session_seconds, args.cpu_threads) < 1:
        print(
            "--max-sessions, --max-session-seconds and --cpu-threads must be at least 1",
            file=sys.stderr,
        )
        return 2
    token = pool_token(args.token_file)
    config = RuntimeConfig(
        backend=args.backend,
        host=args.host,
        port=args.port,
        max_sessions=args.max_sessions,
        max_session_seconds=args.max_session_seconds,
        weights=args.weights,
        variant=args.variant,
        device=args.device,
        token=token,
        drain_seconds=args.drain_seconds,
        reconnect_url=args.reconnect_url,
        codec_workers=args.codec_workers,
        cpu_threads=args.cpu_threads,
        prompt=args.prompt,
        greedy=args.greedy,
        kv_cache_dtype=args.kv_cache_dtype,
        **{name: getattr(args, name) for name, _, _ in BOUNDS},
    )
    return serve(config)


def _convert(args: argparse.Namespace) -> int:
    from voicefleet.runtime.backends.hertz.convert import convert_command  # noqa: PLC0415

    return convert_command(args.source, args.out, tiny=args.tiny)
