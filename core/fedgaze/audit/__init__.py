"""Audits of privacy claims: ledger verification, recomputed epsilon, reports, canary audits."""
