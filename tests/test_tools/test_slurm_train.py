"""tools/slurm_train.sh: the srun command it starts (no SLURM here: a stand-in ``srun`` records it)."""
import os
import subprocess

from ghostdet.testing import REPO


def test_one_task_per_gpu_over_several_nodes(tmp_path):
    record = tmp_path / 'srun_args'
    srun = tmp_path / 'bin' / 'srun'
    srun.parent.mkdir()
    srun.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    srun.chmod(0o755)
    env = dict(os.environ, PATH=f'{srun.parent}:{os.environ["PATH"]}', GPUS='16', SRUN_ARGS='--qos=high --time=2:00:00')
    subprocess.run(['bash', os.path.join(REPO, 'tools', 'slurm_train.sh'), 'gpu', 'gnv3', 'configs/x.py', 'work',
                    '--amp', '--cfg-options', 'sync_bn=torch'], env=env, check=True)
    args = record.read_text().splitlines()
    assert args[:7] == ['--partition=gpu', '--job-name=gnv3', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
                        '--cpus-per-task=5', '--kill-on-bad-exit=1']
    assert args[7:9] == ['--qos=high', '--time=2:00:00']
    assert args[10:] == ['-u', os.path.join(REPO, 'tools', 'train.py'), 'configs/x.py', '--work-dir=work',
                         '--launcher=slurm', '--amp', '--cfg-options', 'sync_bn=torch']


def test_usage_without_enough_arguments():
    result = subprocess.run(['bash', os.path.join(REPO, 'tools', 'slurm_train.sh'), 'gpu'], capture_output=True,
                            text=True)
    assert result.returncode == 2 and 'usage:' in result.stderr
