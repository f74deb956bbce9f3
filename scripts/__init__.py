"""Operator tools (run as scripts); a package so the tests can import what they check."""
