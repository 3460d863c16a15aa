"""PL — per-host pool limits (SPEC §1 area PL, §5 PL-01..PL-16): client pools honour their per-host
limits, servers honour theirs."""
