"""Training logs: metric lines parsed out of text (`parse`) and the one judge of how a run ended
(`judge`), asked alike by the command trainer, every import reader and the callback."""

from .judge import OOM_WORDS, Evidence, judge
from .parse import LogParser, ParsedLog

__all__ = ["OOM_WORDS", "Evidence", "LogParser", "ParsedLog", "judge"]
