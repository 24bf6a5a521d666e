"""Money: the public face of everything that rents, bills and may be destroyed.

* :mod:`.budgets`: the budgets and their verdicts; :mod:`.costs`: the cost ledger and the cost
  service (:class:`Costs`); :mod:`.charges`: the provider's charge rows, capped by the rates;
* :mod:`.ownership`: who owns a labelled instance (the one place the guard asks);
  :mod:`.grace`: the one unowned-grace rule;
* :mod:`.destroy`: the one destroy (provider call, record, log line, event);
* :mod:`.instances` (:class:`Instances`) and :mod:`.offers` (:class:`Offers`): the nouns;
* :mod:`.problems`: what a guard pass could not do (``kinds``: the problem kinds);
* :mod:`.views`: the records the nouns hand to the edges (``to_dict()``: their JSON).
"""

from .budgets import Budgets, check_launch, evaluate, month_level, month_news, run_limit
from .charges import CHARGES_WINDOW_S, billed_by_instance, cap_charges, our_charge
from .costs import CostLedger, Costs, known_rates, month_start, month_usd_from_charges
from .destroy import destroy_instance
from .grace import UnownedGrace
from .instances import Instances
from .offers import BOOK_SOURCE, Offers, gpu_choices
from .ownership import (Attributed, Attribution, Bucket, BucketFacts, BucketView, Decision, Local,
                        LocalSession, Verdict, attribute_all, bucket_view, decide, decide_session,
                        is_run_id, launch_bucket_id, learn_bucket, report_attribution, report_facts,
                        session_bucket_view, written_at)
from .budgets import Verdict as BudgetVerdict  # ownership's Verdict has the short name
from .problems import Problem, Problems
from .views import (BILLING_STATES, CostSummary, DestroyedInstance, InstanceLogs, InstanceView, LedgerSummary,
                    StoppedInstance)

# the kinds of guard problem (problems.STATE_STORE, ...), as one name the other packages read
from . import problems as kinds  # noqa: E402

__all__ = [
    "kinds",
    "BILLING_STATES",
    "CostSummary",
    "DestroyedInstance",
    "InstanceLogs",
    "InstanceView",
    "LedgerSummary",
    "StoppedInstance",
    "Attributed",
    "Attribution",
    "BOOK_SOURCE",
    "Bucket",
    "BucketFacts",
    "BucketView",
    "BudgetVerdict",
    "Budgets",
    "CHARGES_WINDOW_S",
    "CostLedger",
    "Costs",
    "Decision",
    "Instances",
    "Local",
    "LocalSession",
    "Offers",
    "Problem",
    "Problems",
    "UnownedGrace",
    "Verdict",
    "attribute_all",
    "billed_by_instance",
    "bucket_view",
    "cap_charges",
    "check_launch",
    "decide",
    "decide_session",
    "destroy_instance",
    "evaluate",
    "gpu_choices",
    "is_run_id",
    "known_rates",
    "launch_bucket_id",
    "learn_bucket",
    "month_level",
    "month_news",
    "month_start",
    "month_usd_from_charges",
    "our_charge",
    "report_attribution",
    "report_facts",
    "run_limit",
    "session_bucket_view",
    "written_at",
]
