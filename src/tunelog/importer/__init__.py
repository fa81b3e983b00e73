"""`import`: run folders people already have on disk turned into MLflow runs, once.

One small reader per ecosystem behind one protocol (`base.Reader`: `detect(folder)`, `read(folder)
-> Reading`), chosen by what the folder holds, several per folder: kohya sd-scripts (`kohya`),
Hugging Face Trainer / TRL (`hf_trainer`), PyTorch Lightning (`lightning`), TensorBoard events
(`tensorboard`), the user's eval files (`evalfiles`), and a config + text log (`generic`). `tree`
merges their readings and writes each folder as one finished run. docs/stages-changelog-import.md
says how to add a reader.
"""

from ..records.base import Folder, Reader, ReadError, Reading
from .tree import ImportReport, import_tree, readers

__all__ = ["Folder", "ImportReport", "ReadError", "Reader", "Reading", "import_tree", "readers"]
