"""Helpers the tests share: CLI runs, throwaway distributions, sandbox and broker runs."""
