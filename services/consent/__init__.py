"""The consent service: grants, refusals, withdrawals, guardians, decisions, receipts."""
