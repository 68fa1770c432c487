"""CPU benchmark of GhostNetV3 backbones and detectors against peers, all in one run (the package
behind ``tools/benchmark.py``): :mod:`.subjects` builds the models and their forms, :mod:`.timing`
times them round-robin, :mod:`.measure` runs it all, :mod:`.report` writes CSV, Markdown and a plot.
"""
from .measure import Row, Settings, measure
from .report import write_report
from .subjects import (PEERS, STAGE_ENDS, Subject, TimmStageEnds, Variant, backbone_subjects, build_variants,
                       config_subject)
from .timing import MEMORY_FORMATS, Stats, time_interleaved

__all__ = [
    'MEMORY_FORMATS', 'PEERS', 'STAGE_ENDS', 'Row', 'Settings', 'Stats', 'Subject', 'TimmStageEnds', 'Variant',
    'backbone_subjects', 'build_variants', 'config_subject', 'measure', 'time_interleaved', 'write_report'
]
