"""Workflow templates: the public face. :mod:`.catalog` holds the templates by name and the
one-click LoRA test (:class:`Templates`); :mod:`.workflow_api` reads a workflow a user gives and
sets what a user sets; :mod:`.convert` turns a canvas workflow into the API form."""

from .catalog import LoraTest, Templates, split_prompts
from .views import LoraTestStatus, TemplateInfo
from .workflow_api import Workflow, load_workflow, resolve_workflow

__all__ = [
    "LoraTest",
    "LoraTestStatus",
    "TemplateInfo",
    "Templates",
    "Workflow",
    "load_workflow",
    "resolve_workflow",
    "split_prompts",
]
