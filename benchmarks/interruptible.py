"""Interruptible runs with recovery against on-demand: expected cost and time, printed as ratios.

On the bundled offer book (comfy_lora_cloud/data/offer_book.json, searched with the fake's own
search code and the filter object VastProvider sends), for each preemption rate (preemptions per
hour of running; the input, ``--rate`` or a range):

* on-demand     = the picker's best on-demand offer (pricing.rank_offers, as a run rents it);
* interruptible = the picker's best bid offer, priced with the preemption model
                  (pricing.preemption_overhead) at that rate;
* simulated     = a Monte Carlo run of the recovery policy on the same bid offer: preemptions
                  arrive at the rate over running time; each one loses the training since the last
                  checkpoint (one every ``checkpoint_s`` of training, the interruptible epoch) and the
                  restart on a new host (weights + setup), and leaves the run without a GPU for the
                  image pull on the new host (disk still billed).

Prints $ and hours of both, the ratios interruptible/on-demand, the model against the simulation
(target: within 5 % on running time and cost), the overhead the picker now derives from the model
(it used to be the constant 0.15), the share of runs that would hit the default max attempts, and
the rate at which interruptible stops paying. Run from the repo root:
``python benchmarks/interruptible.py [--rate 0.25] [--preset character] [--trials 4000]``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comfy_lora_cloud.providers.pricing import Estimate, Job, rank_offers, throughput_table  # noqa: E402
from comfy_lora_cloud.providers.vast import offer_from_vast, offer_query  # noqa: E402
from comfy_lora_cloud.settings import Settings  # noqa: E402
from comfy_lora_cloud.training.estimate import preset_steps  # noqa: E402
from tests.fakes.vast.offer_book import load_book  # noqa: E402
from tests.fakes.vast.state import FakeVastState  # noqa: E402

RATES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
OLD_CONSTANT = 0.15  # the picker's interruptible_overhead before this model


def best(market: FakeVastState, job: Job) -> Estimate:
    rows = market.search(offer_query(job.request()))
    return rank_offers([offer_from_vast(r, job.interruptible) for r in rows], job).best


def simulate(e: Estimate, *, rate: float, checkpoint_s: float, wait_s: float, trials: int, max_attempts: int,
             rng: random.Random) -> dict[str, float]:
    """Mean running s, wall s and $ of the run priced by ``e``, under Poisson preemptions."""
    restart = e.weights_s + e.fixed_s
    train = e.train_s
    run_sum = wall_sum = cost_sum = given_up = 0.0
    for _ in range(trials):
        running, down, done, preemptions = 0.0, 0.0, 0.0, 0
        while True:  # one attempt: the restart, then training from the last checkpoint
            left = restart + (train - done)
            until = rng.expovariate(rate / 3600.0) if rate > 0 else math.inf
            if until >= left:
                running += left
                break
            running += until
            preemptions += 1
            down += wait_s + e.pull_s
            trained = max(until - restart, 0.0)
            done = math.floor((done + trained) / checkpoint_s) * checkpoint_s if trained else done
            done = min(done, train)
        given_up += preemptions >= max_attempts
        wall = e.pull_s + running + down
        run_sum += running
        wall_sum += wall
        cost_sum += (e.gpu_dph * running + e.disk_dph * wall) / 3600.0
    return {"run_s": run_sum / trials, "wall_s": wall_sum / trials, "cost": cost_sum / trials,
            "given_up": given_up / trials}


def break_even(market: FakeVastState, base: dict, on_cost: float) -> float | None:
    """The preemption rate at which the best interruptible offer costs what on-demand does."""
    lo, hi = 0.0, 64.0
    if best(market, Job(**base, interruptible=True, preemption_rate=hi)).expected_cost < on_cost:
        return None
    for _ in range(40):
        mid = (lo + hi) / 2
        if best(market, Job(**base, interruptible=True, preemption_rate=mid)).expected_cost < on_cost:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, action="append", help="preemptions per running hour (repeatable)")
    ap.add_argument("--preset", default="character", choices=("character", "style", "concept"))
    ap.add_argument("--tier", type=int, default=24, choices=(24, 48, 80))
    ap.add_argument("--trials", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args(argv)
    defaults = Settings.model_fields
    checkpoint_s = float(defaults["preempt_checkpoint_minutes"].default) * 60
    wait_s = 0.0  # priced as "moved at once"; a wait only adds disk-billed downtime
    max_attempts = int(defaults["preempt_max_attempts"].default)
    book = load_book()
    market = FakeVastState("bench", offers=book)
    rng = random.Random(args.seed)
    base = dict(preset=args.preset, resolution=1024, tier=args.tier, steps=preset_steps(args.preset, tier=args.tier),
                checkpoint_s=checkpoint_s, resume_wait_s=wait_s)
    on = best(market, Job(**base))
    table_rate = float(throughput_table()["job_overheads"]["preemption_rate_per_hour"]["value"])
    print(f"offer book: {len(book)} offers; {args.preset} job, tier {args.tier} GB, 1024 px, {base['steps']} steps; "
          f"checkpoint every {checkpoint_s / 60:g} min of training, recovery moves the run at once")
    print(f"on-demand: offer {on.offer.id} {on.offer.gpu_name} ${on.offer.dph_total:.3f}/hr -> "
          f"${on.expected_cost:.3f} expected, {on.hours:.2f} h")
    print(f"{'rate/h':>6} | {'bid offer':<22} {'$/hr':>6} {'n':>5} | {'int $':>6} {'int h':>6} | "
          f"{'$ int/od':>8} {'h int/od':>8} | {'overhead':>8} {'run model/sim':>13} {'$ model/sim':>11} | "
          f"{'>=max att.':>10}")
    ok = True
    for rate in args.rate or RATES:
        e = best(market, Job(**base, interruptible=True, preemption_rate=rate))
        sim = simulate(e, rate=rate, checkpoint_s=checkpoint_s, wait_s=wait_s, trials=args.trials,
                       max_attempts=max_attempts, rng=rng)
        overhead = e.run_s / (e.weights_s + e.fixed_s + e.train_s) - 1
        r_run, r_cost = e.run_s / sim["run_s"], e.cost / sim["cost"]
        ok &= abs(r_run - 1) <= 0.05 and abs(r_cost - 1) <= 0.05
        print(f"{rate:6.2f} | {str(e.offer.id) + ' ' + e.offer.gpu_name:<22} {e.offer.dph_total:6.3f} "
              f"{e.preemptions:5.2f} | {e.expected_cost:6.3f} {e.hours:6.2f} | "
              f"{e.expected_cost / on.expected_cost:8.3f} {e.hours / on.hours:8.3f} | {overhead:8.3f} "
              f"{r_run:13.3f} {r_cost:11.3f} | {sim['given_up']:10.1%}")
    at_table = best(market, Job(**base, interruptible=True))
    derived = at_table.run_s / (at_table.weights_s + at_table.fixed_s + at_table.train_s) - 1
    print(f"the picker's rate ({table_rate:g}/h, data/gpu_throughput.json) gives an overhead of {derived:.3f} on "
          f"this job (the old constant: {OLD_CONSTANT})")
    even = break_even(market, base, on.expected_cost)
    print("interruptible costs less than on-demand at every rate up to 64/h" if even is None else
          f"interruptible stops paying at {even:.2f} preemptions per running hour")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
