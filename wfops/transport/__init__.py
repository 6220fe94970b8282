"""Transport: one connection per command (direct or through a warm keeper), one exec, rendered scripts."""
