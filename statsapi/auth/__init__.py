"""Who is calling: passwords, tokens, the cached revocation state and the guard that judges a request."""
