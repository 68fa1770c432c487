"""Convert GhostNetV3 weights from the authors' checkpoint or timm into ghostdet's backbone layout.

Both sources share one key layout (``conv_stem``, ``blocks.<group>.<j>.ghost1.primary_rpr_conv.<i>...``);
the authors name branch BNs ``bn``, timm ``bn1``, and timm's fused form uses ``primary_conv.0`` /
``cheap_operation.0`` / ``conv_dw``. ghostdet groups the ten ``blocks`` into five stages that end at
strides 2/4/8/16/32, so group indices are remapped (see ``STAGE_OF_GROUP``).
"""
import re
from typing import Dict, Optional, Tuple

from torch import Tensor

# The authors' ten ``blocks`` groups -> (ghostdet stage, first block index in that stage); group 9 is the
# final 1×1 ConvBnAct (ghostdet ``last_conv``).
STAGE_OF_GROUP: Dict[int, Tuple[int, int]] = {
    0: (0, 0), 1: (1, 0), 2: (1, 1), 3: (2, 0), 4: (2, 1), 5: (3, 0), 6: (3, 1), 7: (4, 0), 8: (4, 1)}

_RENAMES = (  # applied in order to the key tail after ``blocks.<g>.<j>.``
    (r'(ghost[12])\.primary_rpr_conv\.(\d+)\.bn1?\.', r'\1.primary.branches.\2.bn.'),
    (r'(ghost[12])\.primary_rpr_conv\.(\d+)\.conv\.', r'\1.primary.branches.\2.conv.'),
    (r'(ghost[12])\.cheap_rpr_conv\.(\d+)\.bn1?\.', r'\1.cheap.branches.\2.bn.'),
    (r'(ghost[12])\.cheap_rpr_conv\.(\d+)\.conv\.', r'\1.cheap.branches.\2.conv.'),
    (r'(ghost[12])\.(primary|cheap)_rpr_scale\.bn1?\.', r'\1.\2.scale.bn.'),
    (r'(ghost[12])\.(primary|cheap)_rpr_scale\.conv\.', r'\1.\2.scale.conv.'),
    (r'(ghost[12])\.(primary|cheap)_rpr_skip\.', r'\1.\2.identity.'),
    (r'(ghost[12])\.primary_conv\.0\.', r'\1.primary.fused.'),
    (r'(ghost[12])\.cheap_operation\.0\.', r'\1.cheap.fused.'),
    (r'(ghost[12])\.short_conv\.', r'\1.dfc.'),
    (r'^dw_rpr_conv\.(\d+)\.bn1?\.', r'conv_dw.branches.\1.bn.'),
    (r'^dw_rpr_conv\.(\d+)\.conv\.', r'conv_dw.branches.\1.conv.'),
    (r'^dw_rpr_scale\.bn1?\.', r'conv_dw.scale.bn.'),
    (r'^dw_rpr_scale\.conv\.', r'conv_dw.scale.conv.'),
    (r'^conv_dw\.(weight|bias)$', r'conv_dw.fused.\1'),
)
_DROPPED = re.compile(r'^(conv_head|classifier)\.|total_ops|total_params')


class UnknownCheckpointLayout(ValueError):
    """Raised for a state dict that is neither ghostdet's, the authors', nor timm's GhostNetV3."""


def extract_state_dict(checkpoint: dict, prefer_ema: bool = True) -> Dict[str, Tensor]:
    """Unwrap the tensors of a checkpoint: plain, ``state_dict``, ``state_dict_ema`` or ``model``."""
    for key in (('state_dict_ema', 'state_dict', 'model') if prefer_ema else
                ('state_dict', 'state_dict_ema', 'model')):
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {re.sub(r'^module\.', '', k): v for k, v in checkpoint.items() if isinstance(v, Tensor)}
    if not state:
        raise UnknownCheckpointLayout('The checkpoint holds no tensors (expected a state dict, or a '
                                      "dict with 'state_dict' / 'state_dict_ema' / 'model').")
    return state


def detect_layout(state: Dict[str, Tensor]) -> str:
    """'ghostdet', 'ghostdet-detector' (backbone inside a detector) or 'reference' (authors/timm)."""
    if 'stem.0.weight' in state and any(k.startswith('stages.') for k in state):
        return 'ghostdet'
    if 'backbone.stem.0.weight' in state:
        return 'ghostdet-detector'
    if 'conv_stem.weight' in state and any(k.startswith('blocks.') for k in state):
        return 'reference'
    sample = ', '.join(list(state)[:5])
    raise UnknownCheckpointLayout(
        f'Unrecognised checkpoint layout (first keys: {sample}). Expected the authors\' GhostNetV3 '
        "(conv_stem.*, blocks.*), timm's ghostnetv3_* state dict, or a ghostdet backbone/detector.")


def _convert_reference_key(key: str) -> Optional[str]:
    """Map one authors'/timm key to ghostdet's; None for classifier-only keys."""
    if _DROPPED.search(key):
        return None
    if key.startswith('conv_stem.'):
        return 'stem.0.' + key[len('conv_stem.'):]
    if key.startswith('bn1.'):
        return 'stem.1.' + key[len('bn1.'):]
    match = re.match(r'^blocks\.(\d+)\.(\d+)\.(.*)$', key)
    if not match:
        raise UnknownCheckpointLayout(f'Unexpected key in a GhostNetV3 checkpoint: {key}')
    group, index, tail = int(match[1]), int(match[2]), match[3]
    if group == 9:
        return 'last_conv.' + {'conv': '0', 'bn1': '1', 'bn': '1'}[tail.split('.')[0]] + \
            tail[tail.index('.'):]
    stage, first = STAGE_OF_GROUP[group]
    for pattern, repl in _RENAMES:
        tail = re.sub(pattern, repl, tail)
    return f'stages.{stage}.{first + index}.{tail}'


def convert_to_ghostdet(checkpoint: dict, prefer_ema: bool = True,
                        keep_last_conv: bool = True) -> Dict[str, Tensor]:
    """Return a ghostdet ``GhostNetV3`` backbone state dict from any supported checkpoint."""
    state = extract_state_dict(checkpoint, prefer_ema)
    layout = detect_layout(state)
    if layout == 'ghostdet':
        converted = dict(state)
    elif layout == 'ghostdet-detector':
        converted = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
    else:
        converted = {}
        for key, value in state.items():
            new_key = _convert_reference_key(key)
            if new_key is not None:
                converted[new_key] = value
    if not keep_last_conv:
        converted = {k: v for k, v in converted.items() if not k.startswith('last_conv.')}
    return converted
