"""Unit tier: plain rayrec logic, checked against brute force, never starting Ray."""
