"""mmengine's CheckpointHook, with checkpoints that survive a crash and say what they hold."""
import contextlib
import os
import os.path as osp
import shutil

from mmengine.dist import is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ...models.checkpoint import adn_backbone_meta, check_checkpoint_fits, first_nonfinite
from ...utils.fileio import (DirectoryLock, remove_stale_temporaries, replace_atomically,
                             temporary_path, write_text_atomically)
from .finite_loss_hook import TrainingDivergedError, divergence_advice


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full)."""


class _DeferredRemovals:
    """A file backend whose ``remove`` / ``rmtree`` wait until :meth:`run`."""

    def __init__(self, backend, written):
        self._backend = backend
        self._written = written
        self.pending = []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path):
        self.pending.append(('remove', path))

    def rmtree(self, path):
        self.pending.append(('rmtree', path))

    def run(self):
        for op, path in self.pending:
            if osp.abspath(path) not in self._written:  # never the file just written
                getattr(self._backend, op)(path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` whose files are never left half written.

    Takes every argument of ``CheckpointHook``. On a local disk:

    * every checkpoint (``iter_N.pth``, ``epoch_N.pth``, ``best_*.pth``) and
      ``last_checkpoint`` is written under a temporary name in the same directory, flushed
      to disk and renamed into place: a run killed while writing leaves the previous
      files as they were (and a ``.tmp-*`` file, removed when training starts again);
    * old checkpoints (``max_keep_ckpts``) and the previous ``best_*.pth`` are removed only
      after the new file is in place;
    * the ADN backbone's type and split are recorded in ``meta['adn_backbone']``, and a
      checkpoint loaded by the Runner (``load_from``, ``resume``) is checked against the
      model first (:func:`mmadn.models.check_checkpoint_fits`; a resumed
      checkpoint must fit key for key).

    Other storage backends get ``CheckpointHook``'s behaviour. ``tools/train.py`` (through
    :func:`mmadn.engine.launch.load_config`) uses this hook in place of a plain
    ``CheckpointHook``; a Runner built in Python gets it from
    ``default_hooks.checkpoint.type='AtomicCheckpointHook'``.
    """

    _atomic_active = False

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    @contextlib.contextmanager
    def _atomic(self, runner):
        """Within: the runner writes checkpoints atomically and this hook's removals wait
        until every write succeeded."""
        if self._atomic_active or not self._is_local():
            yield
            return
        original = runner.__dict__.get('save_checkpoint')
        inner = original or type(runner).save_checkpoint.__get__(runner)
        written = set()

        def save_checkpoint(out_dir, filename, *args, **kwargs):
            final = osp.join(out_dir, filename)
            bad = first_nonfinite(runner.model.state_dict())
            if bad is not None:
                raise TrainingDivergedError(
                    f'the weights are not finite at iteration {runner.iter + 1} ({bad}); '
                    f'{final} was not written, and {divergence_advice(runner)}')
            tmp = temporary_path(final)
            try:
                inner(out_dir, osp.basename(tmp), *args, **kwargs)
                if osp.isfile(tmp):  # only the main process writes (master_only)
                    replace_atomically(tmp, final)
                    written.add(osp.abspath(final))
            except OSError as err:
                raise self._write_error(final, tmp, err) from None

        backend = self.file_backend
        deferred = _DeferredRemovals(backend, written)
        runner.save_checkpoint = save_checkpoint
        self.file_backend, self._atomic_active = deferred, True
        try:
            yield
        finally:
            self.file_backend, self._atomic_active = backend, False
            if original is None:
                del runner.__dict__['save_checkpoint']
            else:
                runner.save_checkpoint = original
        deferred.run()  # reached only when every write above succeeded

    def _write_error(self, final: str, tmp: str, err: OSError) -> CheckpointWriteError:
        """Remove the partial file of a failed write; the error says what could not be
        written, the space it needs and which checkpoint is intact."""
        if osp.exists(tmp):
            os.remove(tmp)
        folder = osp.dirname(final) or '.'
        previous = getattr(self, '_intact_ckpt', None)
        if previous and osp.isfile(previous):
            need = f'{osp.getsize(previous) / 2**20:.1f} MiB (the size of {previous})'
            intact = f'{previous} is intact'
        else:
            need = 'the size of the weights and the optimizer state'
            intact = 'no checkpoint was written before'
        free = shutil.disk_usage(folder).free / 2**20
        error = CheckpointWriteError(
            f'could not write checkpoint {final}: {err.strerror or err} ({free:.1f} MiB free '
            f'in {folder}, a checkpoint needs about {need}); the partial file was removed and '
            f'{intact}')
        error.errno = err.errno
        return error

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            DirectoryLock(self.out_dir).acquire()  # held until the process ends
            removed = remove_stale_temporaries(self.out_dir)
            if removed:
                print_log(
                    f'removed {len(removed)} partial checkpoint file(s) of an '
                    f'interrupted write from {self.out_dir}: {removed}', logger='current')

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            # recorded before saving, so that the checkpoint holds the list after pruning
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        # recorded before saving too (the checkpoint names itself); undone if it fails
        self._intact_ckpt = getattr(self, 'last_ckpt', None)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            with self._atomic(runner):
                runner.save_checkpoint(self.out_dir, filename, self.file_client_args,
                                       save_optimizer=self.save_optimizer,
                                       save_param_scheduler=self.save_param_scheduler, meta=meta,
                                       by_epoch=self.by_epoch, backend_args=self.backend_args,
                                       **self.args)
                self._finish_step_save(runner, outdated)
        except BaseException:
            self._undo_step_records(runner, step, outdated)
            raise

    def _undo_step_records(self, runner, step, outdated) -> None:
        """A checkpoint that was not written: the records point at the previous one again,
        and the outdated one it would have pruned is kept."""
        self.last_ckpt = self._intact_ckpt
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        if self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step:
            self.keep_ckpt_ids.pop()
            if outdated is not None:
                self.keep_ckpt_ids.appendleft(outdated)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

    def _finish_step_save(self, runner, outdated) -> None:
        if is_main_process():
            write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
            if outdated is not None:  # only now that the new one is in place
                path = self.file_backend.join_path(self.out_dir,
                                                   self.filename_tmpl.format(outdated))
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
                elif self.file_backend.isdir(path):
                    self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # the parent removes the previous best file before writing the new one: here the
        # removal waits until the new best file is in place, and a best score whose file
        # could not be written (weights not finite, disk full) is not kept
        info = runner.message_hub.runtime_info
        saved = ({
            k: v
            for k, v in info.items() if k.startswith('best_')
        }, getattr(self, 'best_ckpt_path',
                   None), dict(getattr(self, 'best_ckpt_path_dict', None) or {}))
        self._intact_ckpt = getattr(self, 'last_ckpt', None)
        try:
            with self._atomic(runner):
                super()._save_best_checkpoint(runner, metrics)
        except BaseException:
            for key in [k for k in info if k.startswith('best_') and k not in saved[0]]:
                info.pop(key)
            for key, value in saved[0].items():
                runner.message_hub.update_info(key, value)
            self.best_ckpt_path = saved[1]
            if getattr(self, 'best_ckpt_path_dict', None) is not None:
                self.best_ckpt_path_dict = saved[2]
            raise

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = adn_backbone_meta(runner.model)
        if meta is not None:
            checkpoint.setdefault('meta', {})['adn_backbone'] = meta

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        filename = getattr(runner, '_load_from', None) or 'the loaded checkpoint'
        check_checkpoint_fits(runner.model, checkpoint, filename,
                              strict=bool(getattr(runner, '_resume', False)))
