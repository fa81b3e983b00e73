"""Small helpers with no tunelog concern of their own: URL redaction, the owner of a process, quieting
library noise, and the one guarded YAML reader."""
