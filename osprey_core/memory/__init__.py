"""Per-user persistent memory: plain files under OSPREY_HOME, locked and atomic."""
