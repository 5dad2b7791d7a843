"""`push_to_hub` for the package's trainers: our card, the files staged before they are sent, and offline runs that
stage what would be pushed instead of failing."""

from __future__ import annotations

import contextlib
from pathlib import Path

from transformers.utils import logging

from .push import HubPushResult, default_staging_dir, is_offline, push_model


logger = logging.get_logger(__name__)


class HubPublishingMixin:
    """
    Mixed into `DeRTaTrainer` and `SEASTrainer` (before the TRL trainer in the bases).

    - `push_to_hub()` saves the model, writes our card (`create_model_card`), stages exactly the files to upload in
      `<output_dir>-hub/` (weights or adapter, config, tokenizer, `README.md`, and the manifest `hub_upload.json`), then
      uploads them with [`~hf_safety.hub.push_staged`]. Offline (`HF_HUB_OFFLINE=1`) the staged folder is the result.
    - With `push_to_hub=True` offline, the repo is not created at init and checkpoints are not pushed during training.
    - The Hub token is kept out of `training_args.bin`.
    """

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        if not is_offline():
            return super().init_hf_repo(token=token, private=private)
        if self.is_world_process_zero():
            self.hub_model_id = self.args.hub_model_id or Path(self.args.output_dir).absolute().name
            self.push_in_progress = None
            logger.warning(
                f"Offline (HF_HUB_OFFLINE): the Hub repo {self.hub_model_id!r} is not created; push_to_hub() will "
                f"stage what would be pushed in {self._hub_staging_dir()}"
            )

    def _hub_staging_dir(self) -> Path:
        return default_staging_dir(self.args.output_dir)

    @contextlib.contextmanager
    def _hub_token_kept_off_disk(self):
        """`training_args.bin` pickles the arguments: the Hub token is left out of it (and restored for pushing)."""
        token, self.args.hub_token = self.args.hub_token, None
        try:
            yield
        finally:
            self.args.hub_token = token

    def _save(self, output_dir=None, state_dict=None):
        with self._hub_token_kept_off_disk():
            super()._save(output_dir, state_dict)

    def _push_from_checkpoint(self, checkpoint_folder):
        if is_offline():
            return
        with self._hub_token_kept_off_disk():
            super()._push_from_checkpoint(checkpoint_folder)

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ) -> HubPushResult | None:
        """
        Uploads the model (or LoRA adapter), its tokenizer and our model card to `args.hub_model_id`, as
        `Trainer.push_to_hub` does, through a staging folder `<output_dir>-hub/`. Offline, stops after staging.

        Args:
            commit_message: the commit message.
            blocking: kept for `Trainer.push_to_hub`'s signature; the upload always completes before returning.
            token: a Hub token (default: `args.hub_token`, else the `huggingface_hub` login or `HF_TOKEN`).
            revision: the branch to push to (default: `args.hub_revision`, else main).
            private: the repo's visibility when it is created (default: `args.hub_private_repo`).
            kwargs: passed to `create_model_card` (`model_name`, `dataset_name`, `tags`, ...).

        Returns:
            A [`~hf_safety.hub.HubPushResult`] on the main process (None on the others).
        """
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        model_name = kwargs.pop("model_name", None)
        if model_name is None:
            model_name = (self.args.hub_model_id or Path(self.args.output_dir).name).split("/")[-1]
        token = token if token is not None else self.args.hub_token
        private = private if private is not None else self.args.hub_private_repo
        if self.hub_model_id is None:
            self.init_hf_repo(token=token, private=private)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self.create_model_card(model_name=model_name, **kwargs)
        self._finish_current_push()
        return push_model(
            self.args.output_dir,
            self.hub_model_id,
            staging_dir=self._hub_staging_dir(),
            token=token,
            private=private,
            commit_message=commit_message,
            revision=revision if revision is not None else self.args.hub_revision,
        )
