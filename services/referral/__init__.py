"""The referral service: referrals, multi-party handovers, deadlines, disclosures, agency feed."""
