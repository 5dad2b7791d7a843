"""Training scripts behind the recipes and the `hf-safety` CLI: each has `make_parser()` and `main(...)`."""


def end_run(trainer) -> None:
    """
    Ends a launched run on every process together: waits for all of them (the main process may still be writing its
    reports), then destroys the process group ([`~transformers.Trainer.end`]). A process that tears its group down
    while another still uses it, or exits with the group alive, can abort at interpreter exit (gloo: "terminate called
    without an active exception") after a run that succeeded. Nothing that communicates may follow.
    """
    trainer.accelerator.wait_for_everyone()
    trainer.end()
