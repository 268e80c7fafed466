"""Logbook search (ARIEL): ingest electronic logbooks, search them by keyword, meaning or
both, and answer questions from them with citations that are checked."""
