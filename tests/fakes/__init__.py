"""Test doubles of external peers (Binance, PostgREST)."""
