"""Offer picker benchmark: expected job cost of our pick vs the cheapest-$/hr pick vs the oracle.

On the recorded book (comfy_lora_cloud/data/offer_book.json, served by the fake's own search code
with the same filter object VastProvider sends), for each preset and resolution:

* ours     = pricing.rank_offers over what the search returned (the production path);
* cheapest = the eligible offer with the lowest $/hr;
* top64    = ours when the search returns only the 64 lowest-$/hr offers (informational: shows
             why the picker asks for every eligible offer rather than a cheap-first page);
* oracle   = brute force over the *whole* book with the constraints applied directly, minimum of
             the same expected-cost model.

Prints expected $ and the ratios ours/oracle (target <= 1.05) and ours/cheapest (target < 1 where
the two picks differ). Run from the repo root: ``python benchmarks/offers.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_lora_cloud.providers.pricing import Job, eligible, estimate, rank_offers  # noqa: E402
from comfy_lora_cloud.providers.vast import offer_from_vast, offer_query  # noqa: E402
from comfy_lora_cloud.training.estimate import preset_steps  # noqa: E402
from tests.fakes.vast.offer_book import load_book  # noqa: E402
from tests.fakes.vast.state import FakeVastState  # noqa: E402


def main() -> int:
    book = load_book()
    market = FakeVastState("bench", offers=book)
    ok = True
    print(f"offer book: {len(book)} offers")
    print(f"{'preset':9} {'res':>5} {'tier':>4} {'steps':>5} | {'ours $':>7} {'cheap $':>7} {'oracle $':>8} | "
          f"{'ours/oracle':>11} {'ours/cheap':>10} {'top64/oracle':>12} | ours -> cheapest-$/hr")
    for preset in ("character", "style", "concept"):
        for res in (512, 1024):
            for tier in (24, 48, 80):
                job = Job(preset=preset, resolution=res, tier=tier, steps=preset_steps(preset, tier=tier))
                rows = market.search(offer_query(job.request()))
                pick = rank_offers([offer_from_vast(r) for r in rows], job)
                disk = job.disk_gb
                all_offers = [offer_from_vast(r) for r in (market.offer_view(o, bid=False, storage_gb=disk) for o in book)]
                oracle = min(e.expected_cost for e in (estimate(o, job) for o in all_offers if eligible(o, job)) if e)
                short = job.request()
                short.limit = 64  # what if the search returned only the 64 lowest-$/hr offers?
                pick64 = rank_offers([offer_from_vast(r) for r in market.search(offer_query(short))], job)
                ours, cheap = pick.best.expected_cost, pick.cheapest_dph.expected_cost
                r_oracle, r_cheap = ours / oracle, ours / cheap
                differ = pick.best.offer.id != pick.cheapest_dph.offer.id
                ok &= r_oracle <= 1.05 and (not differ or r_cheap < 1.0)
                print(f"{preset:9} {res:>5} {tier:>4} {job.steps:>5} | {ours:7.2f} {cheap:7.2f} {oracle:8.2f} | "
                      f"{r_oracle:11.3f} {r_cheap:10.3f} {pick64.best.expected_cost / oracle:12.3f} | {pick.best.offer.gpu_name} -> {pick.cheapest_dph.offer.gpu_name}")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
