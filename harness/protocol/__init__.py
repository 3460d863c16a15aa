"""Wire protocols as data: message names, codes and encodings that peers, probes and cases share.

Nothing here belongs to a peer under test: the reference server and client, the raw probes and
the suites all read the protocol from here, so a case never takes its constants from the
implementation it judges.
"""
