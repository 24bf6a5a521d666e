"""Training runs: the face that the App, the other service packages and the edges import.

- :mod:`.request`: what a user asks a run to be (:class:`TrainRequest`), checked
- :mod:`.start`: the one start path (:func:`~.start.start_run`), offer choice, stale launches
- :mod:`.launch`: the money-safe order of one launch (intent -> labelled create -> record)
- :mod:`.follow`: following a run to its end, fetching its LoRA
- :mod:`.control`: :class:`Runs`, the noun every edge calls (list, start, stop, follow)
- :mod:`.lifecycle`: the one end of a run (store and bucket)
- :mod:`.attempts`, :mod:`.recovery`, :mod:`.recoveries`: preemption policy and history, the
  guard's recovery round, the App's recovery noun
- :mod:`.outputs`, :mod:`.train_config`, :mod:`.preflight`: a run's files, the config editor,
  the dataset checks before money
- :mod:`.views`: the typed records the nouns answer with (each with the ``to_dict()`` the routes
  send and the CLI's ``--json`` prints)
"""

from .attempts import Attempt, Policy, RunHistory
from .control import Runs
from .follow import fetch_lora, wait_for_run
from .lifecycle import end_run, finish_pending
from .outputs import RunOutputs
from .recoveries import Recoveries
from .recovery import RecoveryReport
from .request import LORA_TYPES, REQUEST_RANGES, TrainRequest
from .start import INTERRUPTED, StartResult
from .train_config import TrainConfigs, editor_overrides
from .views import (ConfigCheck, EditorPresets, EditorValues, FieldError, PlanFiles, PresetDefaults, RunConfig,
                    RunEvents, RunLog, RunPage, RunPlan, RunView, SampleListing, SamplesDownload, StatusPage,
                    StopResult)

__all__ = ["INTERRUPTED", "LORA_TYPES", "REQUEST_RANGES", "Attempt", "ConfigCheck", "EditorPresets", "EditorValues",
           "FieldError", "PlanFiles", "Policy", "PresetDefaults", "Recoveries", "RecoveryReport", "RunConfig", "RunEvents",
           "RunHistory", "RunLog", "RunOutputs", "RunPage", "RunPlan", "RunView", "Runs", "SampleListing",
           "SamplesDownload", "StartResult", "StatusPage", "StopResult", "TrainConfigs", "TrainRequest",
           "editor_overrides", "end_run", "fetch_lora", "finish_pending", "wait_for_run"]
