"""Where peers run beyond the slot's loopback block: network namespaces (``netns``)."""
