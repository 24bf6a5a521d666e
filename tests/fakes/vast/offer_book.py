"""Generate the recorded offer book (``comfy_lora_cloud/data/offer_book.json``).

The book is synthetic but shaped like vast.ai's market: per-GPU price bands, a spread of host
download speeds, reliability, disk and RAM. Price bands are estimates of the public vast.ai
market (the reference gives only one concrete price, "$0.389/hour"); every band is marked as an
estimate in the written file. Deterministic: the same seed writes the same book, so the fake
server and ``benchmarks/offers.py`` see identical offers.

Run ``python -m tests.fakes.vast.offer_book`` from the repo root to rewrite the file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

BOOK_PATH = Path(__file__).resolve().parents[3] / "comfy_lora_cloud" / "data" / "offer_book.json"

# gpu_name: (VRAM GB, on-demand $/hr per GPU low, high, how many offers, compute_cap)
# All price bands: estimates of the vast.ai market, not measured.
GPU_BANDS: dict[str, tuple[int, float, float, int, int]] = {
    "RTX 4060 Ti": (16, 0.09, 0.18, 12, 890),
    "RTX 3090": (24, 0.13, 0.30, 40, 860),
    "RTX A5000": (24, 0.18, 0.32, 14, 860),
    "L4": (24, 0.25, 0.45, 10, 890),
    "RTX 4090": (24, 0.28, 0.62, 50, 890),
    "RTX 5090": (32, 0.55, 0.95, 20, 1200),
    "RTX A6000": (48, 0.40, 0.70, 18, 860),
    "A40": (48, 0.33, 0.55, 12, 860),
    "L40S": (48, 0.60, 0.95, 12, 890),
    "RTX 6000Ada": (48, 0.70, 1.05, 10, 890),
    "A100 PCIE": (40, 0.55, 0.90, 8, 800),
    "A100 SXM4": (80, 0.80, 1.45, 16, 800),
    "H100 PCIE": (80, 1.40, 2.20, 8, 900),
    "H100 SXM": (80, 1.60, 2.70, 16, 900),
    "H200": (141, 2.50, 3.60, 6, 900),
}
REGIONS = ["Texas, US", "California, US", ", US", "Quebec, CA", "Germany, DE", "Netherlands, NL",
           "Poland, PL", "Sweden, SE", "Japan, JP", ", TW", "Norway, NO", "Spain, ES"]


def make_book(seed: int = 20261128) -> list[dict]:
    rng = random.Random(seed)
    offers: list[dict] = []
    next_id = 4_100_000
    for gpu, (vram, lo, hi, count, cc) in GPU_BANDS.items():
        for _ in range(count):
            next_id += rng.randint(1, 97)
            num_gpus = rng.choices([1, 2, 4, 8], weights=[70, 15, 10, 5])[0]
            per_gpu = round(rng.uniform(lo, hi), 4)
            dph_base = round(per_gpu * num_gpus, 4)
            storage_cost = round(rng.choice([0.1, 0.15, 0.2, 0.25, 0.3]), 3)  # $/GB/month
            inet_down = round(rng.choice([100, 200, 400, 600, 900, 1500, 3000, 6000]) * rng.uniform(0.6, 1.0), 1)
            reliability = round(min(0.9999, rng.betavariate(30, 1.2)), 4)
            offers.append({
                "id": next_id,
                "ask_contract_id": next_id,
                "machine_id": 10_000 + next_id % 9973,
                "host_id": 50_000 + next_id % 997,
                "gpu_name": gpu,
                "num_gpus": num_gpus,
                "gpu_ram": vram * 1000,
                "gpu_total_ram": vram * 1000 * num_gpus,
                "compute_cap": cc,
                "cuda_max_good": rng.choice([12.2, 12.4, 12.6, 12.8]),
                "driver_version": rng.choice(["550.127.05", "560.35.03", "570.133.07"]),
                "cpu_cores_effective": float(rng.choice([8, 12, 16, 24, 32]) * num_gpus),
                "cpu_ram": int(rng.choice([32, 64, 128, 256]) * 1000 * max(1, num_gpus // 2)),
                "cpu_ghz": round(rng.uniform(2.2, 4.5), 1),
                "disk_space": float(rng.choice([80, 150, 250, 500, 1000, 2000])),
                "disk_bw": round(rng.uniform(500, 6000), 1),
                "inet_down": inet_down,
                "inet_up": round(inet_down * rng.uniform(0.3, 1.0), 1),
                "inet_down_cost": round(rng.choice([0.0, 0.002, 0.005, 0.01]), 4),
                "inet_up_cost": round(rng.choice([0.0, 0.002, 0.005, 0.01]), 4),
                "dph_base": dph_base,
                "storage_cost": storage_cost,
                "min_bid": round(dph_base * rng.uniform(0.45, 0.75), 4),
                "reliability": reliability,
                "reliability2": reliability,
                "verified": rng.random() < 0.85,
                "geolocation": rng.choice(REGIONS),
                "public_ipaddr": f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "static_ip": rng.random() < 0.5,
                "direct_port_count": rng.choice([0, 10, 50, 200]),
                "duration": float(rng.choice([3, 7, 30, 90]) * 86400),
                "dlperf": round(vram * rng.uniform(1.5, 3.0) * num_gpus, 2),
                "pcie_bw": round(rng.uniform(6, 50), 1),
                "pci_gen": rng.choice([3.0, 4.0, 5.0]),
                "hosting_type": rng.choice([0, 0, 0, 1]),
                "external": False,
                "rentable": True,
                "rented": False,
                "cpu_arch": "amd64",
                "has_avx": 1,
            })
    return offers


def write_book(path: Path = BOOK_PATH) -> None:
    doc = {
        "_about": "Synthetic vast.ai offer book for tests and benchmarks/offers.py. Prices are ESTIMATES "
                  "of the public market (per-GPU bands in tests/fakes/vast/offer_book.py), not a recording.",
        "offers": make_book(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load_book(path: Path = BOOK_PATH) -> list[dict]:
    return json.loads(path.read_text())["offers"]


if __name__ == "__main__":
    write_book()
    print(f"wrote {len(make_book())} offers to {BOOK_PATH}")
