"""The transaction coordinator: transactional ids, producer epochs and the two-phase end of
transactions, all persisted as records of ``__transaction_state``."""
