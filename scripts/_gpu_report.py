#!/usr/bin/env python3
"""``gpu_check.sh``'s last step: every step's JSON in, one report out, with an answer per question.

    python -m scripts._gpu_report WORKDIR RESULT.json SECONDS
WORKDIR holds parity.json, sweep.json, options.json, cudagraphs.json, compile.json (whichever
ran) and steps.tsv (name, exit status, seconds, note: one line per step).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from scripts.lib.report import write_json

TARGET_IMAGES_PER_S, TARGET_OVER_SEED = 3000, 20


def load(work: Path, name: str) -> dict | None:
    path = work / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def variants(part: dict | None) -> dict[str, dict]:
    return {v["name"]: v for v in (part or {}).get("variants", [])}


def rate(v: dict | None) -> float | None:
    return None if not v or "worker" not in v else round(v["worker"]["images_per_s"], 1)


def busy(v: dict) -> dict:
    return {"infer_busy_ratio": v["worker"]["infer_busy_ratio"],
            "nvidia_smi_utilization": v["worker"].get("nvidia_smi_utilization")}


def figures(v: dict) -> dict:
    return {"images_per_s": rate(v), "model_only_images_per_s": round(v["model_only"]["images_per_s"], 1)} | busy(v)


def versus(part: dict | None, name: str, base: str = "base") -> dict:
    """The variant ``name`` against ``base`` measured in the same step (end to end, images/s)."""
    vs = variants(part)
    a, b = vs.get(name), vs.get(base)
    if not a:
        return {"measured": False, "why": "step did not run or was cut short"}
    if "skipped" in a:
        return {"measured": False, "why": a["skipped"]}
    out = {"measured": True, "base_images_per_s": rate(b), "cosine_to_eager_min": a.get("cosine_to_base_min"),
           "warm_up_s": a.get("warm_up_s"), "decode_only_images_per_s": a["decode_only"]["images_per_s"]}
    out |= figures(a)
    if rate(a) and rate(b):
        out["over_base"] = round(rate(a) / rate(b), 3)
    return out


def targets(swept: dict[int, dict], seed: dict | None) -> dict:
    best = max(swept.values(), key=lambda v: v["worker"]["images_per_s"], default=None)
    over_seed = rate(best) / rate(seed) if best and seed else None
    return {"best_batch": best["options"]["batch"] if best else None, "best_images_per_s": rate(best),
            "seed_style_images_per_s": rate(seed), "over_seed": round(over_seed, 2) if over_seed else None,
            "images_per_s_target": TARGET_IMAGES_PER_S, "over_seed_target": TARGET_OVER_SEED,
            "met": bool(over_seed and rate(best) >= TARGET_IMAGES_PER_S and over_seed >= TARGET_OVER_SEED)}


def answers(work: Path) -> dict:
    parity, sweep, options = load(work, "parity"), load(work, "sweep"), load(work, "options")
    swept = {v["options"]["batch"]: v for v in variants(sweep).values() if "worker" in v}
    seed = swept.pop(1, None)
    steps_busy = {f"{step}:{v['name']}": busy(v) for step in ("sweep", "options", "cudagraphs", "compile")
                  for v in variants(load(work, step)).values() if "worker" in v}
    decoding = ("base", "threads=", "decode=")
    return {
        "fp16_parity": {k: (parity or {}).get(k) for k in ("ok", "precision", "image_cosine_min", "text_cosine_min",
                                                          "batch_vs_single_cosine_min", "checks")},
        "batch_sweep": {b: figures(v) for b, v in sorted(swept.items())},
        "pinned_memory_off": versus(options, "pin=off"),
        "cudagraphs": versus(load(work, "cudagraphs"), "compile=cudagraphs"),
        "torch_compile": versus(load(work, "compile"), "compile=compile"),
        "decode": {name: versus(options, name) for name in variants(options) if name.startswith(decoding)},
        "gpu_busy": steps_busy,
        "targets": targets(swept, seed),
    }


def steps(work: Path) -> list[dict]:
    rows = []
    if (work / "steps.tsv").is_file():
        for line in (work / "steps.tsv").read_text().splitlines():
            name, rc, seconds, note = (line.split("\t") + ["", "", "", ""])[:4]
            rows.append({"step": name, "exit_status": int(rc) if rc.lstrip("-").isdigit() else None,
                         "seconds": int(seconds) if seconds.isdigit() else None, "note": note})
    return rows


def main(work: str, result: str, seconds: str) -> int:
    w = Path(work)
    report = {"ok": bool((load(w, "parity") or {}).get("ok")), "seconds": int(seconds), "answers": answers(w),
              "steps": steps(w), "raw": {n: load(w, n) for n in ("parity", "sweep", "options", "cudagraphs", "compile")}}
    Path(result).parent.mkdir(parents=True, exist_ok=True)
    write_json(result, report)
    print(json.dumps(report["answers"], indent=2, default=str))
    print(f"==> {'PASS' if report['ok'] else 'FAIL'}: results in {result} ({seconds}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
