"""Shared core of flowfleet: keys, hashing, store, events, flow model, validation, engine, components."""
