"""Business rules and queries. Functions take a session and keyword arguments, never
read the Flask request, and never commit: the caller's unit of work does."""
