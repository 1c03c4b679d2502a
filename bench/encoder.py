"""Encoder throughput: the plain TextEncoder class against the Serve deployment, in the same run.

    python bench/encoder.py --json                 # CPU: plain class, then Serve with batching
    python bench/encoder.py --plain-only --json    # a GPU machine without Ray: the plain class only

Texts are short (movie-title-like, ~8 words). The Serve figure is concurrent single-text
requests through a deployment handle, batched by @serve.batch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--texts", type=int, default=2048, help="texts per measurement")
parser.add_argument("--batch", type=int, default=64, help="batch size of the plain class and of Serve")
parser.add_argument("--concurrency", type=int, default=128, help="concurrent single-text Serve requests")
parser.add_argument("--wait-s", type=float, default=0.05, help="Serve batch_wait_timeout_s")
parser.add_argument("--model-dir", default=None, help="a local HF model directory (default: MiniLM)")
parser.add_argument("--device", default=None, help="cpu, cuda (default: cuda if available)")
parser.add_argument("--plain-only", action="store_true", help="only the plain class (no Ray needed)")
parser.add_argument("--threads", type=int, default=None, help="torch threads of the Serve replica (default: all cores)")
parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for this process and every Ray process (e.g. OMP_WAIT_POLICY)")
parser.add_argument("--json", action="store_true")
args = parser.parse_args()

for setting in args.env:  # before torch loads and Ray starts: the replica inherits them too
    name, _, value = setting.partition("=")
    os.environ[name] = value
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from rayrec.encoder import TextEncoder  # noqa: E402

WORDS = "night love war star city dark river king lost summer ghost blue road house girl man".split()
GENRES = ["Drama", "Comedy", "Horror", "Action", "Romance", "Thriller", "Sci-Fi", "Animation"]


def texts(n: int) -> list[str]:
    return [
        f"The {WORDS[i % 16].title()} {WORDS[(i * 7) % 16].title()} ({1950 + i % 70}). "
        f"{GENRES[i % 8]}, {GENRES[(i * 3) % 8]}"
        for i in range(n)
    ]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def plain(corpus: list[str]) -> tuple[float, TextEncoder]:
    enc = TextEncoder(model_dir=args.model_dir, device=args.device, batch_size=args.batch)
    enc.encode(corpus[: args.batch])  # warm up
    t0 = time.perf_counter()
    enc.encode(corpus)
    return len(corpus) / (time.perf_counter() - t0), enc


def served(corpus: list[str]) -> float:
    import ray
    from ray import serve
    from rayrec.serve_app.encoder import Encoder

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    app = Encoder.options(user_config={"max_batch_size": args.batch, "batch_wait_timeout_s": args.wait_s}).bind(
        args.model_dir, args.device, args.threads
    )
    handle = serve.run(app, name="encoder-bench", route_prefix=None)

    async def run() -> float:
        await handle.encode.remote(corpus[: args.batch])
        queue = list(corpus)
        t0 = time.perf_counter()

        async def client() -> None:
            while queue:
                text = queue.pop()
                await handle.encode.remote([text])

        before = await handle.info.remote()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - t0
        after = await handle.info.remote()
        served.mean_batch = (after["texts"] - before["texts"]) / max(1, after["batches"] - before["batches"])
        return len(corpus) / elapsed

    try:
        return asyncio.run(run())
    finally:
        serve.shutdown()
        ray.shutdown()


def main() -> dict:
    corpus = texts(args.texts)
    log(f"plain TextEncoder, batch {args.batch}")
    plain_tps, enc = plain(corpus)
    out = {
        "texts": args.texts,
        "batch": args.batch,
        "device": enc.device,
        "fp16": enc.fp16,
        "plain_texts_per_s": round(plain_tps, 1),
        "serve_threads": args.threads,
        "env": args.env,
    }
    del enc
    if not args.plain_only:
        log(f"Serve deployment, {args.concurrency} concurrent single-text requests")
        serve_tps = served(corpus)
        out["serve_texts_per_s"] = round(serve_tps, 1)
        out["serve_over_plain"] = round(serve_tps / plain_tps, 3)
        out["serve_mean_batch"] = round(served.mean_batch, 1)
    out["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    return out


if __name__ == "__main__":
    result = main()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
