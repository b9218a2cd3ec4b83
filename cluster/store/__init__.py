"""Everything that touches Redis: keys, connections, version blobs, release records, Lua scripts, change
events, canary records, gc, audit and the fleet view. The only part of `cluster` that imports redis."""
