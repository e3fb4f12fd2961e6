"""Guest side helper (python3 stdlib + pyserial only; no trio, no host code)."""
