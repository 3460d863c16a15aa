"""TC — transport termination cleanup (SPEC §1 area TC, §5 TC-01..TC-14): what must follow when a
transport dies — server-side unregister and listener notification, per-IP counters, client
reconnect, rejected and pending connections really released, no leaked sockets."""
