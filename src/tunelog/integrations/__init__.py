"""tunelog inside other people's training scripts: `TunelogCallback` for a Hugging Face Trainer (or TRL)
script, `attach` (the environment the command trainer and the callback speak through) and `hf_names`
(Trainer's metric keys under tunelog's names, shared with the importer)."""
