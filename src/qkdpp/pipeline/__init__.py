"""Stage base class, registry and runners."""

from qkdpp.pipeline.runner import Pipeline
from qkdpp.pipeline.stage import Stage, register_stage, registered_stages, stage_class

__all__ = ["Pipeline", "Stage", "register_stage", "registered_stages", "stage_class"]
