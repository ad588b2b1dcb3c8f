"""Training and fine-tuning of conditional UNets with GP noise (``warpdiff train``)."""
