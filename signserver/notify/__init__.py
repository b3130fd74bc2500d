"""E-mail through a transactional outbox: queued with the event, sent in the background."""
