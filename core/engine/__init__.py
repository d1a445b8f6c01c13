"""The worker and the loops that keep tasks safe: slots and the message source, leases and the
fenced outcome, group commit, the relay, the reaper and the reconciler, worker presence."""
