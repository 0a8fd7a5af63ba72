"""The Redis queue protocol: key names, job records, Lua scripts. No torch here."""
