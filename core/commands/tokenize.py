"""``diffuspeech tokenize MANIFEST --out DIR``: a corpus to unit shards, resumable.

The manifest is JSONL with ``id`` and ``audio`` (relative paths are resolved against the
manifest's folder). Files that cannot be read are listed and skipped; the rest finish.
Rerunning the same command resumes: ids already in ``DIR/index.jsonl`` are skipped.
Exit status: 0 when every input was tokenized, 3 when some failed (see ``DIR/failed.jsonl``).
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from ..audio import is_silent
from ..compose import ConfigError
from ..registry import get_registry
from ..unit_store import FAILED_FILE, UnitStoreWriter
from .arguments import allow_intermixed
from .audio_inputs import build_tokenizer, load_batches, pad_batch, read_audio_manifest, tokenizer_node

EXIT_SOME_FAILED = 3


DESCRIPTION = __doc__.split("\n\n", 1)[1]


def configure(p) -> None:
    p.description = DESCRIPTION  # the module's usage notes
    p.add_argument("manifest", help="JSONL file with 'id' and 'audio' on each line")
    p.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    p.add_argument("--tokenizer-config", help="YAML with a 'tokenizer:' section (or just the tokenizer node)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. tokenizer.path=centroids.safetensors")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per encode call (default 8)")
    p.add_argument("--shard-size", type=int, default=1000, help="utterances per shard file (default 1000)")
    p.add_argument("--workers", type=int, default=2, help="threads reading audio ahead (default 2)")
    p.set_defaults(func=run)
    allow_intermixed(p)


def run(args) -> int:
    entries = read_audio_manifest(args.manifest)
    node = tokenizer_node(args.tokenizer_config, args.overrides)
    tokenizer = build_tokenizer(node)
    if not tokenizer.num_units:
        key = getattr(tokenizer, "quantizer_key", "path")
        raise ConfigError(
            f"tokenizer.{key}: the {node['name']} tokenizer has no quantizer; set tokenizer.{key} to a centroids "
            f"file (fit one with `diffuspeech fit-quantizer`)"
        )
    reg = get_registry().registration("tokenizers", node["name"])
    meta = {
        "tokenizer": node,
        "provider": {"package": reg.package, "version": reg.version, "class": reg.as_dict()["class"]},
        "sample_rate": tokenizer.sample_rate,
        "frame_rate": tokenizer.frame_rate,
        "num_units": tokenizer.num_units,
    }
    dedup = bool(getattr(tokenizer, "dedup", False)) and hasattr(tokenizer, "encode_with_durations")
    failures: list[tuple[str, str]] = []
    silent: list[str] = []
    audio_s = 0.0
    done = 0
    with UnitStoreWriter(args.out, meta, shard_size=args.shard_size) as writer:
        todo = [e for e in entries if e.id not in writer]
        if len(todo) < len(entries):
            print(f"resuming: {len(entries) - len(todo)} of {len(entries)} utterances already in {args.out}", file=sys.stderr)
        start = time.perf_counter()
        bar = tqdm(total=len(todo), desc="tokenize", unit="utt")
        for batch in load_batches(todo, tokenizer.sample_rate, args.batch_size, args.workers):
            good = []
            for entry, wav, error in batch:
                if wav is None:
                    failures.append((entry.id, error or "unreadable"))
                    writer.record_failure(entry.id, str(entry.audio), error or "unreadable")
                else:
                    good.append((entry, wav))
            waves = {e.id: w for e, w in good}
            for entry, units, durations in _encode(tokenizer, good, dedup, failures, writer):
                wav = waves[entry.id]
                duration = wav.numel() / tokenizer.sample_rate
                if is_silent(wav):
                    silent.append(entry.id)
                writer.add(entry.id, units, duration, durations)
                audio_s += duration
                done += 1
            bar.update(len(batch))
            elapsed = time.perf_counter() - start
            if audio_s > 0:
                bar.set_postfix(rtf=f"{elapsed / audio_s:.3f}", failed=len(failures))
        bar.close()
    elapsed = time.perf_counter() - start
    if audio_s > 0:
        rtf = elapsed / audio_s
        print(
            f"tokenized {done} utterances, {audio_s / 3600:.3f} h of audio, in {elapsed:.1f} s: "
            f"real-time factor {rtf:.4f} ({1 / max(rtf, 1e-9):.1f}x faster than real time); units in {args.out}",
            file=sys.stderr,
        )
    else:
        print(f"no new utterances tokenized; units in {args.out}", file=sys.stderr)
    if silent:
        print(f"note: {len(silent)} silent utterance(s) (kept): {', '.join(silent[:10])}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} input(s) failed and were skipped (also listed in {args.out}/{FAILED_FILE}):", file=sys.stderr)
        for utt_id, error in failures[:50]:
            print(f"  {utt_id}: {error}", file=sys.stderr)
        if len(failures) > 50:
            print(f"  ... and {len(failures) - 50} more", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def _encode(tokenizer, good, dedup: bool, failures: list, writer: UnitStoreWriter):
    """Encode a batch; if the batch fails, retry one by one so one bad input cannot sink the rest."""
    if not good:
        return []

    def encode(waves):
        wav, lengths = pad_batch(waves)
        if dedup:
            units, durations, n = tokenizer.encode_with_durations(wav, lengths)
            return [(units[i, : int(n[i])], durations[i, : int(n[i])]) for i in range(len(waves))]
        units, n = tokenizer.encode(wav, lengths)
        return [(units[i, : int(n[i])], None) for i in range(len(waves))]

    try:
        out = encode([w for _, w in good])
        return [(e, u, d) for (e, _), (u, d) in zip(good, out)]
    except (ValueError, RuntimeError) as exc:
        if len(good) == 1:
            entry = good[0][0]
            failures.append((entry.id, f"{entry.audio}: {exc}"))
            writer.record_failure(entry.id, str(entry.audio), str(exc))
            return []
    results = []
    for item in good:
        results.extend(_encode(tokenizer, [item], dedup, failures, writer))
    return results
