"""What a run leaves behind: all-or-nothing outputs (``atomic``), the trained networks
(``model_files``), the training curves and posterior snapshots (``history``) and the resume
backup (``backup``)."""
