"""Usage accounting: the ledger (one record per request), budgets, and the usage report."""
