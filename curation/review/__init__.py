"""Review's data logic: queues and claims, the journal-first write path, sessions, import/export, stats, the card."""
