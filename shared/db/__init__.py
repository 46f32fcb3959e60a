"""Database models, engines and sessions."""
