"""From a trained model to a deployed one: whole-model fusion (:mod:`.fuse`), the deploy config
(:mod:`.config`), deploy checkpoints (:mod:`.checkpoint`), output comparison (:mod:`.verify`) and
ONNX export checked with onnxruntime (:mod:`.onnx`, imported on its own: it needs only torch, but
its comparison needs onnxruntime) with the backbone padded for onnxruntime's blocked CPU layout
(:mod:`.nchwc`)."""
from .checkpoint import (DEPLOY_CONFIG_NAME, WeightsMismatchError, atomic_write, build_cpu_model,
                         checkpoint_weights, deploy_checkpoint_path, deploy_state_dict, is_deploy_checkpoint,
                         load_fused_model, load_weights, read_checkpoint, save_deploy_checkpoint,
                         source_weights, weights_mismatch, write_deploy_config)
from .config import deploy_source_config, is_distiller, to_deploy_config
from .fuse import FusedWeights, count_reparam_leaves, fuse_model, fuse_weights
from .verify import OutputDiff, branch_by_branch, compare_outputs, flatten_outputs, format_diffs, output_names

__all__ = [
    'DEPLOY_CONFIG_NAME', 'FusedWeights', 'OutputDiff', 'WeightsMismatchError', 'atomic_write',
    'branch_by_branch', 'build_cpu_model', 'checkpoint_weights', 'compare_outputs', 'count_reparam_leaves',
    'deploy_checkpoint_path', 'deploy_source_config', 'deploy_state_dict', 'flatten_outputs', 'format_diffs',
    'fuse_model', 'fuse_weights', 'is_deploy_checkpoint', 'is_distiller', 'load_fused_model', 'load_weights',
    'output_names', 'read_checkpoint', 'save_deploy_checkpoint', 'source_weights', 'to_deploy_config',
    'weights_mismatch', 'write_deploy_config'
]
