"""The targets of the speed work, each with its verdict from the figures of one benchmark
run: met, NOT MET, or not checkable here (the official implementation's figures are
quoted, not measured).  No torch: the verdicts are plain arithmetic on the report."""

from __future__ import annotations

# The official implementation's figures quoted for "a machine like yours"
# (2 cores, float32, the same shapes), in seconds, by (section, variant).
OFFICIAL_S = {("train_step", "irpe-k"): 8.4, ("train_step", "plain"): 7.3,
              ("inference_batch1", "irpe-k"): 0.73}
OFFICIAL_PEAK_MEMORY_BYTES = 4.6e9


def targets(report: dict) -> list[dict]:
    """Every speed target with the measured figure, ``met`` (True / False / None when
    it cannot be measured here) and, where it is not met, the reason derived from the
    figures of the same run.  ``report`` is what ``python -m benchmarks.speed``
    writes to JSON."""
    rows = []

    def row(name, limit, value, met, note=""):
        rows.append({"target": name, "limit": limit, "measured": value, "met": met,
                     "note": note})

    attn = report["attention"]
    aa = attn["plain (again: noise floor)"]["ratio"]
    r = attn["irpe-k (auto)"]["ratio"]
    row("iRPE-K attention fwd+bwd / plain", "<= 1.15", f"{r:.3f}", r <= 1.15,
        f"noise floor (plain again / plain) {aa:.3f}")
    if "train_step" not in report:
        return rows
    for key, name, limit in (("train_step", "train step iRPE-K / plain", 1.05),
                             ("inference_batch1", "inference iRPE-K / plain", 1.03)):
        res = report[key]
        r, aa = res["irpe-k"]["ratio"], res["plain (again)"]["ratio"]
        extra = res["irpe-k"]["median_s"] - res["plain"]["median_s"]
        note = f"noise floor {aa:.3f}"
        if r > limit:
            note += (f"; iRPE-K adds {extra * 1e3:.0f} ms to {res['plain']['median_s']:.2f} s"
                     + (" (within the noise floor)" if r - 1 <= abs(aa - 1) else ""))
        row(name, f"<= {limit:.2f}", f"{r:.3f}", r <= limit, note)
    cache = report.get("bucket_cache")
    if cache:
        row("bucket maps built once per shape, shared by all layers",
            f"builds = shapes ({cache['shapes']})", f"{cache['builds']} builds, "
            f"{cache['held_bytes'] / 2**20:.1f} MiB held", cache["builds"] <= cache["shapes"],
            f"cache bounded at {cache['max_entries']} maps")
    mem = report.get("peak_memory_bytes")
    if mem:
        m = mem["irpe-k"]
        row("peak memory of the iRPE-K train step", "<= official 4.6 GB",
            f"{m / 1e9:.2f} GB", m <= OFFICIAL_PEAK_MEMORY_BYTES)
    fl = report.get("flops", {})
    peak = fl.get("matmul_peak_flops")
    for key, name, factor in (("train_step", "train step vs official (iRPE-K)", 1.5),
                              ("inference_batch1", "inference vs official (iRPE-K)", 1.3)):
        ours = report[key]["irpe-k"]["median_s"]
        quoted = OFFICIAL_S[key, "irpe-k"]
        note = "official code not runnable here; quoted figure from another machine"
        flops = fl.get("irpe-k", {}).get(
            "train_step_flops" if key == "train_step" else "inference_flops")
        if flops and peak:
            need = flops / quoted
            note += (f"; its {quoted} s means {need / 1e9:.0f} GFLOP/s = "
                     f"{need / peak:.2f} x this machine's matmul peak")
        row(name, f">= {factor} x", f"{quoted / ours:.2f} x ({ours:.2f} s vs {quoted} s)",
            None, note)
    return rows


def print_targets(rows: list[dict]) -> None:
    print("\n## Targets (speed work)")
    for t in rows:
        verdict = {True: "met", False: "NOT MET", None: "not checkable"}[t["met"]]
        line = f"{verdict:14s} {t['target']}: {t['measured']} (target {t['limit']})"
        print(line + (f"\n{'':15s}{t['note']}" if t["note"] else ""))
