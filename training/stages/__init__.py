"""One module per training stage; each exposes ``run(cfg, ranks, device) -> metrics``."""
