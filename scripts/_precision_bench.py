"""``bench_worker.py --precision fp32,int8``: the same model in several precisions, side by side.

For each repeat and each precision in turn (alternating, so that a noisy neighbour hurts
every precision alike): the model alone at ``--batch-size`` on pre-decoded batches, then the
real worker end to end from a filled Redis queue at the same batch size. Every figure is a
median over the repeats; the ratios are to the first precision listed. The vectors of the
first batch are compared with the first precision's (cosine).
"""
from __future__ import annotations

import statistics

from scripts.lib import worker_bench as bench
from scripts.lib.report import machine_info


def run(a, images: list[bytes], img_info: dict, command: str) -> dict:
    from models.clip import load_encoder

    precisions = [p.strip() for p in a.precision.split(",") if p.strip()]
    encoders = {}
    for p in precisions:
        print(f"==> loading {a.model} ({a.pretrained}) on {a.device} in {p}", flush=True)
        encoders[p] = load_encoder(a.model, a.pretrained, a.device, seed=0, precision=p)
    first = encoders[precisions[0]]
    pixels = bench.decode_batch(first, images[:a.batch_size], a.decode_threads or 2)
    reference = first.embed_images(pixels)
    runs: dict[str, dict[str, list]] = {p: {"model_only": [], "worker": []} for p in precisions}
    cosine = {p: float((reference * e.embed_images(pixels)).sum(1).min()) for p, e in encoders.items()}
    services = bench.Services(a.store)
    try:
        for rep in range(a.repeat):
            for p, encoder in encoders.items():
                tag = f"{p}, run {rep + 1}/{a.repeat}"
                runs[p]["model_only"].append(bench.model_only(encoder, pixels, a.batch_size, a.images))
                print(f"==> model only, {tag}: {runs[p]['model_only'][-1]['images_per_s']:.1f} images/s"
                      f"{bench.load_note(runs[p]['model_only'][-1])}", flush=True)
                runs[p]["worker"].append(bench.worker_run(services, encoder, a, images[:a.images], a.batch_size,
                                                          f"{p}{rep}", warmup=min(a.images, a.batch_size)))
                print(f"==> worker end to end, {tag}:", flush=True)
                bench.print_worker(runs[p]["worker"][-1])
    finally:
        services.close()
    results = {p: {k: bench.median_run(v) for k, v in r.items()} for p, r in runs.items()}
    base = results[precisions[0]]
    ratios = {p: {"model_only": r["model_only"]["images_per_s"] / base["model_only"]["images_per_s"],
                  "worker": r["worker"]["images_per_s"] / base["worker"]["images_per_s"]} for p, r in results.items()}
    result = {"model": a.model, "pretrained": a.pretrained, "machine": machine_info(first), "images": img_info,
              "batch_size": a.batch_size, "repeat": a.repeat, "command": command, "precisions": precisions,
              "results": results, "ratios": ratios, "min_cosine_to_first": cosine}
    bench.report(markdown(result), result, a.json)
    return result


def markdown(result: dict) -> str:
    m, first = result["machine"], result["precisions"][0]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']} ({m['torch_threads']} threads), "
             f"{result['model']} ({result['pretrained']} weights) on {m['device']}; {m['date']}.",
             f"Command: `{result['command']}`", "",
             f"| precision | model only, images/s | worker end to end, images/s | worker / {first} "
             f"| model / {first} | min cosine to {first} | other processes' CPU use (worker runs) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for p in result["precisions"]:
        r, ra = result["results"][p], result["ratios"][p]
        loads = ", ".join("-" if x is None else f"{100 * x:.0f}%" for x in r["worker"]["all_foreign_load"])
        lines.append(f"| {p} | {r['model_only']['images_per_s']:.1f} | {r['worker']['images_per_s']:.1f} | "
                     f"**{ra['worker']:.2f}x** | {ra['model_only']:.2f}x | "
                     f"{result['min_cosine_to_first'][p]:.4f} | {loads} |")
    lines.append(f"\nbatch {result['batch_size']}, {result['images']['count']} distinct JPEGs, medians of "
                 f"{result['repeat']} alternating runs (worker runs per precision: "
                 + "; ".join(f"{p} {result['results'][p]['worker']['all_images_per_s']}" for p in result["precisions"])
                 + ")")
    base = result["results"][first]["worker"]["all_images_per_s"]
    for p in result["precisions"][1:]:
        pairs = [x / b for x, b in zip(result["results"][p]["worker"]["all_images_per_s"], base)]
        lines.append(f"{p} / {first}, worker, run by run: {', '.join(f'{r:.2f}x' for r in pairs)} "
                     f"(median {statistics.median(pairs):.2f}x)")
    return "\n".join(lines)
