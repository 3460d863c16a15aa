"""The docker runtime's engine, images and setup steps (``connformance setup --docker``)."""
