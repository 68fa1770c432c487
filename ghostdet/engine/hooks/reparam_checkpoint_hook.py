"""A fused, deploy-ready checkpoint beside every checkpoint the runner saves."""
import copy
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.hooks import CheckpointHook, EMAHook, Hook
from mmengine.registry import HOOKS

from ...deploy import (DEPLOY_CONFIG_NAME, build_cpu_model, count_reparam_leaves, deploy_checkpoint_path,
                       deploy_source_config, fuse_weights, load_weights, save_deploy_checkpoint,
                       source_weights, to_deploy_config, weights_mismatch, write_deploy_config)

FileState = Optional[Tuple[int, int, int]]
Step = Tuple[Optional[int], Optional[int]]  # (epoch, iter) of the weights a checkpoint holds


def _file_state(path: str) -> FileState:
    """What changes when a file is (re)written: inode, size, modification time; None if absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _mb(path: str) -> float:
    return osp.getsize(path) / 2**20


@HOOKS.register_module()
class ReparamCheckpointHook(Hook):
    """Write ``<name>_deploy.pth`` (every re-parameterizable module fused) beside each checkpoint
    saved by ``CheckpointHook`` (by interval, last and ``save_best``), and ``deploy_config.py`` in the
    work dir, so that ``tools/test.py deploy_config.py epoch_12_deploy.pth`` evaluates the fused model.

    MMEngine has no after-save stage and does not tell hooks the file name, so the work is split:
    ``before_save_checkpoint`` loads ``checkpoint['state_dict']`` (EMA weights when EMAHook ran
    first) into a private CPU copy of the model and notes the checkpoint paths the message hub names
    (``last_ckpt``, ``best_ckpt*``); after the stage that saved (``after_train_iter``/``_epoch``,
    ``after_val_epoch``), every one of those files that was (re)written gets its deploy file.
    Hence priority ``LOWEST``: after EMAHook's swap and after CheckpointHook's write.

    The live model and the checkpoint dict are only read (on CPU, ``checkpoint['state_dict']`` holds
    the live parameters themselves), so resuming is unaffected. Files are written atomically, on rank 0.
    Deploy files of checkpoints that CheckpointHook later removes (``max_keep_ckpts``, an older best)
    are removed with them.

    Each deploy file is written once per training step: after a new best checkpoint, CheckpointHook
    saves the last regular checkpoint a second time (same weights, to record the new best in its
    message hub), and that re-save is recognised by the ``epoch``/``iter`` of its ``meta``.
    """

    priority = 'LOWEST'

    def __init__(self) -> None:
        self._template: Optional[nn.Module] = None  # unfused deploy-source model, weights irrelevant
        self._deploy_cfg: Optional[Config] = None
        self._pending: Optional[Tuple[nn.Module, dict]] = None  # weights + meta of the last save
        self._file_states: Dict[str, FileState] = {}  # named checkpoints before the save
        self._written: Dict[str, Tuple[str, Step]] = {}  # checkpoint -> its deploy file, weights' step
        self._config_written = False
        self._warned_unseen = False

    def before_run(self, runner) -> None:
        self._check_order(runner)
        if not is_main_process():
            return
        if not isinstance(runner.cfg.get('model'), dict):
            runner.logger.warning('ReparamCheckpointHook needs the model as a config (Runner.from_cfg); '
                                  'no deploy checkpoints will be written.')
            return
        template = build_cpu_model(deploy_source_config(runner.cfg))
        if count_reparam_leaves(template) == 0:
            runner.logger.warning(
                'ReparamCheckpointHook: the model has nothing to re-parameterize (no module with '
                'switch_to_deploy()); no deploy checkpoints will be written. Remove the hook from '
                'custom_hooks to silence this.')
            return
        self._deploy_cfg = to_deploy_config(runner.cfg)
        self._check_deploy_config(template)
        self._template = template

    def _check_order(self, runner) -> None:
        hooks: List[Hook] = runner.hooks
        later = [h for h in hooks[hooks.index(self) + 1:] if isinstance(h, (EMAHook, CheckpointHook))]
        if later:
            raise ValueError(
                f'ReparamCheckpointHook (priority {self.priority}) must run after '
                f'{", ".join(type(h).__name__ for h in later)}: it fuses the weights EMAHook puts into '
                'the checkpoint and writes beside the file CheckpointHook saved. Leave its priority '
                'at the default (LOWEST).')

    def _check_deploy_config(self, template: nn.Module) -> None:
        """Fail at the start, not at the first save, if the deploy config cannot load the fused weights
        (e.g. a re-parameterizable class whose config takes no ``deploy`` argument)."""
        fused = fuse_weights(copy.deepcopy(template))
        problems = weights_mismatch(build_cpu_model(self._deploy_cfg.model), fused.state_dict)
        if problems:
            raise ValueError('The deploy config (deploy=True wherever a model class accepts it) does not '
                             'build the fused model:\n  ' + '\n  '.join(problems))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._template is None:
            return
        model = copy.deepcopy(self._template)
        weights = source_weights(checkpoint['state_dict'], runner.cfg)
        load_weights(model, weights, 'The checkpoint being saved')
        self._pending = (model, copy.deepcopy(checkpoint.get('meta', {})))
        for path in self._named_checkpoints(runner):
            self._file_states.setdefault(path, _file_state(path))

    @staticmethod
    def _named_checkpoints(runner) -> List[str]:
        """Checkpoint paths CheckpointHook records before it saves (regular and best ones)."""
        return [path for key, path in runner.message_hub.runtime_info.items()
                if (key == 'last_ckpt' or key.startswith('best_ckpt')) and isinstance(path, str)]

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._write_pending(runner)

    def after_train_epoch(self, runner) -> None:
        self._write_pending(runner)

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._write_pending(runner)

    def _write_pending(self, runner) -> None:
        if self._pending is None:
            return
        (model, meta), states = self._pending, self._file_states
        self._pending, self._file_states = None, {}
        self._remove_orphans(runner)
        saved = [path for path, before in states.items() if _file_state(path) not in (None, before)]
        if not saved:
            if not self._warned_unseen:
                runner.logger.warning('ReparamCheckpointHook: a checkpoint was saved but no local file '
                                      f'{list(states)} changed (remote out_dir?); no deploy file written.')
                self._warned_unseen = True
            return
        step: Step = (meta.get('epoch'), meta.get('iter'))
        saved = [path for path in saved if not self._is_current(path, step)]
        if not saved:  # only re-saves of checkpoints whose deploy file holds these weights already
            return
        fused = fuse_weights(model)
        if not self._config_written:
            write_deploy_config(osp.join(runner.work_dir, DEPLOY_CONFIG_NAME), self._deploy_cfg)
            self._config_written = True
        for path in saved:
            deploy_path = deploy_checkpoint_path(path)
            save_deploy_checkpoint(deploy_path, fused, meta, osp.basename(path), self._deploy_cfg)
            self._written[path] = (deploy_path, step)
            runner.logger.info(
                f'Deploy checkpoint {osp.basename(deploy_path)}: {fused.num_fused} blocks fused in '
                f'{fused.seconds:.2f} s, {fused.num_params / 1e6:.3f} M parameters, '
                f'{_mb(deploy_path):.2f} MB (training checkpoint {_mb(path):.2f} MB)')

    def _is_current(self, path: str, step: Step) -> bool:
        """Whether ``path``'s deploy file, written by this hook, holds the weights of ``step``."""
        deploy_path, written_step = self._written.get(path, (None, None))
        return None not in step and written_step == step and osp.isfile(deploy_path)

    def _remove_orphans(self, runner) -> None:
        """Remove the deploy files of checkpoints CheckpointHook has deleted."""
        for path, (deploy_path, _) in list(self._written.items()):
            if not osp.exists(path):
                if osp.exists(deploy_path):
                    os.remove(deploy_path)
                    runner.logger.info(f'Removed {osp.basename(deploy_path)} with its checkpoint')
                del self._written[path]
