"""Ketnoi's services: intake, consent, referral and projections, and the runtime they share."""
