"""What the engine keeps about users: the event store, pseudonyms, and the profiles built from
the events."""
