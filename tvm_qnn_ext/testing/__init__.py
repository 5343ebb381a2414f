"""Test support: batch compilation of many small cases, model builders and oracles."""
