"""Accounts: sign-in, API tokens and demo users (SSO comes later)."""
